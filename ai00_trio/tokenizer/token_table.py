"""Shared helpers for tokenizers backed by a table of token bytes."""

from __future__ import annotations

import operator
from collections.abc import Iterable


def as_bytes(text: str | bytes | bytearray | memoryview) -> bytes:
    """UTF-8 bytes of a str (strict: lone surrogates raise); bytes-like as bytes."""
    if isinstance(text, str):
        return text.encode("utf-8")
    return bytes(text)


def join_token_bytes(table: tuple[bytes, ...], ids: Iterable[int]) -> bytes:
    """Concatenate the table entries for `ids`; ValueError for ids outside the table."""
    id_list = ids if isinstance(ids, list) else list(ids)
    try:
        if id_list and min(id_list) < 0:
            raise IndexError
        return b"".join([table[token_id] for token_id in id_list])
    except (IndexError, TypeError):
        bad = next(t for t in id_list if not _is_valid_id(t, len(table)))
        raise ValueError(f"token id {bad!r} outside 0..{len(table) - 1}") from None


def lookup_token_bytes(table: tuple[bytes, ...], token_id: int) -> bytes:
    """Bytes of one token id; ValueError if it is outside the table."""
    if not _is_valid_id(token_id, len(table)):
        raise ValueError(f"token id {token_id!r} outside 0..{len(table) - 1}")
    return table[token_id]


def _is_valid_id(token_id: object, size: int) -> bool:
    """True for an integer (or integer-like) id in 0..size-1."""
    try:
        index = operator.index(token_id)  # type: ignore[arg-type]
    except TypeError:
        return False
    return 0 <= index < size
