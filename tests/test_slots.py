"""Slot buffers within the device's limits: states split over several buffers give what one
buffer gives, and slots that do not fit are refused with how many do."""
from __future__ import annotations

import numpy as np
import pytest
import wgpu

from ai00_trio.engine.batch import BatchRuntime
from ai00_trio.engine.runtime import Pick
from ai00_trio.engine.slots import BufferLimits, SlotShape, SlotsDontFit, allocate_slots, plan_slots

SLOTS = 3


def split_limits(model) -> BufferLimits:
    """A binding limit that puts a third of the layers (or one, for 4 layers) in each buffer."""
    layer_bytes = SLOTS * model.arch.state_size * 4
    return BufferLimits(layer_bytes * (model.info.n_layer // 3))


def drive(batch: BatchRuntime, prompts: dict[int, list[int]], n_decode: int) -> list[dict[int, np.ndarray | Pick]]:
    """Prompts in every slot, then greedy decoding: slot 0 by GPU picks chained on by
    themselves, the others by the host's argmax of their logits."""
    outputs = []
    for slot, prompt in prompts.items():
        if slot == 0:
            batch.submit(slot, prompt, want="pick", chain=n_decode)
        else:
            batch.submit(slot, prompt)
    done = {slot: 0 for slot in prompts}
    while batch.busy_slots:
        out = batch.step()
        outputs.append(out)
        for slot, value in out.items():
            done[slot] += 1
            if slot and done[slot] <= n_decode:
                batch.submit(slot, [int(np.argmax(value))])
    return outputs


@pytest.mark.parametrize("version", ["v4", "v5.2", "v6", "v7"])
def test_states_split_over_buffers_equal_one_buffer(version, load_tiny, references):
    """Prefill (prompts of different lengths in chunks, beside decoding) and decode, with the
    states in one buffer and in three or more: the same logits, picks and states."""
    model, ref = load_tiny(version), references(version)
    prompts = {0: ref.tokens("sentence_20"), 1: ref.tokens("paragraph_200")[:70], 2: ref.tokens("quote_in")}
    whole = BatchRuntime(model, max_batch=SLOTS, token_chunk_size=32)
    split = BatchRuntime(model, max_batch=SLOTS, token_chunk_size=32, limits=split_limits(model))
    assert len(whole.runtime.states.groups) == 1
    assert len(split.runtime.states.groups) >= 3
    expected, got = drive(whole, prompts, 6), drive(split, prompts, 6)
    assert len(got) == len(expected) > 6
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for slot in a:
            if isinstance(b[slot], Pick):
                assert a[slot].token == b[slot].token and abs(a[slot].logprob - b[slot].logprob) <= 1e-6
            else:
                assert np.abs(a[slot] - b[slot]).max() <= 1e-6
    for slot in prompts:
        assert np.abs(split.save(slot).to_host() - whole.save(slot).to_host()).max() <= 1e-6


@pytest.mark.parametrize("version", ["v4", "v7"])
def test_a_state_moves_through_every_buffer(version, load_tiny, references):
    """Save the last slot of a split runtime, load it into another: both hold what a single
    sequence's state holds (in the reference package's layout), and decode on from it alike."""
    model, ref = load_tiny(version), references(version)
    prompt = ref.tokens("sentence_20")
    batch = BatchRuntime(model, max_batch=SLOTS, token_chunk_size=64, limits=split_limits(model))
    batch.submit(SLOTS - 1, prompt)
    batch.step()
    alone = model.new_state()
    model.forward(prompt, alone)
    saved = batch.save(SLOTS - 1)
    for got, want in zip(saved.to_numpy(), alone.to_numpy()):
        assert np.abs(got - want).max() <= 1e-4
    batch.load(0, model.state_from_numpy(alone.to_numpy()))
    batch.submit(0, [32])
    batch.submit(SLOTS - 1, [32])
    out = batch.step()
    assert np.array_equal(out[0], out[SLOTS - 1])
    assert np.abs(out[0] - model.forward([32], alone)).max() <= 1e-4


def test_every_tokens_logits_within_the_logits_rows(load_tiny, references):
    """A binding that holds fewer logits rows than a step's tokens: a perplexity request is fed
    that many tokens a step, beside a decoding slot, and gets every token's logits."""
    model, ref = load_tiny("v4"), references("v4")
    batch = BatchRuntime(model, max_batch=SLOTS, token_chunk_size=32, limits=split_limits(model))
    rows = batch.runtime.logit_rows
    assert rows < 32
    tokens = ref.tokens("paragraph_200")[:60]
    batch.submit(0, tokens, want="all")
    batch.submit(1, [84])
    logits = []
    while 0 in batch.busy_slots:
        assert sum(batch.plan().values()) <= 32 and batch.plan()[0] <= rows - 1
        out = batch.step()
        logits.append(out[0])
        if 1 in out:
            batch.submit(1, [int(np.argmax(out[1]))])
    state = model.new_state()
    assert np.abs(np.concatenate(logits) - model.forward(tokens, state, full=True)).max() <= 1e-4


def test_slots_beyond_one_binding_are_refused_with_what_fits(load_tiny):
    model = load_tiny("v7")
    layer = model.arch.state_size * 4
    limits = BufferLimits(5 * layer + 100)
    with pytest.raises(SlotsDontFit, match=r"max_batch 8 does not fit: one layer's state for 8 slots .* "
                                           r"at most 5 slots fit"):
        BatchRuntime(model, max_batch=8, limits=limits)
    assert len(BatchRuntime(model, max_batch=5, token_chunk_size=8, limits=limits).runtime.states.groups) == 12


def test_the_sampling_tables_bound_the_slots_too():
    shape = SlotShape(n_layer=24, layer_floats=1024, n_vocab=65536)  # 4 KiB a layer, 256 KiB a vocab row
    assert plan_slots(shape, 8, BufferLimits(8 << 20)) == 24  # 8 slots: 2 MiB of tables, all layers in one buffer
    with pytest.raises(SlotsDontFit, match=r"the sampling tables .* take 10.0 MiB.*at most 32 slots fit"):
        plan_slots(shape, 40, BufferLimits(8 << 20))


class FakeBuffer:
    def __init__(self, pool: "FakeMemory", size: int) -> None:
        self.pool, self.size = pool, size

    def destroy(self) -> None:
        self.pool.used -= self.size


class FakeMemory:
    """An allocator with `free` bytes that fails as a GPU out of memory does."""

    def __init__(self, free: int) -> None:
        self.free, self.used = free, 0

    def storage(self, nbytes: int) -> FakeBuffer:
        if self.used + nbytes > self.free:
            raise wgpu.GPUOutOfMemoryError("Out of Memory\n\nCaused by:\n  not enough memory left")
        self.used += nbytes
        return FakeBuffer(self, nbytes)


def test_out_of_memory_says_how_many_slots_fit():
    shape = SlotShape(n_layer=24, layer_floats=135168, n_vocab=65536)  # a 1.5B-class RWKV-7
    limits = BufferLimits(2 << 30)
    memory = FakeMemory(free=2 << 30)
    with pytest.raises(SlotsDontFit) as refused:
        allocate_slots(memory, shape, 256, 256, limits)
    fits = max(n for n in range(1, 256)
               if 4 * (n * shape.slot_floats + 256 * 65536 + 2 * n * 65536 + n * 2048) <= 2 << 30)
    message = str(refused.value)
    assert "does not fit in GPU memory" in message and "not enough memory left" in message
    assert f"at most {fits} slots fit" in message
    assert memory.used == 0  # every probe was given back
    buffers = allocate_slots(FakeMemory(free=8 << 30), shape, 256, 256, limits)
    assert [count for _, count, _ in buffers.states.groups] == [12, 12]  # 3.3 GB of states in two bindings
