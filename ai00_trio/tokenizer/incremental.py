"""Streaming detokenization: ids in, only complete UTF-8 text out."""

from __future__ import annotations

from collections.abc import Iterable

from .protocol import Tokenizer
from .utf8_tail import incomplete_tail_length


class IncrementalDecoder:
    """Turn a stream of token ids into text without splitting characters.

    `feed()` returns the text completed so far, holding back only a trailing
    partial UTF-8 sequence that could still become valid. Bytes that can never
    be valid UTF-8 come out at once as U+FFFD. `flush()` returns the held-back
    rest (as U+FFFD if it never completed) and resets the decoder.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._pending = b""

    @property
    def pending_bytes(self) -> bytes:
        """Bytes held back, waiting for the rest of a character."""
        return self._pending

    def feed(self, ids: Iterable[int] | int) -> str:
        """Add token ids (or one id); return the newly completed text."""
        id_list = ids if isinstance(ids, Iterable) else [ids]
        return self.feed_bytes(self._tokenizer.decode(id_list))

    def feed_bytes(self, data: bytes) -> str:
        """Add raw bytes; return the newly completed text."""
        buffer = self._pending + data if self._pending else data
        keep = incomplete_tail_length(buffer)
        if keep:
            self._pending = buffer[-keep:]
            buffer = buffer[:-keep]
        else:
            self._pending = b""
        return buffer.decode("utf-8", errors="replace")

    def flush(self) -> str:
        """Return whatever is held back (U+FFFD for an unfinished character)."""
        rest = self._pending
        self._pending = b""
        return rest.decode("utf-8", errors="replace")

    def reset(self) -> None:
        """Drop any held-back bytes."""
        self._pending = b""
