"""The prefix-state cache: longest-prefix lookup, two-tier LRU budgets, pruning and claims."""
from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest

from ai00_trio.engine.prefix_cache import CacheStats, Hit, PrefixCache

LOGITS = 4                      # floats per logits vector: 16 bytes
LOGIT_BYTES = LOGITS * 4


@dataclass(frozen=True)
class FakeState:
    name: str
    nbytes: int
    where: str = "gpu"


def offload(state: FakeState) -> FakeState:
    assert state.where == "gpu", "offloaded twice"
    return FakeState(state.name, state.nbytes, "host")


def size_of(state: FakeState) -> int:
    return state.nbytes


def logits(value: float = 0.0) -> np.ndarray:
    return np.full(LOGITS, value, np.float32)


def make(gpu_entries: float = 100, host_entries: float = 100, state_bytes: int = 84,
         **kw) -> PrefixCache:
    """A cache whose budgets hold that many entries of `state_bytes` + 16 bytes of logits."""
    entry = state_bytes + LOGIT_BYTES
    return PrefixCache(int(gpu_entries * entry), int(host_entries * entry),
                       kw.get("offload", offload), size_of)


def node_count(cache: PrefixCache) -> int:
    """Trie nodes below the root: eviction must prune the ones that lead nowhere."""
    count, stack = 0, [cache._root]
    while stack:
        node = stack.pop()
        count += len(node.children)
        stack.extend(node.children.values())
    return count


def put(cache: PrefixCache, tokens, name: str | None = None, nbytes: int = 84) -> FakeState:
    state = FakeState(name or "-".join(map(str, tokens)), nbytes)
    cache.insert(tokens, state, logits(len(tokens)))
    return state


def where(cache: PrefixCache, tokens) -> str | None:
    """'gpu', 'host' or None for exactly `tokens` (this refreshes LRU, like any lookup)."""
    hit = cache.lookup(tokens)
    if hit is None or hit.length != len(tokens):
        return None
    assert hit.state.where == ("gpu" if hit.on_gpu else "host")
    return hit.state.where


def check_trie(cache: PrefixCache) -> None:
    """Every leaf holds an entry, every entry-less inner node branches, entries match tiers."""
    entries = 0
    stack = list(cache._root.children.values())
    while stack:
        node = stack.pop()
        assert node.label and node.parent.children[node.label[0]] is node
        if node.entry is not None:
            entries += 1
        else:
            assert len(node.children) >= 2, "pass-through or dead node left in the trie"
        stack.extend(node.children.values())
    assert entries == len(cache)


# --- lookup ----------------------------------------------------------------------------------

def test_longest_prefix_lookup():
    cache = make()
    a = put(cache, [1, 2])
    b = put(cache, [1, 2, 3, 4])
    put(cache, [5])

    exact = cache.lookup([1, 2, 3, 4])
    assert isinstance(exact, Hit)
    assert (exact.length, exact.state, exact.on_gpu) == (4, b, True)
    np.testing.assert_array_equal(exact.logits, logits(4))

    assert cache.lookup([1, 2, 3, 4, 7, 8]).state is b          # extension
    assert cache.lookup(np.array([1, 2, 3, 4, 7])).length == 4   # numpy token ids work too
    assert cache.lookup([1, 2]).state is a
    mid = cache.lookup([1, 2, 3])                                # ends mid-way along an edge
    assert (mid.length, mid.state) == (2, a)
    diverge = cache.lookup([1, 2, 3, 5, 4])                      # diverges mid-way
    assert (diverge.length, diverge.state) == (2, a)
    assert cache.lookup([1]) is None                             # shorter than any entry
    assert cache.lookup([2, 1]) is None
    assert cache.lookup([9, 1, 2]) is None
    assert cache.lookup([]) is None
    assert cache.lookup([5, 5, 5]).length == 1
    check_trie(cache)


def test_entry_without_logits_serves_only_longer_prompts():
    """A generation decoded by GPU picks leaves its state but no logits: a later turn that goes
    on past it resumes from it; the same tokens exactly fall back to a shorter entry."""
    cache = make()
    shorter = put(cache, [1, 2])
    state = FakeState("picked", 84)
    cache.insert([1, 2, 3, 4], state, None)
    assert cache.lookup([1, 2, 3, 4, 5]).state is state
    exact = cache.lookup([1, 2, 3, 4])
    assert (exact.length, exact.state) == (2, shorter)
    assert exact.logits is not None
    assert cache.stats().gpu_bytes == 2 * 84 + LOGIT_BYTES
    check_trie(cache)


def test_lookup_without_shorter_entry_finds_nothing_mid_way():
    cache = make()
    put(cache, [1, 2, 3, 4])
    assert cache.lookup([1, 2, 3]) is None
    assert cache.lookup([1, 2, 9, 4]) is None


def test_empty_tokens_are_not_cached():
    cache = make()
    cache.insert([], FakeState("empty", 10), logits())
    assert len(cache) == 0 and node_count(cache) == 0
    with pytest.raises(ValueError):
        cache.claim([])


def test_insert_replaces():
    cache = make()
    put(cache, [1, 2, 3], "old", nbytes=84)
    new = put(cache, [1, 2, 3], "new", nbytes=184)
    assert len(cache) == 1
    assert cache.lookup([1, 2, 3]).state is new
    assert cache.stats().gpu_bytes == 184 + LOGIT_BYTES
    check_trie(cache)


def test_logits_are_read_only_copies():
    cache = make()
    mine = logits(1.0)
    cache.insert([1], FakeState("s", 84), mine)
    mine[:] = 7.0
    hit = cache.lookup([1])
    np.testing.assert_array_equal(hit.logits, logits(1.0))
    with pytest.raises(ValueError):
        hit.logits[0] = 3.0


# --- budgets ---------------------------------------------------------------------------------

def test_lru_offload_to_host_then_host_eviction():
    cache = make(gpu_entries=2, host_entries=2)
    put(cache, [1])
    put(cache, [2])
    assert where(cache, [1]) == "gpu"             # [1] is now more recent than [2]
    put(cache, [3])                               # GPU over budget: LRU [2] goes to host
    assert cache.stats() == CacheStats(3, 200, 100, 1, 0, 0, 1)
    assert where(cache, [2]) == "host"
    assert where(cache, [1]) == "gpu" and where(cache, [3]) == "gpu"

    put(cache, [4])                               # GPU order was [1], [3]: [1] goes to host
    assert where(cache, [1]) == "host"            # host order: [2], [1] → now [2] is LRU
    put(cache, [5])                               # [3] to host; host over budget: evict [2]
    assert where(cache, [2]) is None
    assert [where(cache, [t]) for t in (1, 3, 4, 5)] == ["host", "host", "gpu", "gpu"]
    s = cache.stats()
    assert (s.entries, s.gpu_bytes, s.host_bytes) == (4, 200, 200)
    check_trie(cache)


def test_host_hit_refreshes_host_lru():
    cache = make(gpu_entries=1, host_entries=2)
    for t in (1, 2, 3):
        put(cache, [t])                           # GPU: [3]; host: [1], [2]
    assert where(cache, [1]) == "host"            # host order now [2], [1]
    put(cache, [4])                               # [3] to host, evicting [2]
    assert [where(cache, [t]) for t in (1, 2, 3, 4)] == ["host", None, "host", "gpu"]


def test_offloaded_size_is_measured_on_host_state():
    def shrink(state: FakeState) -> FakeState:
        return FakeState(state.name, state.nbytes // 4, "host")

    cache = PrefixCache(100, 1000, shrink, size_of)
    put(cache, [1], nbytes=80)
    put(cache, [2], nbytes=80)
    assert cache.stats().gpu_bytes == 96 and cache.stats().host_bytes == 20 + LOGIT_BYTES


def test_zero_host_budget_drops_without_offloading():
    calls = []
    cache = PrefixCache(100, 0, lambda s: calls.append(s) or s, size_of)
    put(cache, [1], nbytes=80)
    put(cache, [2], nbytes=80)
    assert calls == [] and len(cache) == 1 and where(cache, [2]) == "gpu"
    assert node_count(cache) == 1


def test_oversize_entries():
    offloaded = []

    def track(state: FakeState) -> FakeState:
        offloaded.append(state.name)
        return offload(state)

    cache = PrefixCache(200, 500, track, size_of)
    put(cache, [1], nbytes=84)
    put(cache, [2], nbytes=84)
    # bigger than the GPU budget, fits the host: goes straight there, GPU entries untouched
    put(cache, [3, 3], "big", nbytes=300)
    assert offloaded == ["big"]
    assert [where(cache, t) for t in ([1], [2], [3, 3])] == ["gpu", "gpu", "host"]
    # bigger than both budgets: not kept, nothing else disturbed, no trie node left behind
    nodes = node_count(cache)
    put(cache, [4, 4, 4], "huge", nbytes=1000)
    assert cache.lookup([4, 4, 4]) is None and len(cache) == 3
    assert node_count(cache) == nodes
    assert cache.stats().gpu_bytes == 200 and cache.stats().host_bytes == 316
    # replacing an entry by an oversize one drops the old entry
    put(cache, [1], "huge", nbytes=1000)
    assert cache.lookup([1]) is None and len(cache) == 2
    check_trie(cache)


def test_oversize_for_gpu_with_zero_host_budget_is_not_kept():
    cache = PrefixCache(50, 0, offload, size_of)
    put(cache, [1, 2], nbytes=84)
    assert len(cache) == 0 and node_count(cache) == 0


def test_failed_offload_drops_the_victim_and_keeps_the_cache_consistent():
    def broken(state: FakeState) -> FakeState:
        raise RuntimeError("device lost")

    cache = make(gpu_entries=1, host_entries=5, offload=broken)
    put(cache, [1, 2])
    with pytest.raises(RuntimeError):
        put(cache, [1, 3])
    assert cache.lookup([1, 2]) is None and where(cache, [1, 3]) == "gpu"
    assert cache.stats().gpu_bytes == 100 and len(cache) == 1
    check_trie(cache)


# --- pruning ---------------------------------------------------------------------------------

def test_radix_trie_splits_and_merges():
    cache = make(gpu_entries=2, host_entries=0)
    put(cache, [1, 2, 3, 4])
    assert node_count(cache) == 1
    put(cache, [1, 2, 5, 6])                      # split: [1, 2] → {[3, 4], [5, 6]}
    assert node_count(cache) == 3
    put(cache, [7])                               # evicts [1, 2, 3, 4]: [1, 2] merges back
    assert node_count(cache) == 2
    assert cache.lookup([1, 2, 5, 6, 9]).length == 4
    assert cache.lookup([1, 2, 3, 4]) is None
    check_trie(cache)
    put(cache, [8])
    put(cache, [9])                               # evicts everything but [8] and [9]
    assert node_count(cache) == 2
    check_trie(cache)


def test_eviction_prunes_dead_nodes():
    cache = make(gpu_entries=3, host_entries=3)
    rng = random.Random(1)
    for _ in range(500):
        put(cache, [rng.randrange(50) for _ in range(rng.randrange(1, 40))])
        check_trie(cache)
    assert len(cache) == 6
    assert node_count(cache) <= 2 * len(cache)


# --- claims ----------------------------------------------------------------------------------

def test_claim_complete_fires_callbacks_once():
    cache = make()
    owner = cache.claim([1, 2, 3])
    waiter = cache.claim([1, 2, 3])
    other = cache.claim([1, 2])                   # a different sequence: its own owner
    assert owner.owner and not waiter.owner and other.owner
    assert cache.stats().in_flight == 2

    got = []
    waiter.add_done_callback(got.append)
    waiter.add_done_callback(got.append)
    assert got == [] and not waiter.done
    state = FakeState("s", 84)
    cache.complete(owner, state, logits(3))
    assert len(got) == 2 and got[0] is got[1]
    assert (got[0].length, got[0].state, got[0].on_gpu) == (3, state, True)
    assert waiter.done and waiter.result is got[0]
    late = []
    waiter.add_done_callback(late.append)         # after completion: called at once
    assert late == [got[0]]
    assert cache.lookup([1, 2, 3, 4]).state is state
    assert cache.stats().in_flight == 1

    with pytest.raises(RuntimeError):
        cache.complete(owner, state, logits(3))
    with pytest.raises(RuntimeError):
        cache.abandon(owner)
    with pytest.raises(ValueError):
        cache.complete(waiter, state, logits(3))
    with pytest.raises(ValueError):
        cache.abandon(waiter)
    assert len(got) == 2

    assert cache.claim([1, 2, 3]).owner            # finished: the next claim owns anew


def test_abandon_wakes_waiters_with_none():
    cache = make()
    owner = cache.claim([4, 5])
    waiter = cache.claim([4, 5])
    got, reclaimed = [], []
    waiter.add_done_callback(got.append)
    # a waiter woken with None may claim again, from inside its callback
    waiter.add_done_callback(lambda hit: reclaimed.append(cache.claim([4, 5])))
    cache.abandon(owner)
    assert got == [None] and waiter.done and waiter.result is None
    assert reclaimed[0].owner
    assert len(cache) == 0
    with pytest.raises(RuntimeError):
        cache.abandon(owner)
    with pytest.raises(RuntimeError):
        cache.complete(owner, FakeState("s", 1), logits())


def test_claim_from_another_cache_is_refused():
    a, b = make(), make()
    claim = a.claim([1])
    b.claim([1])
    with pytest.raises(ValueError):
        b.complete(claim, FakeState("s", 1), logits())
    a.abandon(claim)


def test_a_raising_callback_does_not_starve_the_others():
    cache = make()
    owner = cache.claim([1])
    waiter = cache.claim([1])
    got = []

    def bad(hit):
        raise KeyError("boom")

    waiter.add_done_callback(bad)
    waiter.add_done_callback(got.append)
    with pytest.raises(KeyError):
        cache.abandon(owner)
    assert got == [None] and cache.stats().in_flight == 0


def test_complete_wakes_waiters_even_if_offload_fails():
    def broken(state):
        raise RuntimeError("device lost")

    cache = make(gpu_entries=1, offload=broken)
    put(cache, [9])
    owner = cache.claim([1])
    got = []
    cache.claim([1]).add_done_callback(got.append)
    with pytest.raises(RuntimeError):
        cache.complete(owner, FakeState("s", 84), logits())
    assert len(got) == 1 and got[0].length == 1
    assert cache.stats().in_flight == 0


def test_stats_count_hits_and_misses():
    cache = make()
    assert cache.stats() == CacheStats(0, 0, 0, 0, 0, 0, 0)
    put(cache, [1, 2])
    cache.lookup([1, 2, 3])
    cache.lookup([1, 2])
    cache.lookup([3])
    cache.lookup([1])
    assert cache.stats() == CacheStats(1, 100, 0, 2, 2, 0, 4)  # 2 + 2 tokens served


# --- randomized, against a brute-force reference ---------------------------------------------

class Reference:
    """The same policy, with plain lists and a linear scan for the longest prefix."""

    def __init__(self, gpu_budget: int, host_budget: int) -> None:
        self.gpu_budget, self.host_budget = gpu_budget, host_budget
        self.gpu: OrderedDict[tuple, tuple[str, int, int]] = OrderedDict()   # name, sizes
        self.host: OrderedDict[tuple, tuple[str, int]] = OrderedDict()

    def insert(self, key: tuple, name: str, gpu_size: int, host_size: int) -> None:
        self.gpu.pop(key, None)
        self.host.pop(key, None)
        if gpu_size <= self.gpu_budget:
            self.gpu[key] = (name, gpu_size, host_size)
            while sum(v[1] for v in self.gpu.values()) > self.gpu_budget:
                old, (old_name, _, old_host) = next(iter(self.gpu.items()))
                del self.gpu[old]
                self.to_host(old, old_name, old_host)
        else:
            self.to_host(key, name, host_size)

    def to_host(self, key: tuple, name: str, host_size: int) -> None:
        if self.host_budget > 0 and host_size <= self.host_budget:
            self.host[key] = (name, host_size)
            while sum(v[1] for v in self.host.values()) > self.host_budget:
                del self.host[next(iter(self.host))]

    def lookup(self, key: tuple):
        found = [k for k in list(self.gpu) + list(self.host) if key[:len(k)] == k]
        if not found:
            return None
        best = max(found, key=len)
        tier = self.gpu if best in self.gpu else self.host
        tier.move_to_end(best)
        return len(best), tier[best][0], tier is self.gpu


@pytest.mark.parametrize("seed", range(8))
def test_random_against_brute_force(seed):
    rng = random.Random(seed)

    def halve(state: FakeState) -> FakeState:
        return FakeState(state.name, state.nbytes // 2, "host")

    gpu_budget, host_budget = rng.choice([(300, 400), (500, 150), (200, 0), (1000, 1000)])
    cache = PrefixCache(gpu_budget, host_budget, halve, size_of)
    ref = Reference(gpu_budget, host_budget)

    def random_tokens() -> tuple:
        return tuple(rng.randrange(3) for _ in range(rng.randrange(0, 9)))

    for step in range(600):
        key = random_tokens()
        if rng.random() < 0.45:
            nbytes = rng.choice([20, 50, 84, 150, 400, 900])
            cache.insert(key, FakeState(f"s{step}", nbytes), logits())
            if key:
                ref.insert(key, f"s{step}", nbytes + LOGIT_BYTES, nbytes // 2 + LOGIT_BYTES)
        else:
            hit, want = cache.lookup(list(key)), ref.lookup(key)
            got = None if hit is None else (hit.length, hit.state.name, hit.on_gpu)
            assert got == want, f"step {step}: lookup {key}"
        s = cache.stats()
        assert s.entries == len(ref.gpu) + len(ref.host)
        assert s.gpu_bytes == sum(v[1] for v in ref.gpu.values()) <= gpu_budget
        assert s.host_bytes == sum(v[1] for v in ref.host.values()) <= host_budget
        check_trie(cache)
