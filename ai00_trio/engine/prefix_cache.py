"""A prefix cache of RWKV recurrent states, in two tiers (GPU, then host), plus in-flight claims.

RWKV is an RNN: after tokens t_1..t_n the model holds a recurrent *state* and the *logits* of
the next token. A request whose tokens extend a cached sequence only feeds the remainder from
the cached state; a fully cached prompt samples at once from the cached logits.

This module is a pure data structure (no threads, trio or GPU calls): states are opaque, moved
to the host only through the `offload` callable and measured only through `size_of`.

- Entries live in a radix trie keyed by token ids, so `lookup` costs O(len(tokens)).
- New entries go to the GPU tier. When its bytes exceed `gpu_budget`, the least recently used
  GPU entries are offloaded and become the most recent host entries; when the host bytes exceed
  `host_budget`, the least recently used host entries are evicted. Host entries are not moved
  back: a hit reports `on_gpu=False` and the caller uploads the state itself.
- Cached states and logits are shared with every hit: treat them as read-only (the logits are
  stored as a read-only copy) and copy a state before feeding tokens into it.
- `claim` lets concurrent identical prompts compute once: the first caller owns the claim and
  must `complete` or `abandon` it; the others register a callback (the server wraps it in an
  event) that fires exactly once, with the entry's `Hit` or with None if the owner gave up.

The server's use (server/generation.py): `lookup` the prompt; when it must compute the prompt,
`claim` it and either own the claim (then `complete` it with the state and logits, or `abandon`
it) or wait for its owner's callback; after a generation, `insert` the longer sequence.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np

S = TypeVar("S")
Tokens = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Hit(Generic[S]):
    """A cached prefix: its first `length` tokens give `state` and the next-token `logits`
    (None only when the prompt goes on past it).

    Compared by identity (`eq=False`): comparing numpy logits field by field is ambiguous.
    """

    length: int
    state: S
    logits: np.ndarray | None
    on_gpu: bool


@dataclass(frozen=True)
class CacheStats:
    entries: int
    gpu_bytes: int
    host_bytes: int
    hits: int
    misses: int
    in_flight: int
    hit_tokens: int  # prompt tokens served from cached states instead of prefilled


class _Entry(Generic[S]):
    __slots__ = ("state", "logits", "size", "on_gpu")

    def __init__(self, state: S, logits: np.ndarray | None, size: int, on_gpu: bool) -> None:
        self.state = state
        self.logits = logits
        self.size = size
        self.on_gpu = on_gpu


class _Node:
    """A radix-trie node: `label` is the run of tokens on the edge from `parent`."""

    __slots__ = ("label", "parent", "children", "entry")

    def __init__(self, label: Tokens, parent: _Node | None) -> None:
        self.label = label
        self.parent = parent
        self.children: dict[int, _Node] = {}   # keyed by the first token of the child's label
        self.entry: _Entry | None = None


DoneCallback = Callable[["Hit[S] | None"], None]


class _Flight(Generic[S]):
    """One in-flight computation, shared by the owner's claim and every waiter's claim."""

    __slots__ = ("callbacks", "done", "result")

    def __init__(self) -> None:
        self.callbacks: list[DoneCallback] = []
        self.done = False
        self.result: Hit[S] | None = None

    def finish(self, result: Hit[S] | None) -> None:
        self.done, self.result = True, result
        callbacks, self.callbacks = self.callbacks, []
        errors = []
        for fn in callbacks:           # every callback runs even if an earlier one raises
            try:
                fn(result)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class Claim(Generic[S]):
    """A stake in computing exactly `tokens`: `owner` computes, the others wait on it."""

    __slots__ = ("tokens", "owner", "_flight")

    def __init__(self, tokens: Tokens, owner: bool, flight: _Flight[S]) -> None:
        self.tokens = tokens
        self.owner = owner
        self._flight = flight

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call `fn(hit_or_none)` exactly once when the computation ends (now if it has)."""
        if self._flight.done:
            fn(self._flight.result)
        else:
            self._flight.callbacks.append(fn)

    @property
    def done(self) -> bool:
        return self._flight.done

    @property
    def result(self) -> Hit[S] | None:
        """The completed entry, or None while running or after the owner abandoned."""
        return self._flight.result

    def __repr__(self) -> str:
        return f"Claim(len={len(self.tokens)}, owner={self.owner}, done={self.done})"


class PrefixCache(Generic[S]):
    """Longest-prefix cache of (state, logits) per token sequence, GPU tier then host tier."""

    def __init__(self, gpu_budget: int, host_budget: int, offload: Callable[[S], S],
                 size_of: Callable[[S], int]) -> None:
        self.gpu_budget = gpu_budget
        self.host_budget = host_budget
        self._offload = offload
        self._size_of = size_of
        self._root = _Node((), None)
        self._gpu: OrderedDict[_Node, None] = OrderedDict()    # least recently used first
        self._host: OrderedDict[_Node, None] = OrderedDict()
        self._gpu_bytes = 0
        self._host_bytes = 0
        self._hits = 0
        self._hit_tokens = 0
        self._misses = 0
        self._flights: dict[Tokens, _Flight[S]] = {}

    # --- lookup and insert -------------------------------------------------------------------

    def lookup(self, tokens: Sequence[int], marker: int = 0) -> Hit[S] | None:
        """The longest cached prefix of `tokens` (possibly all of them), or None. The first
        `marker` tokens name a scope (scoped_cache.py): they are not counted as hit tokens."""
        best = self._longest(_key(tokens))
        if best is None:
            self._misses += 1
            return None
        self._hits += 1
        node, depth = best
        self._hit_tokens += depth - marker
        entry = node.entry
        (self._gpu if entry.on_gpu else self._host).move_to_end(node)
        return Hit(depth, entry.state, entry.logits, entry.on_gpu)

    def cached_length(self, tokens: Sequence[int], marker: int = 0) -> int:
        """How long a prefix of `tokens` `lookup` would find (0: none), counting no hit or miss and
        leaving the entries' recency as it is: for choosing where a request goes."""
        best = self._longest(_key(tokens))
        return 0 if best is None else max(best[1] - marker, 0)

    def _longest(self, key: Tokens) -> tuple[_Node, int] | None:
        """The node of the longest prefix of `key` with an entry that can serve it, and its depth."""
        node, depth = self._root, 0
        best: tuple[_Node, int] | None = None
        while True:
            if node.entry is not None and (node.entry.logits is not None or depth < len(key)):
                best = (node, depth)  # an entry without logits serves only longer prompts
            if depth == len(key):
                break
            child = node.children.get(key[depth])
            if child is None or key[depth:depth + len(child.label)] != child.label:
                break
            node, depth = child, depth + len(child.label)
        return best

    def insert(self, tokens: Sequence[int], state: S, logits: np.ndarray | None) -> None:
        """Store (or replace) the entry for exactly `tokens`, then enforce the budgets.
        Without logits (a generation whose tokens the GPU chose), the entry serves only
        prompts that go on past it.

        An entry over `gpu_budget` goes straight to the host; one over both budgets is not
        kept (and any older entry for these tokens is dropped all the same).
        """
        key = _key(tokens)
        if key:
            self._insert(key, state, _frozen(logits))

    def _insert(self, key: Tokens, state: S, logits: np.ndarray | None) -> None:
        entry = _Entry(state, logits, self._size_of(state) + _nbytes(logits), on_gpu=True)
        node = self._path(key)
        self._detach(node)
        node.entry = entry
        if entry.size <= self.gpu_budget:
            self._gpu[node] = None
            self._gpu_bytes += entry.size
            self._shrink_gpu()
        else:
            self._demote(node)

    def clear(self) -> None:
        """Drop every entry (their states came from weights that have changed since); the
        statistics and the claims in flight stay."""
        self._root = _Node((), None)
        self._gpu.clear()
        self._host.clear()
        self._gpu_bytes = self._host_bytes = 0

    def __len__(self) -> int:
        return len(self._gpu) + len(self._host)

    def stats(self) -> CacheStats:
        return CacheStats(len(self), self._gpu_bytes, self._host_bytes, self._hits,
                          self._misses, len(self._flights), self._hit_tokens)

    # --- in-flight claims --------------------------------------------------------------------

    def claim(self, tokens: Sequence[int]) -> Claim[S]:
        """Own the computation of exactly `tokens`, or join the one already in flight."""
        key = _key(tokens)
        if not key:
            raise ValueError("cannot claim an empty token sequence")
        flight = self._flights.get(key)
        if flight is not None:
            return Claim(key, False, flight)
        flight = self._flights[key] = _Flight()
        return Claim(key, True, flight)

    def complete(self, claim: Claim[S], state: S, logits: np.ndarray) -> None:
        """Cache the owner's result and fire the callbacks with its `Hit`.

        The waiters get the state and logits as computed (on the GPU), even if the budgets
        left them out of the cache.
        """
        self._release(claim)
        logits = _frozen(logits)
        try:
            self._insert(claim.tokens, state, logits)
        finally:                        # even if `offload` raised, nobody waits forever
            claim._flight.finish(Hit(len(claim.tokens), state, logits, True))

    def abandon(self, claim: Claim[S]) -> None:
        """Give up an owned claim: waiters are called back with None (and may claim anew)."""
        self._release(claim)
        claim._flight.finish(None)

    def _release(self, claim: Claim[S]) -> None:
        if not claim.owner:
            raise ValueError("only the owner of a claim may complete or abandon it")
        if claim.done:
            raise RuntimeError("claim already completed or abandoned")
        if self._flights.get(claim.tokens) is not claim._flight:
            raise ValueError("claim belongs to another cache")
        del self._flights[claim.tokens]

    # --- budgets -----------------------------------------------------------------------------

    def _shrink_gpu(self) -> None:
        while self._gpu_bytes > self.gpu_budget:
            self._demote(next(iter(self._gpu)))

    def _shrink_host(self) -> None:
        while self._host_bytes > self.host_budget:
            self._evict(next(iter(self._host)))

    def _demote(self, node: _Node) -> None:
        """Move a GPU entry to the host tier (most recent there), or drop it if too big."""
        entry = node.entry
        if self.host_budget <= 0:
            self._evict(node)
            return
        try:
            host_state = self._offload(entry.state)
        except BaseException:
            self._evict(node)
            raise
        self._detach(node)
        entry.state, entry.on_gpu = host_state, False
        entry.size = self._size_of(host_state) + _nbytes(entry.logits)
        node.entry = entry
        if entry.size > self.host_budget:
            self._evict(node)
            return
        self._host[node] = None
        self._host_bytes += entry.size
        self._shrink_host()

    def _evict(self, node: _Node) -> None:
        self._detach(node)
        self._prune(node)

    def _detach(self, node: _Node) -> None:
        """Drop the node's entry from its tier, leaving the trie nodes as they are."""
        entry = node.entry
        if entry is None:
            return
        if node in self._gpu:
            del self._gpu[node]
            self._gpu_bytes -= entry.size
        elif node in self._host:
            del self._host[node]
            self._host_bytes -= entry.size
        node.entry = None

    # --- trie --------------------------------------------------------------------------------

    def _path(self, key: Tokens) -> _Node:
        """The node for exactly `key`, splitting an edge or adding a leaf as needed."""
        node, depth = self._root, 0
        while depth < len(key):
            child = node.children.get(key[depth])
            if child is None:
                leaf = _Node(key[depth:], node)
                node.children[key[depth]] = leaf
                return leaf
            label = child.label
            common = _common_prefix(label, key, depth)
            if common < len(label):                     # split the edge at `common`
                mid = _Node(label[:common], node)
                node.children[key[depth]] = mid
                child.label, child.parent = label[common:], mid
                mid.children[child.label[0]] = child
                child = mid
            node, depth = child, depth + common
        return node

    def _prune(self, node: _Node) -> None:
        """Remove entry-less nodes that lead nowhere and merge pass-through ones upward."""
        while node is not self._root and node.entry is None:
            parent = node.parent
            if not node.children:
                del parent.children[node.label[0]]
                node.parent = None
                node = parent
            elif len(node.children) == 1:
                (child,) = node.children.values()
                child.label = node.label + child.label
                child.parent = parent
                parent.children[child.label[0]] = child
                node.parent, node.children = None, {}
                return
            else:
                return


def _key(tokens: Sequence[int]) -> Tokens:
    return tuple(int(t) for t in tokens)


def _nbytes(logits: np.ndarray | None) -> int:
    return 0 if logits is None else logits.nbytes


def _frozen(logits: np.ndarray | None) -> np.ndarray | None:
    """A read-only copy, so that no caller can change what later hits see."""
    if logits is None:
        return None
    logits = np.array(logits, copy=True)
    logits.flags.writeable = False
    return logits


def _common_prefix(label: Tokens, key: Tokens, start: int) -> int:
    """How many leading tokens of `label` match `key[start:]`."""
    n = min(len(label), len(key) - start)
    i = 0
    while i < n and label[i] == key[start + i]:
        i += 1
    return i
