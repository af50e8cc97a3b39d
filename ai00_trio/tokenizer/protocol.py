"""The interface every tokenizer in this package provides."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """Text/bytes <-> token ids, plus the bytes of every token."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids (valid ids are 0..vocab_size-1)."""
        ...

    @property
    def end_of_text_id(self) -> int | None:
        """Id that ends generation, or None when the vocabulary has none."""
        ...

    @property
    def all_token_bytes(self) -> tuple[bytes, ...]:
        """Bytes of every token, indexed by id (b"" for ids with no bytes)."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes of one token."""
        ...

    def encode(self, text: str | bytes) -> list[int]:
        """Token ids for a str (encoded as UTF-8) or raw bytes."""
        ...

    def decode(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of the tokens (not necessarily valid UTF-8)."""
        ...
