"""Find an incomplete (but still completable) UTF-8 sequence at the end of bytes."""

from __future__ import annotations

MAX_SEQUENCE_LENGTH = 4


def _sequence_length(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte starts; 0 if it cannot start one."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _second_byte_range(lead: int) -> tuple[int, int]:
    """Allowed range of the byte after `lead` (excludes overlongs, surrogates, > U+10FFFF)."""
    if lead == 0xE0:
        return 0xA0, 0xBF
    if lead == 0xED:
        return 0x80, 0x9F
    if lead == 0xF0:
        return 0x90, 0xBF
    if lead == 0xF4:
        return 0x80, 0x8F
    return 0x80, 0xBF


def incomplete_tail_length(data: bytes) -> int:
    """Number of trailing bytes that are a proper prefix of a valid UTF-8 character.

    Those bytes may still become a character once more bytes arrive, so a
    streaming decoder should hold them back. Returns 0 when the data ends on a
    complete character, or on bytes that can never become valid.
    """
    size = len(data)
    # A proper prefix is at most MAX_SEQUENCE_LENGTH - 1 bytes: scan that far back.
    for start in range(size - 1, max(size - MAX_SEQUENCE_LENGTH, -1), -1):
        byte = data[start]
        if 0x80 <= byte <= 0xBF:
            continue  # continuation byte: keep looking for the lead
        needed = _sequence_length(byte)
        have = size - start
        if needed <= have:
            return 0
        if have >= 2:
            low, high = _second_byte_range(byte)
            if not low <= data[start + 1] <= high:
                return 0
        # Bytes after the second are checked by the continue above (0x80..0xBF).
        return have
    return 0
