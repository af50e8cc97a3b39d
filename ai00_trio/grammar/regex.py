"""A practical regular-expression subset, parsed into the grammar AST.

Full-match semantics (the regex must match the whole terminal). Supported:
literals, `.` (any character but newline), classes `[...]` / `[^...]` with ranges
and escapes, `\\d \\D \\w \\W \\s \\S` (ASCII), escapes `\\n \\r \\t \\f \\v \\0 \\a \\e`,
`\\xNN`, `\\x{N..}`, `\\uNNNN`, `\\u{N..}`, `\\UNNNNNNNN`, escaped punctuation,
groups `(...)`, `(?:...)`, `(?P<name>...)`/`(?<name>...)`, alternation `|`,
quantifiers `* + ? {n} {n,} {n,m} {,m}` (a trailing lazy `?` is accepted and ignored:
it does not change the matched language), and `^`/`$` only at the very start/end
(no-ops under full-match semantics). Anything else raises RegexSyntaxError.
"""

from __future__ import annotations

import re

from .expr import (
    EMPTY,
    MAX_CODE_POINT,
    Chars,
    Expr,
    Lit,
    Repeat,
    alt,
    negate_ranges,
    normalize_ranges,
    seq,
)

MAX_REPEAT = 1000

DIGIT = ((0x30, 0x39),)
WORD = normalize_ranges([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
SPACE = normalize_ranges([(0x09, 0x0D), (0x20, 0x20)])
ANY_BUT_NEWLINE = negate_ranges([(0x0A, 0x0A)])

_SIMPLE_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "0": 0x00,
                   "a": 0x07, "e": 0x1B}
_CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}


_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
_COUNT = re.compile(r"\{(?:[0-9]+(?:,[0-9]*)?|,[0-9]+)\}")


class RegexSyntaxError(ValueError):
    """A regex that cannot be parsed; `offset` is the index in the pattern."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.depth = 0

    def error(self, message: str, offset: int | None = None) -> RegexSyntaxError:
        return RegexSyntaxError(message, self.i if offset is None else offset)

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> Expr:
        if self.peek() == "^":
            self.i += 1
        expr = self.alternation()
        if self.i < len(self.p):
            c = self.p[self.i]
            if c == ")":
                raise self.error("unbalanced ')'")
            raise self.error(f"unexpected {c!r}")
        return expr

    def alternation(self) -> Expr:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        return alt(*branches)

    def sequence(self) -> Expr:
        items: list[Expr] = []
        while True:
            c = self.peek()
            if c is None or c in "|)":
                break
            if c == "$":
                if self.i == len(self.p) - 1 and self.depth == 0:
                    self.i += 1
                    break
                raise self.error("'$' is only supported at the end of the pattern")
            atom = self.atom()
            items.append(self.quantified(atom))
        return seq(*items) if items else EMPTY

    def quantified(self, atom: Expr) -> Expr:
        while True:
            c = self.peek()
            start = self.i
            if c == "*":
                lo, hi = 0, None
                self.i += 1
            elif c == "+":
                lo, hi = 1, None
                self.i += 1
            elif c == "?":
                lo, hi = 0, 1
                self.i += 1
            elif c == "{" and self._looks_like_count():
                lo, hi = self.count()
            else:
                return atom
            if self.peek() == "?":  # lazy: same language
                self.i += 1
            elif self.peek() == "+":
                raise self.error("possessive quantifiers are not supported")
            if hi is not None and hi > MAX_REPEAT or lo > MAX_REPEAT:
                raise self.error(f"repetition count above {MAX_REPEAT}", start)
            atom = Repeat(atom, lo, hi)

    def _looks_like_count(self) -> bool:
        return _COUNT.match(self.p, self.i) is not None

    def count(self) -> tuple[int, int | None]:
        start = self.i
        m = _COUNT.match(self.p, self.i)
        body = m.group(0)[1:-1]
        self.i = m.end()
        try:
            if "," in body:
                a, b = body.split(",", 1)
                lo = int(a) if a else 0
                hi = int(b) if b.strip() else None
            else:
                lo = hi = int(body)
        except ValueError:
            raise self.error(f"bad repetition {{{body}}}", start) from None
        if hi is not None and hi < lo:
            raise self.error(f"bad repetition {{{body}}}: max below min", start)
        return lo, hi

    def atom(self) -> Expr:
        c = self.p[self.i]
        if c == "(":
            return self.group()
        if c == "[":
            return Chars(self.char_class())
        if c == ".":
            self.i += 1
            return Chars(ANY_BUT_NEWLINE)
        if c == "\\":
            ranges = self.escape(in_class=False)
            return _chars_or_lit(ranges)
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c == "{" and self._looks_like_count():
            raise self.error("nothing to repeat before '{'")
        if c == "^":
            raise self.error("'^' is only supported at the start of the pattern")
        self.i += 1
        return Lit(c.encode("utf-8", "surrogatepass"))

    def group(self) -> Expr:
        start = self.i
        self.i += 1
        if self.p.startswith("?:", self.i):
            self.i += 2
        elif self.p.startswith("?P<", self.i) or (
            self.p.startswith("?<", self.i) and not self.p.startswith("?<=", self.i)
            and not self.p.startswith("?<!", self.i)
        ):
            end = self.p.find(">", self.i)
            if end < 0:
                raise self.error("unterminated group name")
            self.i = end + 1
        elif self.peek() == "?":
            raise self.error("lookaround, flags and other (?...) groups are not supported")
        self.depth += 1
        inner = self.alternation()
        self.depth -= 1
        if self.peek() != ")":
            raise self.error("missing ')'", start)
        self.i += 1
        return inner

    def char_class(self) -> tuple[tuple[int, int], ...]:
        start = self.i
        self.i += 1
        negate = False
        if self.peek() == "^":
            negate = True
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("unterminated character class", start)
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and self.p.startswith("[:", self.i):
                raise self.error("POSIX classes like [:alpha:] are not supported")
            lo_set = self.class_atom()
            if (
                self.peek() == "-"
                and self.i + 1 < len(self.p)
                and self.p[self.i + 1] != "]"
            ):
                dash = self.i
                self.i += 1
                hi_set = self.class_atom()
                if len(lo_set) != 1 or lo_set[0][0] != lo_set[0][1] or len(hi_set) != 1 or (
                    hi_set[0][0] != hi_set[0][1]
                ):
                    raise self.error("a range bound must be a single character", dash)
                lo, hi = lo_set[0][0], hi_set[0][0]
                if hi < lo:
                    raise self.error("range out of order", dash)
                ranges.append((lo, hi))
            else:
                ranges.extend(lo_set)
        out = normalize_ranges(ranges)
        if negate:
            out = negate_ranges(out)
        if not out:
            raise self.error("empty character class", start)
        return out

    def class_atom(self) -> tuple[tuple[int, int], ...]:
        c = self.p[self.i]
        if c == "\\":
            return self.escape(in_class=True)
        self.i += 1
        return ((ord(c), ord(c)),)

    def escape(self, in_class: bool) -> tuple[tuple[int, int], ...]:
        start = self.i
        self.i += 1
        if self.i >= len(self.p):
            raise self.error("pattern ends with a lone backslash", start)
        c = self.p[self.i]
        self.i += 1
        if c in _SIMPLE_ESCAPES:
            v = _SIMPLE_ESCAPES[c]
            return ((v, v),)
        if c in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c]
        if c in "DWS":
            return negate_ranges(_CLASS_ESCAPES[c.lower()])
        if c in "xuU":
            v = self.hex_escape(c, start)
            return ((v, v),)
        if c == "b" and in_class:
            return ((8, 8),)
        if c.isalnum():
            raise self.error(f"unsupported escape \\{c}", start)
        return ((ord(c), ord(c)),)

    def hex_escape(self, kind: str, start: int) -> int:
        if self.peek() == "{":
            end = self.p.find("}", self.i)
            if end < 0:
                raise self.error("unterminated \\x{...} escape", start)
            digits = self.p[self.i + 1:end]
            self.i = end + 1
        else:
            n = {"x": 2, "u": 4, "U": 8}[kind]
            digits = self.p[self.i:self.i + n]
            if len(digits) != n:
                raise self.error(f"\\{kind} needs {n} hex digits", start)
            self.i += n
        if not _HEX.fullmatch(digits):
            raise self.error(f"bad hex digits in \\{kind} escape", start)
        v = int(digits, 16)
        if v > MAX_CODE_POINT or 0xD800 <= v <= 0xDFFF:
            raise self.error(f"\\{kind} escape is not a Unicode scalar value", start)
        return v


def _chars_or_lit(ranges: tuple[tuple[int, int], ...]) -> Expr:
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return Lit(chr(ranges[0][0]).encode("utf-8"))
    return Chars(ranges)


def parse_regex(pattern: str) -> Expr:
    """Parse `pattern` (full-match semantics) into the grammar AST."""
    return _Parser(pattern).parse()
