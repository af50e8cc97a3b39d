"""Tests for ai00_trio.tokenizer against the TRIE_TOKENIZER reference vectors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ai00_trio.tokenizer import (
    ByteTokenizer,
    IncrementalDecoder,
    Tokenizer,
    VocabFormatError,
    WorldTokenizer,
    load_tokenizer,
    read_vocab_file,
)
from ai00_trio.tokenizer.utf8_tail import incomplete_tail_length

DATA_DIR = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parent.parent
VOCAB_PATH = REPO_ROOT / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"
VECTORS: dict[str, Any] = json.loads(
    (DATA_DIR / "tokenizer-vectors.json").read_text(encoding="utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]
DECODE_CASES: list[dict[str, Any]] = VECTORS["decode_cases"]
MULTIBYTE_CASES = [c for c in CASES if "text" in c and not c["text"].isascii()]
REPLACEMENT = "\ufffd"


def case_input(case: dict[str, Any]) -> bytes:
    """The bytes a vector case encodes."""
    if "text" in case:
        return case["text"].encode("utf-8")
    return bytes.fromhex(case["bytes_hex"])


def naive_greedy_encode(table: tuple[bytes, ...], data: bytes) -> list[int]:
    """Slow, obviously-correct longest match: try every length from the longest down."""
    id_by_token = {token: token_id for token_id, token in enumerate(table) if token}
    longest = max(len(token) for token in table)
    ids: list[int] = []
    position = 0
    while position < len(data):
        for length in range(min(longest, len(data) - position), 0, -1):
            token_id = id_by_token.get(data[position : position + length])
            if token_id is not None:
                ids.append(token_id)
                position += length
                break
        else:  # pragma: no cover - every single byte is a token
            raise AssertionError(f"no token at {position}")
    return ids


@pytest.fixture(scope="module")
def world() -> WorldTokenizer:
    return WorldTokenizer(VOCAB_PATH)


# --- vocabulary ---------------------------------------------------------------


def test_vectors_file_is_the_expected_set() -> None:
    assert len(CASES) == 33
    assert len(DECODE_CASES) >= 1
    assert len(MULTIBYTE_CASES) >= 10


def test_vocab_shape(world: WorldTokenizer) -> None:
    assert world.vocab_size == 65536
    assert world.end_of_text_id == 0
    table = world.all_token_bytes
    assert len(table) == 65536
    assert table[0] == b"" and world.token_bytes(0) == b""
    for value in range(256):
        assert world.token_bytes(value + 1) == bytes([value])
    assert sum(1 for token in table if token) == 65529
    assert all(token == b"" for token in table[65530:])
    assert len(set(t for t in table if t)) == 65529


def test_token_bytes_match_vectors(world: WorldTokenizer) -> None:
    checked = 0
    for case in CASES:
        for token_id, hex_bytes in zip(case["ids"], case.get("token_bytes_hex", [])):
            assert world.token_bytes(token_id) == bytes.fromhex(hex_bytes), case["id"]
            checked += 1
    assert checked > 100


def test_token_bytes_rejects_out_of_range(world: WorldTokenizer) -> None:
    for bad in (-1, 65536, 10**9):
        with pytest.raises(ValueError):
            world.token_bytes(bad)
        with pytest.raises(ValueError):
            world.decode([5, bad])


def test_vocab_reader_handles_lf_and_checks_lengths(tmp_path: Path) -> None:
    lines = [f"{value + 1} {bytes([value])!r} 1" for value in range(256)]
    lines += ["257 'ab' 2", "258 '你好' 6", "259 b'\\xe4\\xbd' 2", '260 "it\'s" 4']
    lf_file = tmp_path / "lf.txt"
    lf_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = read_vocab_file(lf_file, vocab_size=300)
    assert table[257] == b"ab" and table[258] == "你好".encode() and table[259] == b"\xe4\xbd"
    assert table[260] == b"it's"
    tokenizer = WorldTokenizer(lf_file, vocab_size=300)
    assert tokenizer.encode("ab你好it's") == [257, 258, 260]

    bad_length = tmp_path / "bad.txt"
    bad_length.write_text("\n".join(lines + ["261 'abc' 4"]), encoding="utf-8")
    with pytest.raises(VocabFormatError):
        read_vocab_file(bad_length, vocab_size=300)
    duplicate = tmp_path / "dup.txt"
    duplicate.write_text("\n".join(lines + ["261 'ab' 2"]), encoding="utf-8")
    with pytest.raises(VocabFormatError):
        read_vocab_file(duplicate, vocab_size=300)


# --- encode / decode ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_encode_matches_vectors(world: WorldTokenizer, case: dict[str, Any]) -> None:
    data = case_input(case)
    assert world.encode(data) == case["ids"]
    if "text" in case:
        assert world.encode(case["text"]) == case["ids"]
    assert len(case["ids"]) == case["n_tokens"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_decode_round_trips(world: WorldTokenizer, case: dict[str, Any]) -> None:
    decoded = world.decode(case["ids"])
    assert decoded == case_input(case)
    if case["decode"] is not None:
        assert decoded.decode("utf-8") == case["decode"]


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: str(c["ids"][:3]))
def test_decode_cases(world: WorldTokenizer, case: dict[str, Any]) -> None:
    assert world.decode(case["ids"]) == bytes.fromhex(case["bytes_hex"])


def test_encode_matches_naive_longest_match_on_random_text(world: WorldTokenizer) -> None:
    rng = random.Random(1234)
    pieces = [c["text"] for c in CASES if "text" in c]
    alphabet = " \n\tabcdefgxyzABC0123_=-.,:;()[]{}'\"你好世界é😀\u200d"
    for _ in range(40):
        text = "".join(
            rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet)
            for _ in range(rng.randint(1, 60))
        )
        data = text.encode("utf-8")
        assert world.encode(data) == naive_greedy_encode(world.all_token_bytes, data)
    random_bytes = bytes(rng.getrandbits(8) for _ in range(2000))
    assert world.encode(random_bytes) == naive_greedy_encode(world.all_token_bytes, random_bytes)
    assert world.decode(world.encode(random_bytes)) == random_bytes


def test_encode_accepts_bytes_like(world: WorldTokenizer) -> None:
    expected = world.encode(b"Hello, world!")
    assert world.encode(bytearray(b"Hello, world!")) == expected
    assert world.encode(memoryview(b"Hello, world!")) == expected


# --- incremental decoder ------------------------------------------------------


@pytest.mark.parametrize("case", MULTIBYTE_CASES, ids=[c["id"] for c in MULTIBYTE_CASES])
def test_incremental_one_id_at_a_time(world: WorldTokenizer, case: dict[str, Any]) -> None:
    decoder = world.incremental_decoder()
    pieces = [decoder.feed([token_id]) for token_id in case["ids"]]
    pieces.append(decoder.flush())
    assert all(REPLACEMENT not in piece for piece in pieces), pieces
    assert "".join(pieces) == case["text"]


def test_incremental_holds_back_split_character(world: WorldTokenizer) -> None:
    # decode_cases: "你好😀" as [你, 好, f0 9f, 98, 80]; then 好 again as [e5 a5, bd].
    assert world.token_bytes(3319) == b"\xf0\x9f"
    assert world.token_bytes(3067) == b"\xe5\xa5" and world.token_bytes(190) == b"\xbd"
    decoder = IncrementalDecoder(world)
    assert decoder.feed([10464, 11685]) == "你好"
    assert decoder.feed([3319]) == ""
    assert decoder.pending_bytes == b"\xf0\x9f"
    assert decoder.feed([153]) == ""
    assert decoder.feed(129) == "😀"
    assert decoder.feed([3067]) == ""
    assert decoder.feed([190, 34]) == "好!"
    assert decoder.flush() == ""


def test_flush_on_truncated_input(world: WorldTokenizer) -> None:
    truncated = next(c for c in CASES if c["id"] == "valid_then_truncated")
    decoder = world.incremental_decoder()
    text = "".join(decoder.feed([token_id]) for token_id in truncated["ids"])
    assert text == "你"
    assert decoder.flush() == REPLACEMENT
    assert decoder.flush() == ""  # flush resets
    assert decoder.feed(world.encode("ok")) == "ok"


@pytest.mark.parametrize(
    ("data", "expected_now"),
    [
        (b"\xff", REPLACEMENT),  # never valid
        (b"\x80", REPLACEMENT),  # lone continuation
        (b"\xc0", REPLACEMENT),  # overlong lead
        (b"\xed\xa0", REPLACEMENT * 2),  # surrogate: can never complete
        (b"\xe0\x80", REPLACEMENT * 2),  # overlong 3-byte
        (b"\xf4\x90", REPLACEMENT * 2),  # above U+10FFFF
        (b"a\xf5b", f"a{REPLACEMENT}b"),
    ],
)
def test_never_holds_back_impossible_bytes(data: bytes, expected_now: str) -> None:
    decoder = ByteTokenizer().incremental_decoder()
    assert decoder.feed(list(data)) == expected_now
    assert decoder.pending_bytes == b""
    assert decoder.flush() == ""


def test_incomplete_tail_length() -> None:
    assert incomplete_tail_length(b"") == 0
    assert incomplete_tail_length(b"abc") == 0
    assert incomplete_tail_length("你".encode()) == 0
    assert incomplete_tail_length(b"a\xe4") == 1
    assert incomplete_tail_length(b"a\xe4\xbd") == 2
    assert incomplete_tail_length(b"\xf0\x9f\x98") == 3
    assert incomplete_tail_length(b"\xf0\x9f\x98\x80") == 0
    assert incomplete_tail_length(b"\x9f\x98") == 0
    assert incomplete_tail_length(b"\xed\x9f") == 2
    assert incomplete_tail_length(b"\xed\xa0") == 0


def test_incremental_matches_whole_decode_on_random_bytes() -> None:
    """Any split of any bytes streams to the same text as one lenient decode."""
    rng = random.Random(99)
    samples = [s.encode() for s in ("你好", "😀👍🏽", "é", "a")]
    for _ in range(300):
        data = b"".join(
            rng.choice(samples) if rng.random() < 0.5 else bytes([rng.getrandbits(8)])
            for _ in range(rng.randint(0, 12))
        )
        decoder = ByteTokenizer().incremental_decoder()
        out: list[str] = []
        position = 0
        while position < len(data):
            step = rng.randint(1, 4)
            out.append(decoder.feed(list(data[position : position + step])))
            position += step
        out.append(decoder.flush())
        assert "".join(out) == data.decode("utf-8", errors="replace"), data


# --- byte tokenizer and factory -----------------------------------------------


def test_byte_tokenizer_round_trip() -> None:
    tokenizer = ByteTokenizer()
    assert tokenizer.vocab_size == 256
    assert tokenizer.end_of_text_id is None
    text = "Hi 你好 😀\n"
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text.encode("utf-8")
    assert tokenizer.encode(b"\x00\xff") == [0, 255]
    assert tokenizer.token_bytes(65) == b"A"
    assert tokenizer.all_token_bytes[255] == b"\xff" and len(tokenizer.all_token_bytes) == 256
    with pytest.raises(ValueError):
        tokenizer.decode([256])
    with pytest.raises(ValueError):
        tokenizer.token_bytes(-1)
    decoder = tokenizer.incremental_decoder()
    assert "".join(decoder.feed([i]) for i in ids) + decoder.flush() == text


def test_load_tokenizer() -> None:
    world = load_tokenizer("world", str(VOCAB_PATH))
    assert isinstance(world, WorldTokenizer) and isinstance(world, Tokenizer)
    assert world.encode("Hello, world!") == CASES[0]["ids"]
    assert isinstance(load_tokenizer("world", None), WorldTokenizer)
    assert isinstance(load_tokenizer("bytes", None), ByteTokenizer)
    with pytest.raises(ValueError):
        load_tokenizer("gpt2", None)
