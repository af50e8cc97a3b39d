"""Byte-level tokenizer for tiny test models: token id = byte value."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .token_table import as_bytes, join_token_bytes, lookup_token_bytes

if TYPE_CHECKING:
    from .incremental import IncrementalDecoder

BYTE_VOCAB_SIZE = 256

_BYTE_TABLE: tuple[bytes, ...] = tuple(bytes([value]) for value in range(BYTE_VOCAB_SIZE))


class ByteTokenizer:
    """Each byte is its own token (ids 0..255); there is no end-of-text id."""

    @property
    def vocab_size(self) -> int:
        """Always 256."""
        return BYTE_VOCAB_SIZE

    @property
    def end_of_text_id(self) -> None:
        """Byte vocabularies have no end-of-text token."""
        return None

    @property
    def all_token_bytes(self) -> tuple[bytes, ...]:
        """The 256 single bytes, indexed by id."""
        return _BYTE_TABLE

    def token_bytes(self, token_id: int) -> bytes:
        """The single byte `token_id`; ValueError outside 0..255."""
        return lookup_token_bytes(_BYTE_TABLE, token_id)

    def encode(self, text: str | bytes) -> list[int]:
        """Byte values of a str (as UTF-8) or raw bytes."""
        return list(as_bytes(text))

    def decode(self, ids: Iterable[int]) -> bytes:
        """The bytes with these values; ValueError for ids outside 0..255."""
        return join_token_bytes(_BYTE_TABLE, ids)

    def incremental_decoder(self) -> IncrementalDecoder:
        """A fresh streaming decoder over this tokenizer."""
        from .incremental import IncrementalDecoder

        return IncrementalDecoder(self)

    def __repr__(self) -> str:
        return "ByteTokenizer()"
