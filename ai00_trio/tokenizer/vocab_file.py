"""Parse an RWKV World vocabulary file into a table of token bytes: BlinkDL's text format
(`rwkv_vocab_v20230424.txt`) or AI00's / web-rwkv's JSON (`rwkv_vocab_v20230424.json`)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

WORLD_VOCAB_SIZE = 65536
"""Number of token ids in RWKV World models (0..65535)."""

END_OF_TEXT_ID = 0
"""Id 0 is end-of-text; it has no bytes and is not in the vocab file."""


class VocabFormatError(ValueError):
    """The vocab file is malformed (a text line not `<id> <literal> <length>`, a JSON entry
    not `"<id>": "text" | [bytes]`) or has bad ids or tokens."""


def _literal_bytes(literal: str) -> bytes:
    """Bytes of one Python str/bytes literal (str literals encode to UTF-8)."""
    quote = literal[:1]
    inner = literal[1:-1]
    if (
        quote in ("'", '"')
        and len(literal) >= 2
        and literal[-1] == quote
        and "\\" not in inner
        and quote not in inner
    ):
        # Fast path for the common plain literal: no escapes to interpret.
        return inner.encode("utf-8")
    value = ast.literal_eval(literal)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise VocabFormatError(f"literal is neither str nor bytes: {literal!r}")


def parse_vocab_line(line: str) -> tuple[int, bytes]:
    """Parse one line into (token id, token bytes), checking the stated length."""
    first_space = line.find(" ")
    last_space = line.rfind(" ")
    if first_space <= 0 or last_space <= first_space:
        raise VocabFormatError(f"malformed vocab line: {line!r}")
    try:
        token_id = int(line[:first_space])
        stated_length = int(line[last_space + 1 :])
        token = _literal_bytes(line[first_space + 1 : last_space])
    except (ValueError, SyntaxError) as exc:
        raise VocabFormatError(f"malformed vocab line: {line!r}") from exc
    if len(token) != stated_length:
        raise VocabFormatError(
            f"token {token_id}: stated length {stated_length}, got {len(token)} bytes"
        )
    return token_id, token


def read_vocab_file(
    path: str | Path, vocab_size: int = WORLD_VOCAB_SIZE
) -> list[bytes]:
    """Read the vocab file; return token bytes indexed by id (b"" for unused ids).

    A `.json` file is AI00's format, any other the text format (LF or CRLF line endings).
    Raises VocabFormatError on bad lines or entries, out-of-range or duplicate ids,
    duplicate token bytes, or a token for id 0.
    """
    if Path(path).suffix.lower() == ".json":
        return read_vocab_json(path, vocab_size)
    table = [b""] * vocab_size
    seen_tokens: set[bytes] = set()
    text = Path(path).read_text(encoding="utf-8")
    # Split on "\n" only: str.splitlines() would also break on characters such
    # as U+2028 that may legitimately appear inside a token literal.
    for line_number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            token_id, token = parse_vocab_line(line)
        except VocabFormatError as exc:
            raise VocabFormatError(f"{path}:{line_number}: {exc}") from None
        _place(table, seen_tokens, token_id, token, f"{path}:{line_number}")
    return table


def read_vocab_json(path: str | Path, vocab_size: int = WORLD_VOCAB_SIZE) -> list[bytes]:
    """AI00's vocab: one JSON object mapping each id (a decimal string) to the token's text,
    or to its bytes as a list of 0..255 where they are not UTF-8."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VocabFormatError(f"{path}: not a JSON vocabulary: {exc}") from None
    if not isinstance(entries, dict):
        raise VocabFormatError(f"{path}: expected an object of id: token")
    table = [b""] * vocab_size
    seen_tokens: set[bytes] = set()
    for key, value in entries.items():
        where = f"{path}: id {key!r}"
        if not key.isdecimal():
            raise VocabFormatError(f"{where}: ids are decimal numbers")
        if isinstance(value, str):
            try:
                token = value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape
                raise VocabFormatError(f"{where}: the text is not valid Unicode") from None
        elif isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256
                                             for b in value):
            token = bytes(value)
        else:
            raise VocabFormatError(f"{where}: expected a string or a list of bytes (0..255)")
        _place(table, seen_tokens, int(key), token, where)
    return table


def _place(table: list[bytes], seen_tokens: set[bytes], token_id: int, token: bytes, where: str) -> None:
    if not END_OF_TEXT_ID < token_id < len(table):
        raise VocabFormatError(f"{where}: id {token_id} out of range")
    if table[token_id]:
        raise VocabFormatError(f"{where}: duplicate id {token_id}")
    if not token or token in seen_tokens:
        raise VocabFormatError(f"{where}: empty or duplicate token bytes {token!r}")
    seen_tokens.add(token)
    table[token_id] = token
