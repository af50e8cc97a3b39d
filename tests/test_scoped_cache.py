"""One prefix cache per initial state: scopes share a PrefixCache but never serve each other."""
from __future__ import annotations

import numpy as np

from ai00_trio.engine.prefix_cache import PrefixCache
from ai00_trio.engine.scoped_cache import ScopedCache


def make_cache() -> PrefixCache:
    return PrefixCache(gpu_budget=1 << 20, host_budget=1 << 20, offload=lambda s: s, size_of=lambda s: 8)


def test_scopes_never_serve_each_other_and_count_real_tokens():
    cache = make_cache()
    zero, tuned = ScopedCache(cache, 0), ScopedCache(cache, 1)
    logits = np.arange(4, dtype=np.float32)
    zero.insert([5, 6, 7], "zero-state", logits)
    assert tuned.lookup([5, 6, 7, 8]) is None
    hit = zero.lookup([5, 6, 7, 8])
    assert hit.length == 3 and hit.state == "zero-state"
    tuned.insert([5, 6], "tuned-state", logits)
    assert tuned.lookup([5, 6, 7]).state == "tuned-state" and tuned.lookup([5, 6, 7]).length == 2
    assert zero.lookup([5, 6, 7]).state == "zero-state"
    stats = cache.stats()
    assert stats.entries == 2 and stats.hits == 4 and stats.misses == 1
    assert stats.hit_tokens == 3 + 2 + 2 + 3  # the scope markers are not counted


def test_scoped_claims_are_per_scope():
    cache = make_cache()
    zero, tuned = ScopedCache(cache, 0), ScopedCache(cache, 1)
    first = zero.claim([1, 2, 3])
    assert first.owner and tuned.claim([1, 2, 3]).owner  # the same tokens from another state: its own work
    joined = zero.claim([1, 2, 3])
    assert not joined.owner
    zero.complete(first, "state", np.zeros(4, np.float32))
    assert joined.done and zero.lookup([1, 2, 3]).length == 3 and tuned.lookup([1, 2, 3]) is None
