"""The RWKV World tokenizer (65536 ids, greedy longest match over UTF-8 bytes)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .greedy_match import GreedyMatcher
from .token_table import as_bytes, join_token_bytes, lookup_token_bytes
from .vocab_file import END_OF_TEXT_ID, WORLD_VOCAB_SIZE, read_vocab_file

if TYPE_CHECKING:
    from .incremental import IncrementalDecoder


class WorldTokenizer:
    """Tokenizer for RWKV World models, loaded from `rwkv_vocab_v20230424.txt` (or AI00's `.json`).

    Id 0 is end-of-text and has no bytes; ids missing from the file (65530..65535
    in the shipped vocab) also have no bytes and are never produced by encode().
    """

    def __init__(self, vocab_path: str | Path, vocab_size: int = WORLD_VOCAB_SIZE) -> None:
        self.vocab_path = Path(vocab_path)
        self._table: tuple[bytes, ...] = tuple(read_vocab_file(self.vocab_path, vocab_size))
        self._matcher = GreedyMatcher(
            {token: token_id for token_id, token in enumerate(self._table) if token}
        )

    @property
    def vocab_size(self) -> int:
        """Number of token ids (65536 for World)."""
        return len(self._table)

    @property
    def end_of_text_id(self) -> int:
        """Id 0: end-of-text."""
        return END_OF_TEXT_ID

    @property
    def all_token_bytes(self) -> tuple[bytes, ...]:
        """Bytes of every token, indexed by id (b"" for id 0 and unused ids)."""
        return self._table

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes of one token; ValueError outside 0..vocab_size-1."""
        return lookup_token_bytes(self._table, token_id)

    def encode(self, text: str | bytes) -> list[int]:
        """Token ids for a str (as UTF-8) or raw bytes."""
        return self._matcher.encode(as_bytes(text))

    def decode(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of the tokens; ValueError for out-of-range ids."""
        return join_token_bytes(self._table, ids)

    def incremental_decoder(self) -> IncrementalDecoder:
        """A fresh streaming decoder over this tokenizer."""
        from .incremental import IncrementalDecoder

        return IncrementalDecoder(self)

    def __repr__(self) -> str:
        return f"WorldTokenizer({str(self.vocab_path)!r})"
