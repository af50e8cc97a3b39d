"""The grammar AST shared by the BNF/KBNF parsers, the regex parser and the
json_schema translator. Every node denotes a language of byte strings."""

from __future__ import annotations

from dataclasses import dataclass

MAX_CODE_POINT = 0x10FFFF


class Expr:
    """Base class of AST nodes (immutable, hashable)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Lit(Expr):
    """Exactly these bytes (b"" is the empty string)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Chars(Expr):
    """One Unicode scalar value from sorted, disjoint inclusive code point ranges,
    UTF-8 encoded. Surrogates are never produced."""

    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Seq(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Alt(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Repeat(Expr):
    """`item` repeated min..max times (max None = unbounded)."""

    item: Expr
    min: int
    max: int | None


@dataclass(frozen=True, slots=True)
class Ref(Expr):
    """A reference to a named rule; `offset` locates it in the source (-1: none)."""

    name: str
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Except(Expr):
    """Any non-empty UTF-8 text that contains no substring in L(inner), of at most
    `max_chars` characters when given. `inner` must denote a regular language."""

    inner: Expr
    max_chars: int | None = None
    offset: int = -1


@dataclass(frozen=True, slots=True)
class EarlyEnd(Expr):
    """The strings of L(inner) that have no proper prefix in L(inner): matching
    stops as soon as `inner` has matched (KBNF `#e"..."`)."""

    inner: Expr
    offset: int = -1


@dataclass(frozen=True, slots=True)
class SepBy(Expr):
    """`item` repeated min..max times (min >= 1, max None = unbounded) with `sep`
    between repetitions. Built as a loop, so `item` is not copied when unbounded."""

    item: Expr
    sep: Expr
    min: int = 1
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Members(Expr):
    """The present ones of `items` (expr, required) in order, `sep` between them:
    JSON object members with optional properties. Each expr is built once."""

    items: tuple[tuple[Expr, bool], ...]
    sep: Expr


EMPTY = Lit(b"")


def seq(*items: Expr) -> Expr:
    """A flattened sequence, merging adjacent literals."""
    out: list[Expr] = []
    for item in items:
        parts = item.items if isinstance(item, Seq) else (item,)
        for part in parts:
            if isinstance(part, Lit):
                if not part.data:
                    continue
                if out and isinstance(out[-1], Lit):
                    out[-1] = Lit(out[-1].data + part.data)
                    continue
            out.append(part)
    if not out:
        return EMPTY
    if len(out) == 1:
        return out[0]
    return Seq(tuple(out))


def alt(*items: Expr) -> Expr:
    """A flattened alternative without duplicates."""
    seen: dict[Expr, None] = {}  # ordered and hashed: a 20,000-way alternative stays linear
    for item in items:
        for part in item.items if isinstance(item, Alt) else (item,):
            seen.setdefault(part)
    out = list(seen)
    if len(out) == 1:
        return out[0]
    return Alt(tuple(out))


def lit(text: str | bytes) -> Lit:
    return Lit(text.encode("utf-8") if isinstance(text, str) else text)


def opt(item: Expr) -> Expr:
    return Repeat(item, 0, 1)


def star(item: Expr) -> Expr:
    return Repeat(item, 0, None)


def plus(item: Expr) -> Expr:
    return Repeat(item, 1, None)


def normalize_ranges(ranges) -> tuple[tuple[int, int], ...]:
    """Sort and merge inclusive code point ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def negate_ranges(ranges) -> tuple[tuple[int, int], ...]:
    """The complement of `ranges` within 0..U+10FFFF."""
    out = []
    nxt = 0
    for lo, hi in normalize_ranges(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return tuple(out)


def chars(*ranges: tuple[int, int] | str) -> Chars:
    """Chars from (lo, hi) pairs or single-character strings."""
    rs = []
    for r in ranges:
        if isinstance(r, str):
            rs.extend((ord(c), ord(c)) for c in r)
        else:
            rs.append(r)
    return Chars(normalize_ranges(rs))


def refs_in(expr: Expr):
    """Yield every Ref inside `expr` (including inside Except/EarlyEnd)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Ref):
            yield e
        elif isinstance(e, (Seq, Alt)):
            stack.extend(e.items)
        elif isinstance(e, Repeat):
            stack.append(e.item)
        elif isinstance(e, SepBy):
            stack.append(e.item)
            stack.append(e.sep)
        elif isinstance(e, Members):
            stack.extend(x for x, _ in e.items)
            stack.append(e.sep)
        elif isinstance(e, (Except, EarlyEnd)):
            stack.append(e.inner)
