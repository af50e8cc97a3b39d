"""Byte-level automata: a Thompson NFA builder over the grammar AST (bytes plus
calls of recursive rules), subset construction over byte classes, and the
derived automata for `except!` and early-end regexes."""

from __future__ import annotations

from collections.abc import Callable

from .expr import Alt, Chars, EarlyEnd, Except, Expr, Lit, Members, Ref, Repeat, Seq, SepBy
from .stop import check_stop
from .utf8 import ranges_sequences

ALL_BYTES = (1 << 256) - 1
ANY_CHAR = ((0, 0x10FFFF),)
MAX_NFA_STATES = 200_000
MAX_DFA_STATES = 30_000
MAX_SUBSET_WORK = 4_000_000  # NFA states visited by epsilon closures in one determinisation
MAX_EXCEPT_CHARS = 4096


class AutomatonTooLarge(ValueError):
    """The grammar expands into more states than the limits allow."""


def byte_range_mask(lo: int, hi: int) -> int:
    return ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


class NFA:
    """States are ints. `eps[s]`: epsilon targets; `edges[s]`: (byte mask, target);
    `calls[s]`: (rule index, target) for a call of a recursive rule."""

    __slots__ = ("eps", "edges", "calls")

    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int]]] = []
        self.calls: list[list[tuple[int, int]]] = []

    def state(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise AutomatonTooLarge(f"grammar expands to more than {MAX_NFA_STATES} NFA states")
        self.eps.append([])
        self.edges.append([])
        self.calls.append([])
        return len(self.eps) - 1


class DFA:
    """A deterministic automaton over byte classes plus call symbols.

    `classes[c]` is the byte mask of class c; `trans[s]` maps class -> target,
    `calls[s]` maps rule index -> target, `accept[s]` marks final states."""

    __slots__ = ("classes", "trans", "calls", "accept", "start", "boundary")

    def __init__(self, classes, trans, calls, accept, start, boundary=None) -> None:
        self.classes: list[int] = classes
        self.trans: list[dict[int, int]] = trans
        self.calls: list[dict[int, int]] = calls
        self.accept: list[bool] = accept
        self.start: int = start
        self.boundary: list[bool] | None = boundary

    def __len__(self) -> int:
        return len(self.trans)

    def byte_edges(self, s: int) -> list[tuple[int, int]]:
        """(byte mask, target) edges of state s, one per distinct target."""
        by_target: dict[int, int] = {}
        classes = self.classes
        for c, t in self.trans[s].items():
            by_target[t] = by_target.get(t, 0) | classes[c]
        return [(m, t) for t, m in by_target.items()]


def partition_bytes(masks) -> list[int]:
    """The coarsest partition of 0..255 refining every mask in `masks`."""
    classes = [ALL_BYTES]
    for m in masks:
        if m == ALL_BYTES:
            continue
        nxt = []
        for c in classes:
            a = c & m
            if a and a != c:
                nxt.append(a)
                nxt.append(c ^ a)
            else:
                nxt.append(c)
        classes = nxt
    return classes


def determinize(nfa: NFA, start: int, final: int, marker: int | None = None) -> DFA:
    """Subset construction. `marker` (optional NFA state) sets DFA.boundary[s] when
    the subset contains it."""
    eps, edges, calls = nfa.eps, nfa.edges, nfa.calls
    masks = {m for es in edges for m, _ in es}
    classes = partition_bytes(masks)
    mask_classes: dict[int, tuple[int, ...]] = {
        m: tuple(i for i, c in enumerate(classes) if c & m) for m in masks
    }

    work = [0]

    def close(seeds) -> frozenset:
        stack = list(seeds)
        seen = set(stack)
        work[0] += len(seen)
        if work[0] > MAX_SUBSET_WORK:
            raise AutomatonTooLarge("grammar is too large to compile (determinisation budget)")
        while stack:
            s = stack.pop()
            for t in eps[s]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        work[0] += len(seen)
        return frozenset(
            s for s in seen if edges[s] or calls[s] or s == final or s == marker
        )

    ids: dict[frozenset, int] = {}
    keys: list[frozenset] = []
    trans: list[dict[int, int]] = []
    dcalls: list[dict[int, int]] = []

    def intern(key: frozenset) -> int:
        i = ids.get(key)
        if i is None:
            if len(keys) >= MAX_DFA_STATES:
                raise AutomatonTooLarge(f"grammar needs more than {MAX_DFA_STATES} DFA states")
            i = ids[key] = len(keys)
            keys.append(key)
        return i

    intern(close((start,)))
    memo: dict[frozenset, int] = {}
    i = 0
    while i < len(keys):
        check_stop()
        key = keys[i]
        i += 1
        tgt: dict[int, set[int]] = {}
        ctgt: dict[int, set[int]] = {}
        for s in key:
            for m, t in edges[s]:
                for c in mask_classes[m]:
                    bucket = tgt.get(c)
                    if bucket is None:
                        tgt[c] = {t}
                    else:
                        bucket.add(t)
            for x, t in calls[s]:
                bucket = ctgt.get(x)
                if bucket is None:
                    ctgt[x] = {t}
                else:
                    bucket.add(t)
        row: dict[int, int] = {}
        for c, ts in tgt.items():
            fk = frozenset(ts)
            d = memo.get(fk)
            if d is None:
                d = memo[fk] = intern(close(fk))
            row[c] = d
        crow: dict[int, int] = {}
        for x, ts in ctgt.items():
            fk = frozenset(ts)
            d = memo.get(fk)
            if d is None:
                d = memo[fk] = intern(close(fk))
            crow[x] = d
        trans.append(row)
        dcalls.append(crow)
    accept = [final in k for k in keys]
    boundary = [marker in k for k in keys] if marker is not None else None
    return DFA(classes, trans, dcalls, accept, 0, boundary)


class Builder:
    """Builds NFA fragments for AST nodes. `resolve(name)` returns either
    ("call", rule_index) or ("inline", expr) for a rule reference."""

    def __init__(self, nfa: NFA, resolve: Callable[[Ref], tuple[str, object]],
                 regular: Callable[[Expr], DFA]) -> None:
        self.nfa = nfa
        self.resolve = resolve
        self.regular = regular  # standalone byte DFA of a regular sub-expression
        self._inlining: list[str] = []

    def frag(self, expr: Expr) -> tuple[int, int]:
        check_stop()
        nfa = self.nfa
        if isinstance(expr, Lit):
            s = cur = nfa.state()
            for b in expr.data:
                nxt = nfa.state()
                nfa.edges[cur].append((1 << b, nxt))
                cur = nxt
            return s, cur
        if isinstance(expr, Chars):
            s, e = nfa.state(), nfa.state()
            self.chars_into(expr.ranges, s, e)
            return s, e
        if isinstance(expr, Seq):
            s, e = self.frag(expr.items[0])
            for item in expr.items[1:]:
                s2, e2 = self.frag(item)
                nfa.eps[e].append(s2)
                e = e2
            return s, e
        if isinstance(expr, Alt):
            s, e = nfa.state(), nfa.state()
            for item in expr.items:
                s2, e2 = self.frag(item)
                nfa.eps[s].append(s2)
                nfa.eps[e2].append(e)
            return s, e
        if isinstance(expr, Repeat):
            return self.repeat(expr)
        if isinstance(expr, SepBy):
            return self.sep_by(expr)
        if isinstance(expr, Members):
            return self.members(expr)
        if isinstance(expr, Ref):
            kind, value = self.resolve(expr)
            if kind == "call":
                s, e = nfa.state(), nfa.state()
                nfa.calls[s].append((value, e))
                return s, e
            if expr.name in self._inlining:  # pragma: no cover - guarded by the compiler
                raise RuntimeError(f"recursive inline of {expr.name}")
            self._inlining.append(expr.name)
            try:
                return self.frag(value)
            finally:
                self._inlining.pop()
        if isinstance(expr, (Except, EarlyEnd)):
            return self.embed(self.regular(expr))
        raise TypeError(f"unknown grammar node {expr!r}")

    def chars_into(self, ranges, s: int, e: int) -> None:
        """Edges from s to e for one character in `ranges` (UTF-8). Leading bytes
        share states by prefix, and trailing runs of full continuation bytes
        (80-BF) share one chain, so the DFA needs no later minimisation for them."""
        nfa = self.nfa
        cont = [e]  # cont[k]: k more continuation bytes, then e
        prefix: dict[tuple, int] = {}
        full = byte_range_mask(0x80, 0xBF)
        for sequence in ranges_sequences(ranges):
            k = len(sequence)
            tail = 0  # number of trailing (80, BF) ranges
            while tail < k - 1 and sequence[k - 1 - tail] == (0x80, 0xBF):
                tail += 1
            while len(cont) <= tail:
                nxt = nfa.state()
                nfa.edges[nxt].append((full, cont[-1]))
                cont.append(nxt)
            head = sequence[:k - tail]
            cur = s
            for i, (lo, hi) in enumerate(head):
                mask = byte_range_mask(lo, hi)
                if i == len(head) - 1:
                    nfa.edges[cur].append((mask, cont[tail]))
                else:
                    key = (cur, mask)
                    nxt = prefix.get(key)
                    if nxt is None:
                        nxt = prefix[key] = nfa.state()
                        nfa.edges[cur].append((mask, nxt))
                    cur = nxt

    def repeat(self, expr: Repeat) -> tuple[int, int]:
        nfa = self.nfa
        s = e = nfa.state()
        for _ in range(expr.min):
            s2, e2 = self.frag(expr.item)
            nfa.eps[e].append(s2)
            e = e2
        if expr.max is None:
            loop = nfa.state()
            nfa.eps[e].append(loop)
            s2, e2 = self.frag(expr.item)
            nfa.eps[loop].append(s2)
            nfa.eps[e2].append(loop)
            end = nfa.state()
            nfa.eps[loop].append(end)
            return s, end
        end = nfa.state()
        for _ in range(expr.max - expr.min):
            nfa.eps[e].append(end)
            s2, e2 = self.frag(expr.item)
            nfa.eps[e].append(s2)
            e = e2
        nfa.eps[e].append(end)
        return s, end

    def sep_by(self, expr: SepBy) -> tuple[int, int]:
        nfa = self.nfa
        s = e = nfa.state()
        for k in range(max(expr.min, 1) - 1):
            s2, e2 = self.frag(expr.item)
            nfa.eps[e].append(s2)
            ss, se = self.frag(expr.sep)
            nfa.eps[e2].append(ss)
            e = se
        if expr.max is None:
            s2, e2 = self.frag(expr.item)  # one copy, looping back through sep
            nfa.eps[e].append(s2)
            ss, se = self.frag(expr.sep)
            nfa.eps[e2].append(ss)
            nfa.eps[se].append(s2)
            return s, e2
        end = nfa.state()
        for k in range(max(expr.min, 1) - 1, expr.max):
            s2, e2 = self.frag(expr.item)
            nfa.eps[e].append(s2)
            if k + 1 >= expr.min:
                nfa.eps[e2].append(end)
            if k + 1 < expr.max:
                ss, se = self.frag(expr.sep)
                nfa.eps[e2].append(ss)
                e = se
        return s, end

    def members(self, expr: Members) -> tuple[int, int]:
        """Track A: nothing emitted yet; track B: something emitted (a separator is
        due). Each member is built once, entered from A directly or from B through
        the separator, and always leaves to B."""
        nfa = self.nfa
        n = len(expr.items)
        a = [nfa.state() for _ in range(n + 1)]
        b = [nfa.state() for _ in range(n + 1)]
        for j, (item, required) in enumerate(expr.items):
            m = nfa.state()
            nfa.eps[a[j]].append(m)
            ss, se = self.frag(expr.sep)
            nfa.eps[b[j]].append(ss)
            nfa.eps[se].append(m)
            s2, e2 = self.frag(item)
            nfa.eps[m].append(s2)
            nfa.eps[e2].append(b[j + 1])
            if not required:
                nfa.eps[a[j]].append(a[j + 1])
                nfa.eps[b[j]].append(b[j + 1])
        end = nfa.state()
        nfa.eps[a[n]].append(end)
        nfa.eps[b[n]].append(end)
        return a[0], end

    def embed(self, dfa: DFA) -> tuple[int, int]:
        """Copy a byte-only DFA into the NFA as a fragment."""
        nfa = self.nfa
        base = [nfa.state() for _ in range(len(dfa))]
        end = nfa.state()
        for d in range(len(dfa)):
            for mask, t in dfa.byte_edges(d):
                nfa.edges[base[d]].append((mask, base[t]))
            if dfa.accept[d]:
                nfa.eps[base[d]].append(end)
        return base[dfa.start], end


def standalone_dfa(expr: Expr, resolve, regular) -> DFA:
    """The byte DFA of a regular expression node (no calls allowed)."""
    nfa = NFA()
    builder = Builder(nfa, resolve, regular)
    s, e = builder.frag(expr)
    return determinize(nfa, s, e)


def except_dfa(inner: Expr, max_chars: int | None, resolve, regular) -> DFA:
    """DFA of non-empty UTF-8 text containing no substring from L(inner), with at
    most `max_chars` characters when given."""
    nfa = NFA()
    builder = Builder(nfa, resolve, regular)
    loop = nfa.state()
    builder.chars_into(ANY_CHAR, loop, loop)
    s, hit = builder.frag(inner)
    nfa.eps[loop].append(s)
    search = determinize(nfa, loop, hit, marker=loop)
    # states whose subset contains `hit` have seen a forbidden substring: drop them
    alive = [not a for a in search.accept]
    if not alive[search.start]:
        raise ValueError("except! pattern matches the empty string, so nothing is allowed")
    boundary = search.boundary
    n = len(search)
    if max_chars is None:
        # states 0..n-1 mirror `search`; state n is the non-accepting start copy
        trans = []
        for d in range(n):
            trans.append({c: t for c, t in search.trans[d].items() if alive[t]})
        trans.append(dict(trans[search.start]))
        accept = [alive[d] and boundary[d] for d in range(n)] + [False]
        return DFA(search.classes, trans, [{} for _ in trans], accept, n)
    if max_chars < 1 or max_chars > MAX_EXCEPT_CHARS:
        raise ValueError(f"except! length must be between 1 and {MAX_EXCEPT_CHARS}")
    # layered by number of completed characters
    index: dict[tuple[int, int], int] = {}
    trans = []
    accept = []
    order = [(search.start, 0)]
    index[order[0]] = 0
    i = 0
    while i < len(order):
        d, k = order[i]
        i += 1
        row = {}
        for c, t in search.trans[d].items():
            if not alive[t]:
                continue
            k2 = k + 1 if boundary[t] else k
            if k2 > max_chars:
                continue
            key = (t, k2)
            j = index.get(key)
            if j is None:
                j = index[key] = len(order)
                order.append(key)
            row[c] = j
        trans.append(row)
        accept.append(boundary[d] and k >= 1)
    return DFA(search.classes, trans, [{} for _ in trans], accept, 0)


def early_end_dfa(inner: Expr, resolve, regular) -> DFA:
    """DFA of L(inner) cut at the first match: accepting states lose their edges."""
    dfa = standalone_dfa(inner, resolve, regular)
    trans = [({} if dfa.accept[d] else dict(dfa.trans[d])) for d in range(len(dfa))]
    return DFA(dfa.classes, trans, [{} for _ in trans], list(dfa.accept), dfa.start)
