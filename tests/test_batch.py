"""Batched runtime: mixed batches give each sequence exactly what it gets alone."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ai00_trio.engine.batch import BatchRuntime
from ai00_trio.gpu.tuning import DEFAULT_TUNING, KernelTuning

TOLERANCE = 1e-4  # different kernel paths (tiled vs. per-token matmul) round differently
HALF_ULPS = 3  # where the tiled kernel multiplies f16 weights in f16 (HALF_MATH): f16 spacings at the largest |logit|


def run_alone(model, prompt: list[int], n_decode: int, tuning: KernelTuning | None = None) -> list[np.ndarray]:
    """Reference: the prompt, then greedy decoding, one sequence at a time (with `tuning`'s
    kernels: a one-slot batch, prompts in the model's chunks)."""
    if tuning is None:
        state = model.new_state()
        logits = [model.forward(prompt, state)]
        for _ in range(n_decode):
            logits.append(model.forward([int(np.argmax(logits[-1]))], state))
        return logits
    alone = BatchRuntime(model, max_batch=1, token_chunk_size=model.chunk_size, tuning=tuning)
    alone.submit(0, prompt)
    logits = []
    while len(logits) <= n_decode:
        out = alone.step()
        if 0 in out:
            logits.append(out[0])
            alone.submit(0, [int(np.argmax(out[0]))])
    return logits


@pytest.mark.parametrize("version", ["v5.2", "v6", "v7"])
def test_mixed_batch_equals_each_sequence_alone(version, load_tiny, references):
    check_mixed_batch(load_tiny(version), references(version))


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_mixed_batch_through_the_batched_decode_kernel(version, load_tiny, references):
    """The same with fp16 weights and matmul_rows taking every matmul of 2 tokens or more (the
    tiny models' rows are too short for it otherwise)."""
    tuning = replace(DEFAULT_TUNING, rows_min_k4=8, rows_min_tokens=2, tiled_half=False)
    batch = check_mixed_batch(load_tiny(version, precision="fp16"), references(version), tuning=tuning)
    labels = {label for graph in batch.runtime._graphs.values() for label in graph.labels}
    assert any(label.startswith("matmul_rows") for label in labels)


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_mixed_batch_with_f16_multiply_adds(version, load_tiny, references, gpu):
    """fp16 weights as served by default: steps of 32 tokens or more multiply in f16 (HALF_MATH),
    fewer in f32, so a sequence's logits depend on how its tokens were grouped into steps: by a
    few of f16's spacings at the largest logit (0.0156 from 16 to 32), as fp16 logits would."""
    if not gpu.has_f16:
        pytest.skip("the device has no shader-f16")
    batch = check_mixed_batch(load_tiny(version, precision="fp16"), references(version), half_ulps=HALF_ULPS)
    labels = {label for graph in batch.runtime._graphs.values() for label in graph.labels}
    assert any("HALF_MATH" in label for label in labels)


def check_mixed_batch(model, ref, half_ulps: int = 0, tuning: KernelTuning | None = None) -> BatchRuntime:
    """Four sequences through a 3-slot batch (prefilling beside decoding, joining and leaving,
    a slot reused) each get the logits they get alone."""
    # (slot, prompt, tokens to decode, step at which it joins)
    jobs = {
        "long": (0, ref.tokens("paragraph_200"), 6, 0),
        "short": (1, ref.tokens("sentence_20"), 12, 0),
        "late": (2, ref.tokens("quote_in"), 4, 3),
        "reuse": (2, ref.tokens("utf8_multibyte")[:30], 5, 9),  # takes "late"'s slot after it leaves
    }
    batch = BatchRuntime(model, max_batch=3, token_chunk_size=32, tuning=tuning)
    got: dict[str, list[np.ndarray]] = {name: [] for name in jobs}
    active: dict[int, str] = {}
    step = 0
    while step < 200:
        for name, (slot, prompt, _, join) in jobs.items():
            if join == step and name not in active.values():
                assert slot not in active, "test plan reuses a slot that is still busy"
                batch.reset(slot)
                batch.submit(slot, prompt)
                active[slot] = name
        if not active and step > max(j[3] for j in jobs.values()):
            break
        planned = batch.plan()
        if "short" in active.values() and "long" in active.values():
            assert planned.get(1) == 1 or len(batch._work[1].tokens) > 1, "decoding slot starved"
        out = batch.step()
        for slot, logits in out.items():
            name = active[slot]
            got[name].append(logits)
            if len(got[name]) > jobs[name][2]:
                del active[slot]
            else:
                batch.submit(slot, [int(np.argmax(logits))])
        step += 1
    for name, (slot, prompt, n_decode, _) in jobs.items():
        expected = run_alone(model, prompt, n_decode, tuning)
        assert len(got[name]) == len(expected), name
        for i, (a, b) in enumerate(zip(got[name], expected)):
            bound = max(TOLERANCE, half_ulps * float(np.spacing(np.float16(np.abs(b).max()))))
            assert np.abs(a - b).max() <= bound, f"{name} output {i}: {np.abs(a - b).max()}"
    return batch


def test_long_prefill_does_not_stall_decoding(load_tiny, references):
    model, ref = load_tiny("v7"), references("v7")
    batch = BatchRuntime(model, max_batch=2, token_chunk_size=16)
    batch.submit(0, ref.tokens("text_1000"))
    batch.submit(1, [84])
    for _ in range(5):
        plan = batch.plan()
        assert plan[1] == 1 and plan[0] == 15
        out = batch.step()
        assert set(out) == {1}
        batch.submit(1, [int(np.argmax(out[1]))])


def test_prompt_split_across_steps_equals_one_pass(load_tiny, references):
    model, ref = load_tiny("v6"), references("v6")
    tokens = ref.tokens("paragraph_200")
    batch = BatchRuntime(model, max_batch=1, token_chunk_size=48)
    batch.submit(0, tokens, want="all")
    rows = []
    while batch.busy_slots:
        rows.append(batch.step()[0])
    logits = np.concatenate(rows)
    assert logits.shape == (200, 256)
    assert np.abs(logits - ref["paragraph_200/logits_all"]).max() <= 3e-4


def test_save_and_load_move_states_between_slots(load_tiny, references):
    model, ref = load_tiny("v5.2"), references("v5.2")
    batch = BatchRuntime(model, max_batch=2, token_chunk_size=64)
    batch.submit(0, ref.tokens("sentence_20"))
    batch.step()
    saved = batch.save(0)
    batch.load(1, saved)
    batch.submit(0, [32])
    batch.submit(1, [32])
    out = batch.step()
    assert np.array_equal(out[0], out[1])
    state = model.new_state()
    model.forward(ref.tokens("sentence_20"), state)
    assert np.abs(model.forward([32], state) - out[1]).max() <= TOLERANCE
    with pytest.raises(ValueError, match="slot"):
        batch.submit(5, [1])


def test_embed_batch_equals_one_at_a_time(load_tiny):
    from ai00_trio.engine.batch import embed_batch

    model = load_tiny("v5.2")
    texts = [list(b"hello world"), list(b"a"), list(b"The cat sat on a mat and looked around"), list(b"xyz")]
    batch = BatchRuntime(model, max_batch=3, token_chunk_size=16, keep_hidden=True)
    vectors = embed_batch(batch, texts)
    for tokens, vector in zip(texts, vectors):
        state = model.new_state()
        model.forward(tokens, state)
        hidden = model._single.read_hidden(1)[0]
        assert abs(np.linalg.norm(vector) - 1) < 1e-5
        assert np.abs(vector - hidden / np.linalg.norm(hidden)).max() < 1e-4


def test_prerecorded_steps_equal_freshly_recorded_ones(load_tiny, references):
    """Each step records the next step of its shape ahead; shape changes (a perplexity request
    needing a bigger readback, state moves in between) must not reuse a stale recording."""
    model, ref = load_tiny("v7"), references("v7")
    prompt, text = ref.tokens("sentence_20"), ref.tokens("paragraph_200")[:100]

    def trace(prerecord: bool) -> list[np.ndarray]:
        batch = BatchRuntime(model, max_batch=2, token_chunk_size=128)
        batch.runtime.prerecord = prerecord
        out = []
        batch.submit(0, prompt)
        logits = batch.step()[0]
        for i in range(6):
            if i == 3:  # every token's logits: the readback buffer must grow (100 KB)
                batch.submit(0, text, want="all")
                out.extend(batch.step()[0])
                saved = batch.save(0)
                batch.load(1, saved)
            batch.submit(0, [int(np.argmax(logits))])
            logits = batch.step()[0]
            out.append(logits)
        batch.submit(1, [7])
        out.append(batch.step()[1])
        return out

    fresh, ahead = trace(False), trace(True)
    assert len(fresh) == len(ahead) == 107  # 6 decoded, 100 perplexity rows, the moved state
    for a, b in zip(fresh, ahead):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("version", ["v5.2", "v7"])
def test_greedy_picks_on_the_gpu_equal_the_host_argmax(version, load_tiny, references):
    """Slots that want only a greedy pick, beside slots that want logits, in the same steps:
    each pick is the argmax of the logits its sequence gets alone, with their log-softmax."""
    from ai00_trio.engine.runtime import Pick

    model, ref = load_tiny(version), references(version)
    prompts = {0: ref.tokens("sentence_20"), 1: ref.tokens("quote_in"), 2: ref.tokens("paragraph_200")[:40]}
    n_decode = 8
    batch = BatchRuntime(model, max_batch=3, token_chunk_size=64)
    for slot, prompt in prompts.items():
        batch.submit(slot, prompt, want="last" if slot == 1 else "pick")
    got: dict[int, list] = {slot: [] for slot in prompts}
    while any(len(v) <= n_decode for v in got.values()):
        for slot, value in batch.step().items():
            got[slot].append(value)
            if len(got[slot]) <= n_decode:
                token = value.token if isinstance(value, Pick) else int(np.argmax(value))
                batch.submit(slot, [token], want="last" if slot == 1 else "pick")
    for slot, prompt in prompts.items():
        expected = run_alone(model, prompt, n_decode)
        assert len(got[slot]) == len(expected)
        for value, logits in zip(got[slot], expected):
            if slot == 1:
                assert np.abs(value - logits).max() <= TOLERANCE
                continue
            assert isinstance(value, Pick) and value.token == int(np.argmax(logits))
            shifted = logits.astype(np.float64) - logits.max()
            logprob = shifted[value.token] - np.log(np.exp(shifted).sum())
            assert abs(value.logprob - logprob) <= TOLERANCE


def test_chained_gpu_choices_run_on_by_themselves(load_tiny, references):
    """A slot whose GPU choices are fed back as its next tokens (a chain) decodes what a caller
    feeding each pick back would, beside a slot that reads logits; the chain ends at one of its
    end tokens or when its count runs out, and `fed` records every token fed: once the chain
    runs alone its steps go one ahead, so the end token has been fed too."""
    model, ref = load_tiny("v7"), references("v7")
    prompt, other = ref.tokens("sentence_20"), ref.tokens("quote_in")
    expected = run_alone(model, prompt, 12)
    greedy = [int(np.argmax(logits)) for logits in expected]  # the 13 tokens after the prompt
    batch = BatchRuntime(model, max_batch=2, token_chunk_size=64)
    batch.submit(0, prompt, want="pick", chain=12)
    batch.submit(1, other)
    picks, steps = [], 0
    while batch.busy_slots:
        out = batch.step()
        steps += 1
        if 0 in out:
            picks.append(out[0].token)
        if 1 in out and steps < 6:
            batch.submit(1, [int(np.argmax(out[1]))])
    assert picks == greedy
    assert batch.fed[0] == prompt + greedy[:-1]

    stop_at = next(i for i in range(2, len(greedy)) if greedy[i] not in greedy[:i])  # a step launched ahead makes it
    end = greedy[stop_at]
    batch.reset(0)
    batch.submit(0, prompt, want="pick", chain=12, end_tokens=frozenset({end}))
    picks = []
    while batch.busy_slots:
        picks.append(batch.step()[0].token)
    assert picks == greedy[:stop_at + 1]
    assert batch.fed[0] == prompt + greedy[:stop_at + 1]

    batch.reset(0)
    batch.submit(0, prompt, want="pick", chain=12)
    assert batch.step()[0].token == greedy[0]  # the prompt
    assert batch.step()[0].token == greedy[1]  # and a step launched ahead on this choice
    batch.cancel(0)
    assert not batch.busy_slots and batch.fed[0] == prompt + greedy[:2]
    assert batch.step() == {}  # the step ahead is waited for and dropped
    batch.submit(1, [5])
    assert set(batch.step()) == {1}
    with pytest.raises(ValueError, match="chained"):
        batch.submit(0, [1], want="last", chain=3)
