"""From named rules (AST) to byte-level machines.

Rules that are not recursive are inlined into the rules that use them, so a
grammar without recursion becomes one DFA. Each recursive rule (and the start
rule) becomes a *machine*: a DFA over bytes plus "call rule X" edges, which the
Earley recognizer in grammar.py runs with a graph-structured stack.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .automata import (
    DFA,
    MAX_NFA_STATES,
    NFA,
    AutomatonTooLarge,
    Builder,
    determinize,
    early_end_dfa,
    except_dfa,
)
from .errors import GrammarError, error_at
from .stop import check_stop
from .expr import (
    EMPTY,
    Alt,
    Chars,
    Except,
    Expr,
    Lit,
    Members,
    Ref,
    Repeat,
    SepBy,
    Seq,
    alt,
    refs_in,
    seq,
    star,
)

INLINE_LIMIT = 40_000  # estimated NFA states of one machine before rules are split off

np.unique(np.zeros(1, dtype=np.int64), return_index=True, return_inverse=True)  # lazy imports: pay now


@dataclass(eq=False)
class Machine:
    """One rule compiled to a DFA. State 0 is dead; `start` is the entry state."""

    index: int
    name: str
    start: int
    table: np.ndarray  # int32 [n_states, 256]: byte transitions
    accept: np.ndarray  # bool [n_states]
    calls: list[tuple[tuple[int, int], ...]]  # per state: ((rule index, target), ...)

    def __post_init__(self) -> None:
        n = len(self.table)
        self.flat = np.ascontiguousarray(self.table.ravel())
        self.has_bytes = self.table.any(axis=1)
        has_calls = np.array([bool(c) for c in self.calls], dtype=bool)
        # states where a token walk may leave this machine (return or call)
        self.escape = self.accept | has_calls
        self.escape_l: list[bool] = self.escape.tolist()
        self.rows: list[list[int]] = self.table.tolist()
        self.accept_l: list[bool] = self.accept.tolist()
        self.has_bytes_l: list[bool] = self.has_bytes.tolist()
        self.n_states = n


# ---------------------------------------------------------------- rule analysis


def _alternatives(expr: Expr) -> list[Expr]:
    return list(expr.items) if isinstance(expr, Alt) else [expr]


def _sequence(expr: Expr) -> list[Expr]:
    return list(expr.items) if isinstance(expr, Seq) else ([] if expr == EMPTY else [expr])


def _mentions(expr: Expr, name: str) -> bool:
    return any(r.name == name for r in refs_in(expr))


def eliminate_self_recursion(name: str, body: Expr) -> Expr:
    """Rewrite A ::= γ A | A α | β (β without A) as γ* β α*, when every
    self-reference of A sits at the left or right edge of a top-level alternative."""
    if not _mentions(body, name):
        return body
    lefts, rights, bases = [], [], []
    for a in _alternatives(body):
        items = _sequence(a)
        head_self = bool(items) and isinstance(items[0], Ref) and items[0].name == name
        tail_self = bool(items) and isinstance(items[-1], Ref) and items[-1].name == name
        if head_self and not any(_mentions(i, name) for i in items[1:]):
            lefts.append(seq(*items[1:]))
        elif tail_self and not any(_mentions(i, name) for i in items[:-1]):
            rights.append(seq(*items[:-1]))
        elif not _mentions(a, name):
            bases.append(a)
        else:
            return body
    if not bases:
        return body  # no way out of the recursion: leave it (it matches nothing)
    parts = []
    if rights:
        parts.append(star(alt(*rights)))
    parts.append(alt(*bases))
    if lefts:
        parts.append(star(alt(*lefts)))
    return seq(*parts)


def _tarjan(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = itertools.count()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = next(counter)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = next(counter)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                sccs.append(comp)
    return sccs


def _estimate(expr: Expr, sizes: dict, machines: set[str], rules) -> int:
    """Rough NFA size of `expr` with non-machine rules inlined. `sizes` memoises
    rules (by name) and shared sub-expressions (by id), so DAG-shaped ASTs cost
    linear time."""
    key = id(expr)
    hit = sizes.get(key)
    if hit is not None:
        return hit
    if isinstance(expr, Lit):
        n = len(expr.data) + 1
    elif isinstance(expr, Chars):
        n = 2 + 3 * len(expr.ranges)
    elif isinstance(expr, (Seq, Alt)):
        n = 2 + sum(_estimate(i, sizes, machines, rules) for i in expr.items)
    elif isinstance(expr, Repeat):
        copies = expr.min + (1 if expr.max is None else expr.max - expr.min)
        n = 3 + max(copies, 1) * _estimate(expr.item, sizes, machines, rules)
    elif isinstance(expr, SepBy):
        copies = max(expr.min, 1) if expr.max is None else expr.max
        n = 3 + copies * (_estimate(expr.item, sizes, machines, rules)
                          + _estimate(expr.sep, sizes, machines, rules))
    elif isinstance(expr, Members):
        sep = _estimate(expr.sep, sizes, machines, rules)
        n = 3 + sum(3 + sep + _estimate(x, sizes, machines, rules) for x, _ in expr.items)
    elif isinstance(expr, Ref):
        if expr.name in machines:
            n = 2
        elif expr.name in sizes:
            n = sizes[expr.name]
        else:
            sizes[expr.name] = 0  # guards against cycles through non-machine rules
            n = sizes[expr.name] = _estimate(rules[expr.name], sizes, machines, rules)
    else:
        n = 64  # except!/early-end: a small embedded DFA
    sizes[key] = n
    return n


# ---------------------------------------------------------------- compilation


class CompiledRules:
    """The machines of a grammar plus the per-rule facts the recognizer needs."""

    def __init__(self, machines: list[Machine], nullable: list[bool], start: int) -> None:
        self.machines = machines
        self.nullable = nullable
        self.start = start


def compile_rules(rules: dict[str, Expr], start: str, text: str | None = None,
                  offsets: dict[str, int] | None = None) -> CompiledRules:
    """Compile named rules into machines. `text` (the grammar source) is used to
    locate errors: Ref/Except offsets index into it, and `offsets` gives where each
    rule is defined."""
    offsets = offsets or {}

    def fail(offset: int, message: str) -> GrammarError:
        if text is not None and offset >= 0:
            return error_at(text, offset, message)
        return GrammarError(message)

    for body in rules.values():
        for r in refs_in(body):
            if r.name not in rules:
                raise fail(r.offset, f"undefined rule '{r.name}'")
    if start not in rules:
        raise GrammarError(f"the grammar has no start rule '{start}'")

    rules = {n: eliminate_self_recursion(n, b) for n, b in rules.items()}

    # rules reachable from the start rule
    graph_all = {n: {r.name for r in refs_in(b)} for n, b in rules.items()}
    reachable = {start}
    todo = [start]
    while todo:
        for w in graph_all[todo.pop()]:
            if w not in reachable:
                reachable.add(w)
                todo.append(w)
    graph = {n: graph_all[n] for n in reachable}
    recursive: set[str] = set()
    for comp in _tarjan(graph):
        if len(comp) > 1 or comp[0] in graph[comp[0]]:
            recursive.update(comp)
    machine_names = [start] + sorted(recursive - {start})
    machine_set = set(machine_names)

    # split very large inlined rules into machines of their own
    while True:
        sizes: dict[str, int] = {}
        worst = max(machine_names, key=lambda m: _estimate(rules[m], sizes, machine_set, rules))
        if _estimate(rules[worst], sizes, machine_set, rules) <= INLINE_LIMIT:
            break
        refs = {r.name for r in refs_in(rules[worst])} - machine_set
        candidates = [r for r in refs if isinstance(sizes.get(r), int) and sizes[r] > 64]
        if not candidates:
            break
        biggest = max(candidates, key=lambda r: sizes[r])
        machine_names.append(biggest)
        machine_set.add(biggest)
    index = {name: i for i, name in enumerate(machine_names)}
    sizes = {}
    for name in machine_names:
        estimate = _estimate(rules[name], sizes, machine_set, rules)
        if estimate > MAX_NFA_STATES:
            raise fail(offsets.get(name, -1), f"rule '{name}' expands to about {estimate:,} "
                       f"automaton states (limit {MAX_NFA_STATES:,}); simplify the grammar")

    regular_cache: dict[Expr, DFA] = {}

    def resolve_regular(ref: Ref):
        if ref.name in recursive:
            raise fail(ref.offset, f"rule '{ref.name}' is recursive, so it cannot be used inside "
                                   "except!() or an early-end regex")
        return "inline", rules[ref.name]

    def regular(expr: Expr) -> DFA:
        dfa = regular_cache.get(expr)
        if dfa is None:
            try:
                if isinstance(expr, Except):
                    dfa = except_dfa(expr.inner, expr.max_chars, resolve_regular, regular)
                else:
                    dfa = early_end_dfa(expr.inner, resolve_regular, regular)
            except GrammarError:
                raise
            except AutomatonTooLarge as exc:
                raise fail(expr.offset, str(exc)) from None
            except ValueError as exc:
                raise fail(expr.offset, str(exc)) from None
            regular_cache[expr] = dfa
        return dfa

    def resolve_machine(ref: Ref):
        i = index.get(ref.name)
        if i is not None:
            return "call", i
        return "inline", rules[ref.name]

    dfas: list[DFA] = []
    for name in machine_names:
        check_stop()
        try:
            nfa = NFA()
            builder = Builder(nfa, resolve_machine, regular)
            s, e = builder.frag(rules[name])
            dfas.append(determinize(nfa, s, e))
        except AutomatonTooLarge as exc:
            raise fail(offsets.get(name, -1), f"rule '{name}': {exc}") from None

    productive = _productive(dfas)
    if not productive[0]:
        raise fail(offsets.get(start, -1), f"the start rule '{start}' matches no finite text")
    machines = []
    for i, (name, dfa) in enumerate(zip(machine_names, dfas)):
        machines.append(_finish_machine(i, name, dfa, productive))
    nullable = _nullable(machines)
    return CompiledRules(machines, nullable, 0)


def _productive(dfas: list[DFA]) -> list[bool]:
    productive = [False] * len(dfas)
    changed = True
    while changed:
        changed = False
        for x, dfa in enumerate(dfas):
            if productive[x]:
                continue
            seen = {dfa.start}
            todo = [dfa.start]
            while todo:
                s = todo.pop()
                if dfa.accept[s]:
                    productive[x] = changed = True
                    break
                nxt = list(dfa.trans[s].values())
                nxt += [t for y, t in dfa.calls[s].items() if productive[y]]
                for t in nxt:
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
    return productive


def _finish_machine(index: int, name: str, dfa: DFA, productive: list[bool]) -> Machine:
    n = len(dfa)
    calls = [{y: t for y, t in dfa.calls[s].items() if productive[y]} for s in range(n)]
    # co-accessible states (can still reach an accepting state)
    rev: list[list[int]] = [[] for _ in range(n)]
    for s in range(n):
        for t in dfa.trans[s].values():
            rev[t].append(s)
        for t in calls[s].values():
            rev[t].append(s)
    live = [False] * n
    todo = [s for s in range(n) if dfa.accept[s]]
    for s in todo:
        live[s] = True
    while todo:
        t = todo.pop()
        for s in rev[t]:
            if not live[s]:
                live[s] = True
                todo.append(s)
    # reachable live states from the start, numbered from 1 (0 = dead)
    order = [dfa.start]
    num = {dfa.start: 1}
    i = 0
    while i < len(order):
        s = order[i]
        i += 1
        for t in itertools.chain(dfa.trans[s].values(), calls[s].values()):
            if live[t] and t not in num:
                num[t] = len(order) + 1
                order.append(t)
    rows = [dict() for _ in range(len(order) + 1)]
    crows = [dict() for _ in range(len(order) + 1)]
    acc = [False] * (len(order) + 1)
    for s in order:
        k = num[s]
        rows[k] = {c: num[t] for c, t in dfa.trans[s].items() if live[t]}
        crows[k] = {y: num[t] for y, t in calls[s].items() if live[t]}
        acc[k] = dfa.accept[s]
    rows, crows, acc, start = _merge_equivalent(rows, crows, acc, 1, len(dfa.classes))
    n2 = len(rows)
    n_classes = len(dfa.classes)
    cls_table = np.zeros((n2, n_classes), dtype=np.int32)
    for k, row in enumerate(rows):
        for c, t in row.items():
            cls_table[k, c] = t
    byte_class = np.zeros(256, dtype=np.intp)
    for c, mask in enumerate(dfa.classes):
        b = 0
        while mask:
            if mask & 1:
                byte_class[b] = c
            mask >>= 1
            b += 1
    table = np.ascontiguousarray(cls_table[:, byte_class])
    call_tuples = [tuple(sorted(c.items())) for c in crows]
    return Machine(index, name, start, table, np.array(acc, dtype=bool), call_tuples)


def _merge_equivalent(rows, crows, acc, start, n_classes):
    """Merge states with identical behaviour, iterating "same acceptance and same
    successors" from the finest partition until stable (sound, cheap, and enough to
    fold the duplicated suffixes that subset construction leaves)."""
    n = len(rows)
    called = sorted({y for c in crows for y in c})
    col = {y: n_classes + i for i, y in enumerate(called)}
    succ = np.zeros((n, n_classes + len(called)), dtype=np.int64)
    for s, row in enumerate(rows):
        for c, t in row.items():
            succ[s, c] = t
        for y, t in crows[s].items():
            succ[s, col[y]] = t
    accept = np.array(acc, dtype=np.int64)
    block = np.arange(n, dtype=np.int64)
    count = n
    weights = np.random.default_rng(12345).integers(1, 2**62, size=succ.shape[1] + 1,
                                                     dtype=np.int64) | 1
    for _ in range(256):
        sig = np.concatenate([accept[:, None], block[succ]], axis=1)
        with np.errstate(over="ignore"):
            hashed = sig @ weights  # wraps around: a 64-bit fingerprint of each row
        _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        if not (sig == sig[first[inverse]]).all():  # fingerprint collision: exact pass
            _, inverse = np.unique(sig, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
        new_count = int(inverse.max()) + 1
        block = inverse
        if new_count == count:
            break
        count = new_count
    if count == n:
        return rows, crows, acc, start
    # renumber blocks: the dead state's block becomes 0, others by first occurrence
    num = {int(block[0]): 0}
    reps = [0]
    for s in range(1, n):
        b = int(block[s])
        if b not in num:
            num[b] = len(reps)
            reps.append(s)
    m = [num[int(b)] for b in block]
    out_rows = [{c: m[t] for c, t in rows[s].items()} for s in reps]
    out_crows = [{y: m[t] for y, t in crows[s].items()} for s in reps]
    out_acc = [acc[s] for s in reps]
    return out_rows, out_crows, out_acc, m[start]


def _nullable(machines: list[Machine]) -> list[bool]:
    nullable = [False] * len(machines)
    changed = True
    while changed:
        changed = False
        for m in machines:
            if nullable[m.index]:
                continue
            seen = {m.start}
            todo = [m.start]
            while todo:
                s = todo.pop()
                if m.accept_l[s]:
                    nullable[m.index] = changed = True
                    break
                for y, t in m.calls[s]:
                    if nullable[y] and t not in seen:
                        seen.add(t)
                        todo.append(t)
    return nullable


__all__ = ["CompiledRules", "Machine", "compile_rules", "eliminate_self_recursion"]
