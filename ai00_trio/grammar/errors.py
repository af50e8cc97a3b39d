"""Errors raised by the grammar package."""

from __future__ import annotations


class GrammarError(ValueError):
    """A grammar (BNF, KBNF or response_format) that cannot be compiled.

    `line` and `column` are 1-based positions in the grammar text (both 0 when the
    error has no position, e.g. for a response_format object). The server turns
    this into an HTTP 400 with `str(error)` as the message.
    """

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(where + message)


class GrammarRejected(ValueError):
    """A token (or byte string) that the grammar does not allow at this point."""


class MaskDeadline(TimeoutError):
    """A token mask that was not done by its deadline (the work stops there, its lock released)."""


def position_of(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset in `text`."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def error_at(text: str, offset: int, message: str) -> GrammarError:
    """A GrammarError located at a character offset of `text`."""
    line, column = position_of(text, offset)
    return GrammarError(message, line, column)
