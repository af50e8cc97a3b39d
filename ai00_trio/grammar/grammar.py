"""Compiled grammars and recognizer states.

The recognizer is an Earley parser whose items are (machine, DFA state, origin
column). Columns and states are hash-consed: two states with the same future are
the same object, so per-state caches (next state per byte, token masks) are hit
whenever generation comes back to an equivalent position.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import weakref
from collections import OrderedDict

import numpy as np

from .compiler import CompiledRules, Machine
from .errors import GrammarRejected, MaskDeadline
from .trie import VocabTrie

_ids = itertools.count(1)
INTERN_LIMIT = 50_000  # canonical states/columns kept per grammar before the caches reset
MASK_CACHE = 4096  # token masks kept per (grammar, vocabulary)
WALK_CACHE = 4096  # root walks kept per (grammar, vocabulary)


class _Column:
    """An Earley column, reduced to the items waiting for a rule to complete:
    waiting[rule] = ((machine, state after the call, origin column), ...)."""

    __slots__ = ("waiting", "key")

    def __init__(self) -> None:
        self.waiting: dict[int, tuple] = {}
        self.key = 0


_ROOT = _Column()
_ROOT.key = -2


class GrammarState:
    """Where the recognizer stands after some bytes. Immutable and shared: "cloning"
    is free, and advance() returns another (canonical) state."""

    __slots__ = ("grammar", "scan", "complete", "key", "_next", "__weakref__")

    def __init__(self, grammar: Grammar, scan: tuple, complete: bool) -> None:
        self.grammar = grammar
        self.scan = scan  # ((machine, state, origin column), ...) items that read bytes
        self.complete = complete
        self.key = next(_ids)
        self._next: dict[int, GrammarState] = {}

    # -- queries -----------------------------------------------------------
    def is_complete(self) -> bool:
        """The bytes so far form a complete sentence of the grammar."""
        return self.complete

    def can_continue(self) -> bool:
        """Some non-empty byte string can follow."""
        return bool(self.scan)

    def is_finished(self) -> bool:
        """Complete, and nothing else can follow: generation must stop."""
        return self.complete and not self.scan

    def is_dead(self) -> bool:
        return not self.complete and not self.scan

    # -- stepping ----------------------------------------------------------
    def step(self, byte: int) -> GrammarState:
        """The state after one more byte (the dead state if it is not allowed)."""
        nxt = self._next.get(byte)
        if nxt is None:
            with self.grammar._lock:
                nxt = self._next.get(byte)
                if nxt is None:
                    nxt = self.grammar._scan(self, byte)
                    self._next[byte] = nxt
        return nxt

    def accepts(self, data: bytes) -> bool:
        """Whether `data` can follow (is a prefix of some continuation)."""
        st = self
        for b in data:
            st = st.step(b)
            if st.is_dead():
                return False
        return True

    def advance(self, data: bytes) -> GrammarState:
        """The state after `data` (a token's bytes); GrammarRejected if not allowed.
        b"" (end-of-text) returns the same state."""
        st = self
        for b in data:
            st = st.step(b)
            if st.is_dead():
                raise GrammarRejected(f"grammar does not allow {data!r} here")
        return st

    def allowed(self, trie: VocabTrie, deadline: float = math.inf) -> np.ndarray:
        """Bool mask over the vocabulary of the tokens that may come next. The
        end-of-text id is set exactly when the grammar is complete. Past `deadline`
        (time.monotonic()) the walk stops with MaskDeadline, so a worker thread that
        computes it ends, and frees the grammar's lock, soon after."""
        grammar = self.grammar
        with grammar._lock:
            return grammar._context(trie).mask(self, deadline)

    def allowed_ids(self, trie: VocabTrie) -> np.ndarray:
        """Ids of the allowed tokens (np.flatnonzero of allowed())."""
        return np.flatnonzero(self.allowed(trie))

    def advance_token(self, trie: VocabTrie, token_id: int) -> GrammarState:
        """advance() by a token id of `trie`'s vocabulary. The end-of-text id is
        accepted only when complete (and returns the same state)."""
        if token_id == trie.eos_id:
            if not self.complete:
                raise GrammarRejected("end-of-text before the grammar is complete")
            return self
        data = trie.token_bytes[token_id]
        if not data:
            raise GrammarRejected(f"token {token_id} has no bytes")
        return self.advance(data)

    def shortest_completion(self) -> bytes | None:
        """A shortest byte string that makes the input complete (b"" when it
        already is; None for the dead state). Useful to close a document that ran
        out of tokens."""
        if self.complete:
            return b""
        with self.grammar._lock:
            return self.grammar._shortest_completion(self)

    def __repr__(self) -> str:
        flags = "complete" if self.complete else "partial"
        return f"<GrammarState #{self.key} {flags} items={len(self.scan)}>"


class Grammar:
    """A compiled grammar (vocabulary independent). `start()` gives the initial state."""

    def __init__(self, rules: CompiledRules, source: str | None = None,
                 dialect: str | None = None) -> None:
        self.machines: list[Machine] = rules.machines
        self.nullable = rules.nullable
        self.source = source
        self.dialect = dialect
        self._calls = [m.calls for m in self.machines]
        self._accept = [m.accept_l for m in self.machines]
        self._has_bytes = [m.has_bytes_l for m in self.machines]
        self._rows = [m.rows for m in self.machines]
        self._starts = [m.start for m in self.machines]
        self._columns: dict[frozenset, _Column] = {}
        self._states: dict[tuple, GrammarState] = {}
        self._derived: dict[tuple, GrammarState] = {}
        self._contexts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._dist = None
        # guards the interning tables and caches: masks may be computed in worker
        # threads while the event loop advances other states of the same grammar
        self._lock = threading.RLock()
        self.dead = GrammarState(self, (), False)
        self._start = self._closure([(rules.start, self._starts[rules.start], _ROOT)])

    @property
    def n_states(self) -> int:
        """Total DFA states over all machines (a size measure)."""
        return sum(m.n_states - 1 for m in self.machines)

    def start(self) -> GrammarState:
        return self._start

    def matches(self, data: str | bytes) -> bool:
        """Whether the whole of `data` is a sentence of the grammar."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        st = self._start
        for b in data:
            st = st.step(b)
            if st.is_dead():
                return False
        return st.complete

    def is_prefix(self, data: str | bytes) -> bool:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self._start.accepts(data)

    # -- Earley core -------------------------------------------------------
    def _scan(self, st: GrammarState, byte: int) -> GrammarState:
        rows = self._rows
        seeds = []
        for m, q, o in st.scan:
            t = rows[m][q][byte]
            if t:
                seeds.append((m, t, o))
        return self._closure(seeds) if seeds else self.dead

    def _closure(self, seeds: list) -> GrammarState:
        calls, accept, starts, nullable = self._calls, self._accept, self._starts, self.nullable
        has_bytes = self._has_bytes
        col = _Column()
        items: set = set()
        stack = list(seeds)
        complete = False
        while stack:
            it = stack.pop()
            if it in items:
                continue
            items.add(it)
            m, q, o = it
            cl = calls[m][q]
            if cl:
                for x, t in cl:
                    stack.append((x, starts[x], col))
                    if nullable[x]:
                        stack.append((m, t, o))
            if accept[m][q]:
                if o is _ROOT:
                    complete = True
                elif o is not col:
                    w = o.waiting.get(m)
                    if w:
                        stack.extend(w)
        scan = [it for it in items if has_bytes[it[0]][it[1]]]
        ckey = None
        if any(it[2] is col for it in scan):
            waiting: dict[int, list] = {}
            for m, q, o in items:
                for x, t in calls[m][q]:
                    waiting.setdefault(x, []).append((m, t, o))
            okey = frozenset(
                (x, m, t, -1 if o is col else o.key)
                for x, lst in waiting.items() for m, t, o in lst
            )
            canon = self._columns.get(okey)
            if canon is None:
                col.waiting = {x: tuple(lst) for x, lst in waiting.items()}
                col.key = next(_ids)
                if len(self._columns) >= INTERN_LIMIT:
                    self._columns.clear()
                self._columns[okey] = col
                canon = col
            else:
                scan = [(m, q, canon if o is col else o) for m, q, o in scan]
            ckey = canon.key
        skey = (frozenset((m, q, o.key) for m, q, o in scan), ckey, complete)
        st = self._states.get(skey)
        if st is None:
            if not scan and not complete:
                return self.dead
            st = GrammarState(self, tuple(sorted(scan, key=lambda it: (it[0], it[1], it[2].key))),
                              complete)
            if len(self._states) >= INTERN_LIMIT:
                self._reset_caches()
            self._states[skey] = st
        return st

    def _reset_caches(self) -> None:
        """Forget the interned states (bounding memory for recursive grammars, whose
        stacks can make new states forever). States still held elsewhere keep
        working; equal states created later are simply not shared with them."""
        for st in self._states.values():
            st._next.clear()
        if hasattr(self, "_start"):
            self._start._next.clear()
        self._states.clear()
        self._columns.clear()
        self._derived.clear()

    def _derive(self, m: int, q: int, o: _Column) -> GrammarState:
        """The state of the single item (m, q, o) after its closure."""
        key = (m, q, o)
        st = self._derived.get(key)
        if st is None:
            st = self._derived[key] = self._closure([key])
        return st

    # -- shortest completions ----------------------------------------------
    def _distances(self):
        """Per machine: min length of its language, and per state the distance to
        acceptance plus the first step of a shortest path (("b", byte, target) or
        ("c", rule, target)); byte edges weigh 1, calls the callee's min length."""
        if self._dist is not None:
            return self._dist
        inf = float("inf")
        machines = self.machines
        minlen = [inf] * len(machines)
        tables = [None] * len(machines)
        changed = True
        while changed:
            changed = False
            for m in machines:
                dist, step = _reverse_dijkstra(m, minlen)
                tables[m.index] = (dist, step)
                if dist[m.start] < minlen[m.index]:
                    minlen[m.index] = dist[m.start]
                    changed = True
        self._dist = (minlen, tables)
        return self._dist

    def _machine_path(self, m: int, q: int, out: bytearray) -> None:
        _, tables = self._distances()
        dist, step = tables[m]
        while not (self._accept[m][q] and dist[q] == 0):
            kind, sym, target = step[q]
            if kind == "b":
                out.append(sym)
            else:
                self._machine_path(sym, self._starts[sym], out)
            q = target

    def _shortest_completion(self, st: GrammarState) -> bytes | None:
        _, tables = self._distances()
        memo: dict[tuple[int, int], tuple] = {}

        def up(o: _Column, m: int) -> tuple:
            # cheapest way to finish the parents once rule m completes at origin o
            if o is _ROOT:
                return (0, None)
            key = (o.key, m)
            if key in memo:
                return memo[key]
            memo[key] = (float("inf"), None)  # cycles in the stack graph
            best = (float("inf"), None)
            for m2, t, o2 in o.waiting.get(m, ()):
                cost = tables[m2][0][t] + up(o2, m2)[0]
                if cost < best[0]:
                    best = (cost, (m2, t, o2))
            memo[key] = best
            return best

        best = (float("inf"), None)
        for m, q, o in st.scan:
            cost = tables[m][0][q] + up(o, m)[0]
            if cost < best[0]:
                best = (cost, (m, q, o))
        if best[1] is None:
            return None
        out = bytearray()
        item = best[1]
        while item is not None:
            m, q, o = item
            self._machine_path(m, q, out)
            item = up(o, m)[1] if o is not _ROOT else None
        return bytes(out)

    def _context(self, trie: VocabTrie) -> _VocabContext:
        ctx = self._contexts.get(trie)
        if ctx is None:
            ctx = self._contexts[trie] = _VocabContext(self, trie)
        return ctx


def _reverse_dijkstra(machine: Machine, minlen: list) -> tuple[list, list]:
    """Distance from every state of `machine` to an accepting state."""
    import heapq

    n = machine.n_states
    rows = machine.rows
    rev: list[list[tuple]] = [[] for _ in range(n)]
    for s in range(1, n):
        seen: set[int] = set()
        for b, t in enumerate(rows[s]):
            if t and t not in seen:
                seen.add(t)
                rev[t].append((1, s, ("b", b, t)))
        for y, t in machine.calls[s]:
            if minlen[y] != float("inf"):
                rev[t].append((minlen[y], s, ("c", y, t)))
    dist = [float("inf")] * n
    step: list = [None] * n
    heap = []
    for s in range(1, n):
        if machine.accept_l[s]:
            dist[s] = 0
            heap.append((0, s))
    heapq.heapify(heap)
    while heap:
        d, t = heapq.heappop(heap)
        if d > dist[t]:
            continue
        for w, s, edge in rev[t]:
            if d + w < dist[s]:
                dist[s] = d + w
                step[s] = edge
                heapq.heappush(heap, (d + w, s))
    return dist, step


class _VocabContext:
    """Token-mask computation for one (grammar, vocabulary) pair, with caches."""

    def __init__(self, grammar: Grammar, trie: VocabTrie) -> None:
        self.grammar = grammar
        self.trie_ref = weakref.ref(trie)
        self.masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.walks: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self.root = np.zeros(1, dtype=np.int32)

    def mask(self, st: GrammarState, deadline: float = math.inf) -> np.ndarray:
        trie = self.trie_ref()
        packed = self.masks.get(st.key)
        if packed is not None:
            self.masks.move_to_end(st.key)
            return np.unpackbits(packed, count=trie.vocab_size).view(bool)
        mask = self.compute(st, trie, deadline)
        self.masks[st.key] = np.packbits(mask)
        if len(self.masks) > MASK_CACHE:
            self.masks.popitem(last=False)
        return mask

    def root_walk(self, trie: VocabTrie, m: int, q: int) -> tuple:
        """(packed token mask, escape nodes, escape states) of machine m's DFA run
        from state q over the whole trie; cached."""
        key = (m, q)
        res = self.walks.get(key)
        if res is None:
            machine = self.grammar.machines[m]
            alive = trie.new_alive()
            en, es = trie.walk_root(machine.flat, machine.escape, q, machine.rows,
                                    machine.escape_l, alive)
            res = (np.packbits(trie.mask_from_alive(alive)), en, es)
            self.walks[key] = res
            if len(self.walks) > WALK_CACHE:
                self.walks.popitem(last=False)
        else:
            self.walks.move_to_end(key)
        return res

    def compute(self, st: GrammarState, trie: VocabTrie, deadline: float = math.inf) -> np.ndarray:
        grammar = self.grammar
        machines = grammar.machines
        packed: np.ndarray | None = None
        pending: list[tuple] = []

        def check_deadline() -> None:
            if time.monotonic() > deadline:
                raise MaskDeadline("the grammar's token mask was not done by its deadline")

        for m, q, o in st.scan:
            check_deadline()
            bits, en, es = self.root_walk(trie, m, q)
            packed = bits.copy() if packed is None else np.bitwise_or(packed, bits, out=packed)
            if len(en):
                pending.append((m, o, en, es))
        alive = None
        while pending:
            check_deadline()
            m, o, en, es = pending.pop()
            for qq in sorted(set(es.tolist())):
                sel = en if len(es) == 1 else en[es == qq]
                derived = grammar._derive(m, qq, o)
                for m2, q2, o2 in derived.scan:
                    if m2 == m and q2 == qq and o2 is o:
                        continue  # its own continuation was part of the walk above
                    if alive is None:
                        alive = trie.new_alive()
                    machine = machines[m2]
                    en2, es2 = trie.walk(machine.flat, machine.escape, sel,
                                         np.full(len(sel), q2, dtype=np.int32),
                                         machine.rows, machine.escape_l, alive)
                    if len(en2):
                        pending.append((m2, o2, en2, es2))
        if packed is None:
            mask = np.zeros(trie.vocab_size, dtype=bool)
        else:
            mask = np.unpackbits(packed, count=trie.vocab_size).view(bool)
        if alive is not None:
            mask |= trie.mask_from_alive(alive)
        if trie.eos_id is not None:
            mask[trie.eos_id] = st.complete
        return mask
