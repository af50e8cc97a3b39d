"""AI00's JSON vocabulary (`{"id": "text" | [bytes]}`) reads as the text World vocab does."""
from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest

from ai00_trio.tokenizer import VocabFormatError, WorldTokenizer, load_tokenizer, read_vocab_file

ROOT = Path(__file__).resolve().parents[1]
VOCAB_TXT = ROOT / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"
CASES = json.loads((ROOT / "tests" / "data" / "tokenizer-vectors.json").read_text(encoding="utf-8"))["cases"]


def txt_to_json(txt: Path, out: Path) -> Path:
    """The JSON as AI00 makes it from the text file: str literals stay text, bytes literals
    become lists of byte values."""
    entries = {}
    for line in txt.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        value = ast.literal_eval(line[line.index(" "):line.rindex(" ")].strip())
        entries[line[:line.index(" ")]] = value if isinstance(value, str) else list(value)
    out.write_text(json.dumps(entries, indent=4), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def json_vocab(tmp_path_factory) -> Path:
    return txt_to_json(VOCAB_TXT, tmp_path_factory.mktemp("vocab") / "rwkv_vocab_v20230424.json")


def test_json_vocab_has_the_text_vocabs_tokens(json_vocab):
    table = read_vocab_file(json_vocab)
    assert table == read_vocab_file(VOCAB_TXT)
    assert sum(1 for token in table if token) == 65529
    assert any(isinstance(v, list) for v in json.loads(json_vocab.read_text()).values())  # bytes entries seen


def test_json_vocab_tokenizes_as_the_text_vocab(json_vocab):
    from_json, from_txt = load_tokenizer("world", json_vocab), WorldTokenizer(VOCAB_TXT)
    rng = random.Random(7)
    texts = [c["text"].encode() if "text" in c else bytes.fromhex(c["bytes_hex"]) for c in CASES]
    texts += [bytes(rng.randrange(256) for _ in range(200)) for _ in range(20)]
    texts += ["Hello, world! 你好，世界。 🌍 \n\n\tcode = f(x) ** 2".encode()]
    for data in texts:
        ids = from_txt.encode(data)
        assert from_json.encode(data) == ids
        assert from_json.decode(ids) == data


@pytest.mark.parametrize("text, problem", [
    ("[1, 2]", "object"),
    ("{\"1\": \"a\", \"x\": \"b\"}", "decimal"),
    ("{\"1\": 5}", "string or a list"),
    ("{\"1\": [300]}", "string or a list"),
    ("{\"0\": \"a\"}", "out of range"),
    ("{\"1\": \"a\", \"2\": [97]}", "duplicate"),
    ("{\"1\": \"\\ud800\"}", "Unicode"),
    ("{\"1\": ", "not a JSON"),
])
def test_bad_json_vocab_is_named(tmp_path, text, problem):
    path = tmp_path / "v.json"
    path.write_text(text)
    with pytest.raises(VocabFormatError, match=problem):
        read_vocab_file(path, vocab_size=300)
