"""Token choice on the GPU (sample.wgsl): the same distribution and penalties as the host sampler."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from ai00_trio.engine.batch import BatchRuntime
from ai00_trio.engine.runtime import Pick, Sampling, choices_table
from ai00_trio.sampling import kernels
from ai00_trio.sampling.config import Nucleus
from ai00_trio.sampling.samplers import NucleusSampler

ROWS = 64


def choose(model, logits: np.ndarray, picks: list[tuple[int, Sampling, int]]) -> list[Pick]:
    """Run sample.wgsl alone on the given logits rows, one row per pick."""
    runtime = model.runtime(max_batch=4, max_tokens=ROWS)
    queue, device = model.ctx.device.queue, model.ctx.device
    queue.write_buffer(runtime.io.logits, 0, np.ascontiguousarray(logits, np.float32))
    queue.write_buffer(runtime._choices, 0, choices_table(picks))
    encoder = device.create_command_encoder()
    runtime._pick_graph(0, len(picks), False).encode(encoder)
    queue.submit([encoder.finish()])
    raw = model.ctx.read(runtime._picks, len(picks) * 16).view(np.uint32).reshape(-1, 4)
    values = raw[:, 1:3].view(np.float32)
    return [Pick(int(t), float(top - norm)) for t, (top, norm) in zip(raw[:, 0], values)]


def expected_weights(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """The host Nucleus sampler's distribution over the vocabulary for one row."""
    probs, _ = kernels.softmax_rows(logits[None, :].astype(np.float64))
    ids, weights = kernels.nucleus_candidates(probs[0], s.top_p, s.top_k, s.temperature, s.min_p)
    out = np.zeros(logits.size)
    out[ids] = weights / weights.sum()
    return out


def chi_square_ok(counts: np.ndarray, expected: np.ndarray) -> tuple[bool, float, float]:
    """Pearson's test, bins with fewer than 5 expected draws pooled; passes unless the
    statistic exceeds its mean by more than 6 standard deviations."""
    n = counts.sum()
    big = expected * n >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big] * n, expected[~big].sum() * n)
    keep = wanted > 0
    stat = float(((observed[keep] - wanted[keep]) ** 2 / wanted[keep]).sum())
    dof = int(keep.sum()) - 1
    return stat <= dof + 6 * np.sqrt(2 * dof), stat, dof


@pytest.mark.parametrize("sampling", [
    Sampling(temperature=1.0, seed=11),                           # the whole softmax
    Sampling(temperature=0.7, top_p=0.6, seed=12),                # nucleus
    Sampling(temperature=1.5, top_p=0.95, top_k=6, seed=13),      # top-k below the nucleus
    Sampling(temperature=2.0, top_p=0.0001, seed=14),             # only the top token crosses top_p
    Sampling(temperature=1.5, min_p=0.05, seed=15),               # min-p
    Sampling(temperature=1.2, top_p=0.9, top_k=40, min_p=0.02, seed=16),  # all three cuts
])
def test_draws_follow_the_host_nucleus_distribution(load_tiny, sampling):
    model = load_tiny("v7")
    vocab = model.info.n_vocab
    rng = np.random.default_rng(5)
    row = (rng.standard_normal(vocab) * 2.0).astype(np.float32)
    expected = expected_weights(row, sampling)
    counts = np.zeros(vocab)
    logits = np.tile(row, (ROWS, 1))
    log_softmax = row.astype(np.float64) - np.log(np.exp(row.astype(np.float64) - row.max()).sum()) - row.max()
    for batch in range(40):
        picks = choose(model, logits, [(0, sampling, batch * ROWS + r) for r in range(ROWS)])
        for pick in picks:
            assert expected[pick.token] > 0, f"token {pick.token} is outside the kept set"
            assert abs(pick.logprob - log_softmax[pick.token]) <= 1e-4
            counts[pick.token] += 1
    ok, stat, dof = chi_square_ok(counts, expected)
    assert ok, f"chi-square {stat:.1f} with {dof} degrees of freedom"


def test_min_p_keeps_exactly_the_tokens_near_the_likeliest(load_tiny):
    """The GPU's kept set under min_p is numpy's {i: p_i >= min_p * max p}: at a high
    temperature every kept token is drawn, and no other."""
    model = load_tiny("v7")
    vocab = model.info.n_vocab
    row = (np.random.default_rng(7).standard_normal(vocab) * 3.0).astype(np.float32)
    x = row.astype(np.float64)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    for min_p in (0.3, 0.1):
        keep = set(np.flatnonzero(probs >= min_p * probs.max()).tolist())
        assert 1 < len(keep) < 60
        seen = set()
        for batch in range(8):
            picks = choose(model, np.tile(row, (ROWS, 1)),
                           [(0, Sampling(temperature=50.0, min_p=min_p, seed=21), batch * ROWS + r)
                            for r in range(ROWS)])
            seen |= {pick.token for pick in picks}
        assert seen == keep


def test_draws_repeat_with_their_seed_and_differ_across_seeds(load_tiny):
    model = load_tiny("v7")
    row = np.random.default_rng(6).standard_normal(model.info.n_vocab).astype(np.float32)
    logits = np.tile(row, (ROWS, 1))
    picks = [(0, Sampling(temperature=1.0, seed=99), r) for r in range(ROWS)]
    first = [p.token for p in choose(model, logits, picks)]
    assert [p.token for p in choose(model, logits, picks)] == first
    other = [(0, Sampling(temperature=1.0, seed=100), r) for r in range(ROWS)]
    assert [p.token for p in choose(model, logits, other)] != first
    assert len(set(first)) > 10  # the draws of one seed vary from draw to draw


def test_ties_at_zero_temperature_take_the_lowest_id(load_tiny):
    model = load_tiny("v7")
    row = np.zeros(model.info.n_vocab, np.float32)
    row[[40, 7, 200]] = 3.0
    (pick,) = choose(model, row[None, :], [(0, Sampling(), 0)])
    assert pick.token == 7


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_penalties_on_the_gpu_match_the_host_sampler(load_tiny, references, temperature):
    """A sequence decoded with GPU choices under presence/frequency penalties with decay and a
    logit bias makes the host sampler's choices: at temperature 0 the same tokens; at 1 the
    host's penalty map, replayed over the GPU's tokens, gives the logprobs the GPU reports."""
    model, ref = load_tiny("v7"), references("v7")
    config = Nucleus(temperature=temperature, top_p=1.0, top_k=0, presence_penalty=2.5,
                     frequency_penalty=1.0, penalty_decay=0.9)
    history = [int(t) for t in ref.tokens("quote_in")[:6]]  # earlier output, as chat's model_text
    bias = {ord("e"): 1.5, ord(" "): -2.0, ord("x"): 4.0}
    host = NucleusSampler(config, seed=3, logit_bias=bias)
    host.init(history)
    sampling = Sampling(temperature=temperature, top_p=1.0, presence=2.5, frequency=1.0, decay=0.9, seed=3,
                        biased=True)
    batch = BatchRuntime(model, max_batch=2, token_chunk_size=64)
    batch.reset(1)
    batch.set_penalties(1, host.penalties.as_dict())
    batch.set_bias(1, bias)
    prompt = ref.tokens("sentence_20")
    batch.submit(1, prompt, want="pick", sampling=sampling)
    state = model.new_state()
    logits = model.forward(prompt, state)
    changed = 0  # steps whose penalized argmax differs from the plain one
    for _ in range(16):
        pick = batch.step()[1]
        x = host.apply_bias(host.penalties.apply(logits.astype(np.float64).copy()))
        log_softmax = x - x.max() - np.log(np.exp(x - x.max()).sum())
        if temperature == 0:
            assert pick.token == int(np.argmax(x))
        assert abs(pick.logprob - log_softmax[pick.token]) <= 1e-3
        changed += int(np.argmax(x)) != int(np.argmax(logits))
        host.update(pick.token)
        batch.submit(1, [pick.token], want="pick", sampling=sampling)
        logits = model.forward([pick.token], state)
    assert changed > 0


def test_stop_tokens_are_those_holding_a_stop_whole():
    """Where a server's GPU decode chain ends: at every token whose text holds a stop string."""
    from types import SimpleNamespace

    from ai00_trio.server.engine_service import LoadedModel
    from ai00_trio.tokenizer import load_tokenizer

    vocab = Path(__file__).resolve().parents[1] / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"
    tokenizer = load_tokenizer("world", vocab)
    model = SimpleNamespace(info=SimpleNamespace(n_vocab=65536))
    loaded = LoadedModel(model, tokenizer, "world", "", 0)

    def stop_tokens(stops):
        return trio.run(loaded.stop_tokens, stops)

    ends = stop_tokens(("\n\n", "User:"))
    assert tokenizer.encode("\n\n")[0] in ends and tokenizer.encode("\n\n\n")[0] in ends
    assert all(b"\n\n" in tokenizer.token_bytes(t) or b"User:" in tokenizer.token_bytes(t) for t in ends)
    assert tokenizer.encode("\n")[0] not in ends and tokenizer.encode(" User")[0] not in ends
    assert stop_tokens(()) == frozenset()
    assert stop_tokens(("\n\n", "User:")) is ends  # remembered
