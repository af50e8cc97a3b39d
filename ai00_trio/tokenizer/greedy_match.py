"""Greedy longest-match encoding of bytes against a fixed vocabulary."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

LONG_PREFIX_LENGTH = 4
"""Tokens at least this long are indexed by their first LONG_PREFIX_LENGTH bytes."""

SHORT_PREFIX_LENGTH = 2
"""Shorter multi-byte tokens are indexed by their first SHORT_PREFIX_LENGTH bytes."""


def _lengths_by_prefix(
    tokens: list[bytes], prefix_length: int
) -> dict[bytes, tuple[int, ...]]:
    """Map each prefix to the lengths of the tokens starting with it, longest first."""
    lengths: defaultdict[bytes, set[int]] = defaultdict(set)
    for token in tokens:
        lengths[token[:prefix_length]].add(len(token))
    return {
        prefix: tuple(sorted(found, reverse=True)) for prefix, found in lengths.items()
    }


class GreedyMatcher:
    """Split bytes into token ids, always taking the longest token that matches.

    Left to right, at each position the longest vocabulary entry that is a prefix
    of the remaining bytes wins (the rule of BlinkDL's TRIE_TOKENIZER). Candidate
    lengths are looked up by the next 4 bytes (tokens of 4+ bytes) or the next
    2 bytes (tokens of 2-3 bytes), then each candidate slice is tested against a
    dict; every single byte must be a token, so matching never fails.
    """

    def __init__(self, id_by_token: Mapping[bytes, int]) -> None:
        missing = [value for value in range(256) if bytes([value]) not in id_by_token]
        if missing:
            raise ValueError(
                f"vocabulary lacks single-byte tokens for {len(missing)} byte values "
                f"(first: 0x{missing[0]:02x}); greedy matching needs all 256"
            )
        self._id_by_token: dict[bytes, int] = dict(id_by_token)
        self._id_by_byte: tuple[int, ...] = tuple(
            id_by_token[bytes([value])] for value in range(256)
        )
        long_tokens = [t for t in id_by_token if len(t) >= LONG_PREFIX_LENGTH]
        short_tokens = [
            t for t in id_by_token if SHORT_PREFIX_LENGTH <= len(t) < LONG_PREFIX_LENGTH
        ]
        self._long_lengths = _lengths_by_prefix(long_tokens, LONG_PREFIX_LENGTH)
        self._short_lengths = _lengths_by_prefix(short_tokens, SHORT_PREFIX_LENGTH)

    def encode(self, data: bytes) -> list[int]:
        """Token ids for `data`, greedy longest match from the left."""
        # Hot loop: bind lookups to locals.
        id_of = self._id_by_token.get
        long_lengths_of = self._long_lengths.get
        short_lengths_of = self._short_lengths.get
        id_by_byte = self._id_by_byte
        ids: list[int] = []
        append = ids.append
        position = 0
        size = len(data)
        while position < size:
            remaining = size - position
            found = None
            length = 1
            if remaining >= LONG_PREFIX_LENGTH:
                candidates = long_lengths_of(data[position : position + LONG_PREFIX_LENGTH])
                if candidates:
                    for length in candidates:
                        if length <= remaining:
                            found = id_of(data[position : position + length])
                            if found is not None:
                                break
            if found is None and remaining >= SHORT_PREFIX_LENGTH:
                candidates = short_lengths_of(data[position : position + SHORT_PREFIX_LENGTH])
                if candidates:
                    for length in candidates:
                        if length <= remaining:
                            found = id_of(data[position : position + length])
                            if found is not None:
                                break
            if found is None:
                found = id_by_byte[data[position]]
                length = 1
            append(found)
            position += length
        return ids
