"""Code point ranges as UTF-8 byte-range sequences (the classic utf8-ranges split)."""

from __future__ import annotations

from functools import lru_cache

_LIMITS = (0x7F, 0x7FF, 0xFFFF)


def _encoded_len(cp: int) -> int:
    return 1 if cp <= 0x7F else 2 if cp <= 0x7FF else 3 if cp <= 0xFFFF else 4


@lru_cache(maxsize=4096)
def utf8_sequences(lo: int, hi: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Byte-range sequences matching exactly the UTF-8 encodings of the scalar values
    in lo..hi (inclusive); surrogates are skipped. Each sequence is a tuple of
    inclusive (lo_byte, hi_byte) ranges, one per encoded byte."""
    out: list[tuple[tuple[int, int], ...]] = []
    stack = [(lo, hi)]
    while stack:
        a, b = stack.pop()
        if a > b:
            continue
        if a <= 0xDFFF and b >= 0xD800:
            stack.append((0xE000, b))
            stack.append((a, 0xD7FF))
            continue
        split = False
        for limit in _LIMITS:
            if a <= limit < b:
                stack.append((limit + 1, b))
                stack.append((a, limit))
                split = True
                break
        if split:
            continue
        if b <= 0x7F:
            out.append(((a, b),))
            continue
        n = _encoded_len(a)
        for i in range(1, n):
            m = (1 << (6 * i)) - 1
            if (a & ~m) != (b & ~m):
                if a & m:
                    stack.append(((a | m) + 1, b))
                    stack.append((a, a | m))
                    split = True
                    break
                if (b & m) != m:
                    stack.append((b & ~m, b))
                    stack.append((a, (b & ~m) - 1))
                    split = True
                    break
        if split:
            continue
        ea = chr(a).encode("utf-8")
        eb = chr(b).encode("utf-8")
        out.append(tuple(zip(ea, eb)))
    return tuple(out)


def ranges_sequences(ranges) -> list[tuple[tuple[int, int], ...]]:
    """utf8_sequences over several code point ranges."""
    out = []
    for lo, hi in ranges:
        out.extend(utf8_sequences(lo, hi))
    return out
