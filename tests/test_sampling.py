"""Samplers against hand-computed distributions on tiny vocabularies (AI00 semantics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ai00_trio.sampling import (Mirostat, Nucleus, SamplerConfigError, Sampler,
                                SamplingError, Typical, decode_sampler, make_sampler,
                                mirostat_candidates, nucleus_candidates, prepare_logits,
                                sample_batch, sample_logits, sampler_from_openai,
                                sampler_from_request, typical_candidates)

# Exact binary probabilities, so the top_p / tau boundaries below are exact in floating point.
# sorted descending: token 1 (.5), 2 (.25), 0 (.125), 3 (.0625), 4 (.0625)
P = np.array([0.125, 0.5, 0.25, 0.0625, 0.0625])
LOGITS = np.log(P)
# 0.999 quantiles of chi-square by degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}


def no_penalty(cls=Nucleus, **kw):
    return cls(presence_penalty=0.0, frequency_penalty=0.0, **kw)


def kept(ids_weights):
    return set(ids_weights[0].tolist())


def normalised(ids_weights):
    ids, w = ids_weights
    return dict(zip(ids.tolist(), (w / w.sum()).tolist()))


def empirical(sampler, n, logits=LOGITS, mask=None):
    counts = np.zeros(len(logits), dtype=np.int64)
    for _ in range(n):
        counts[sampler.step(logits, mask).token] += 1
    return counts


def assert_matches(counts, expected: dict[int, float]):
    """Only the expected tokens occur, with frequencies passing a chi-square bound."""
    n = counts.sum()
    outside = [t for t in np.flatnonzero(counts) if t not in expected]
    assert not outside, f"sampled tokens outside the kept set: {outside}"
    chi2 = sum((counts[t] - n * p) ** 2 / (n * p) for t, p in expected.items())
    assert chi2 < CHI2_999[max(1, len(expected) - 1)], (counts, expected, chi2)


# ---------------------------------------------------------------- Nucleus

@pytest.mark.parametrize("top_p, top_k, expected", [
    (0.0, 128, {1}),            # top_p 0 -> greedy
    (0.49, 128, {1}),           # mass before token 2 is .5 > .49
    (0.5, 128, {1, 2}),         # .5 <= .5: the crossing token is kept
    (0.74, 128, {1, 2}),
    (0.75, 128, {1, 2, 0}),
    (0.9, 128, {1, 2, 0, 3}),   # ties 3/4 broken by id
    (1.0, 128, {0, 1, 2, 3, 4}),
    (1.0, 2, {1, 2}),           # top_k first
    (1.0, 4, {1, 2, 0, 3}),
    (0.6, 1, {1}),
    (1.0, 0, {0, 1, 2, 3, 4}),  # top_k 0 = no limit
])
def test_nucleus_kept_set(top_p, top_k, expected):
    assert kept(nucleus_candidates(P, top_p, top_k)) == expected


@pytest.mark.parametrize("min_p, top_p, top_k, expected", [
    (0.5, 1.0, 128, {1, 2}),        # p >= .25: .25 itself is kept
    (0.51, 1.0, 128, {1}),
    (0.25, 1.0, 128, {1, 2, 0}),
    (0.125, 1.0, 128, {0, 1, 2, 3, 4}),
    (0.25, 0.5, 128, {1, 2}),       # top_p cuts first here
    (0.1, 1.0, 2, {1, 2}),          # top_k cuts first here
    (1.0, 1.0, 128, {1}),
])
def test_min_p_keeps_tokens_near_the_likeliest(min_p, top_p, top_k, expected):
    assert kept(nucleus_candidates(P, top_p, top_k, 1.0, min_p)) == expected


def test_min_p_matches_its_numpy_statement_and_comes_from_openai_fields():
    probs = np.random.default_rng(8).dirichlet(np.full(3000, 0.3))
    for min_p in (0.0, 0.01, 0.1, 0.5):
        ids, weights = nucleus_candidates(probs, 1.0, 0, 0.7, min_p)
        assert set(ids.tolist()) == set(np.flatnonzero(probs >= min_p * probs.max()).tolist())
        np.testing.assert_allclose(weights / weights.sum(), probs[ids] ** (1 / 0.7) / (probs[ids] ** (1 / 0.7)).sum())
    assert sampler_from_openai(min_p=0.05).min_p == 0.05 and sampler_from_openai().min_p == 0.0
    assert sampler_from_request({"sampler": {"type": "Nucleus", "min_p": 0.2}}).min_p == 0.2
    with pytest.raises(SamplerConfigError):
        sampler_from_openai(min_p=1.5)


def test_candidates_come_in_sampler_order():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(5000))
    ids, w = nucleus_candidates(probs, 1.0, 50)
    assert ids.tolist() == np.argsort(-probs)[:50].tolist()
    assert np.all(np.diff(w) <= 0)
    ids, _ = typical_candidates(probs, 1.0, 50)
    entropy = -(probs * np.log(probs)).sum()
    assert ids.tolist() == np.argsort(np.abs(-np.log(probs) - entropy))[:50].tolist()


def test_nucleus_temperature_is_power_on_truncated_probs():
    # kept {1, 2, 0}; T = 0.5 -> weights p^2 = .25, .0625, .015625 (sum .328125)
    got = normalised(nucleus_candidates(P, 0.75, 128, temperature=0.5))
    want = {1: 0.25 / 0.328125, 2: 0.0625 / 0.328125, 0: 0.015625 / 0.328125}
    assert got.keys() == want.keys()
    for t in want:
        assert got[t] == pytest.approx(want[t], rel=1e-12)
    # T = 2 -> p^0.5; the kept set is decided before the temperature
    got = normalised(nucleus_candidates(P, 0.5, 128, temperature=2.0))
    s = math.sqrt(0.5) + math.sqrt(0.25)
    assert got == pytest.approx({1: math.sqrt(0.5) / s, 2: math.sqrt(0.25) / s}, rel=1e-12)


def test_nucleus_frequencies_match_renormalised_probs():
    sampler = make_sampler(no_penalty(top_p=0.8, top_k=128), seed=1234)
    # kept: 1, 2, 0 (mass before token 3 is .875 > .8)
    counts = empirical(sampler, 12000)
    assert_matches(counts, {1: 0.5 / 0.875, 2: 0.25 / 0.875, 0: 0.125 / 0.875})


def test_nucleus_frequencies_with_temperature():
    sampler = make_sampler(no_penalty(top_p=0.6, top_k=128, temperature=0.5), seed=7)
    # kept: 1, 2; weights .25, .0625 -> .8, .2
    counts = empirical(sampler, 8000)
    assert_matches(counts, {1: 0.8, 2: 0.2})


def test_nucleus_top_k_frequencies():
    sampler = make_sampler(no_penalty(top_p=1.0, top_k=3, temperature=1.0), seed=99)
    counts = empirical(sampler, 12000)
    assert_matches(counts, {1: 0.5 / 0.875, 2: 0.25 / 0.875, 0: 0.125 / 0.875})


def test_greedy_at_temperature_zero_or_top_p_zero():
    logits = np.array([0.3, 2.0, 1.9, -1.0, 0.0])
    for cfg in (no_penalty(temperature=0.0, top_p=1.0), no_penalty(temperature=1.0, top_p=0.0)):
        for seed in range(5):
            sampler = make_sampler(cfg, seed=seed)
            state = sampler.rng.bit_generator.state
            assert sampler.step(logits).token == 1
            assert sampler.rng.bit_generator.state == state  # no random draw needed
    # greedy respects the mask
    sampler = make_sampler(no_penalty(temperature=0.0), seed=0)
    assert sampler.step(logits, np.array([1, 0, 1, 1, 1], bool)).token == 2


# ---------------------------------------------------------------- Typical

def test_typical_kept_set():
    # -ln p in units of ln2: 3, 1, 2, 4, 4; H = 1.875 ln2.
    # |(-ln p) - H| / ln2: 1.125, .875, .125, 2.125, 2.125 -> order 2, 1, 0, 3, 4
    # P[2] = .25, P[1] = .5, P[0] = .125: mass before = 0, .25, .75, .8125
    assert kept(typical_candidates(P, 0.0, 128)) == {2}
    assert kept(typical_candidates(P, 0.2, 128)) == {2}
    assert kept(typical_candidates(P, 0.25, 128)) == {2, 1}
    assert kept(typical_candidates(P, 0.5, 128)) == {2, 1}
    assert kept(typical_candidates(P, 0.75, 128)) == {2, 1, 0}
    assert kept(typical_candidates(P, 0.8, 128)) == {2, 1, 0}
    assert kept(typical_candidates(P, 0.9, 128)) == {2, 1, 0, 3}
    assert kept(typical_candidates(P, 1.0, 2)) == {2, 1}
    assert kept(typical_candidates(P, 1.0, 1)) == {2}
    ids, _ = typical_candidates(P, 1.0, 128)
    assert ids.tolist() == [2, 1, 0, 3, 4]
    # temperature 0 picks the most typical token (AI00), not the likeliest
    assert typical_candidates(P, 0.5, 128, temperature=0.0)[0].tolist() == [2]


def test_typical_frequencies():
    sampler = make_sampler(no_penalty(Typical, tau=0.5, top_k=128), seed=5)
    counts = empirical(sampler, 9000)
    assert_matches(counts, {2: 1 / 3, 1: 2 / 3})
    sampler = make_sampler(no_penalty(Typical, tau=0.5, top_k=128, temperature=0.5), seed=5)
    counts = empirical(sampler, 9000)  # weights .25^2, .5^2 -> 1/5, 4/5
    assert_matches(counts, {2: 0.2, 1: 0.8})


# ---------------------------------------------------------------- Mirostat

def test_mirostat_cut_includes_first_token_over_the_limit():
    # surprises in bits: token 0: 3, 1: 1, 2: 2, 3: 4, 4: 4
    assert kept(mirostat_candidates(P, 2.0)) == {1, 2, 0}
    assert kept(mirostat_candidates(P, 1.5)) == {1, 2}
    assert kept(mirostat_candidates(P, 0.5)) == {1}
    assert kept(mirostat_candidates(P, 3.0)) == {1, 2, 0, 3}  # 3 > 3 is false for token 0
    assert kept(mirostat_candidates(P, 4.0)) == {0, 1, 2, 3, 4}
    ids, w = mirostat_candidates(P, 2.5)
    assert ids.tolist() == [1, 2, 0] and w.tolist() == [0.5, 0.25, 0.125]


def test_mirostat_update_of_max_surprise():
    sampler = make_sampler(Mirostat(tau=1.0, rate=0.1), seed=3)
    assert sampler.max_surprise == 2.0
    token = sampler.sample(P)  # kept {1, 2, 0}, mass .875
    assert token in (1, 2, 0)
    surprise = math.log2(0.875) - math.log2(P[token])
    assert sampler.last_surprise == pytest.approx(surprise)
    assert sampler.max_surprise == pytest.approx(2.0 - 0.1 * (surprise - 1.0))
    # a certain token has surprise 0: max_surprise grows by rate * tau, capped at 4 tau
    sampler = make_sampler(Mirostat(tau=1.0, rate=0.5), seed=3)
    certain = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    assert sampler.sample(certain) == 1
    assert sampler.max_surprise == pytest.approx(2.5)
    for _ in range(10):
        sampler.sample(certain)
    assert sampler.max_surprise == 4.0


def test_mirostat_frequencies_and_no_penalties():
    sampler = make_sampler(Mirostat(tau=10.0, rate=0.0), seed=11)  # 2 tau = 20 bits: keep all
    sampler.init([1, 1, 1])
    row = LOGITS.copy()
    assert sampler.transform(row) is row and np.array_equal(row, LOGITS)
    counts = empirical(sampler, 10000)
    assert_matches(counts, dict(enumerate(P.tolist())))
    assert sampler.max_surprise == 20.0


def test_mirostat_alias_learning_rate():
    assert decode_sampler({"type": "Mirostat", "learning_rate": 0.25}) == Mirostat(tau=3.0, rate=0.25)
    assert decode_sampler({"type": "Mirostat"}) == Mirostat(tau=3.0, rate=0.1)
    with pytest.raises(SamplerConfigError, match="learning_rate"):
        decode_sampler({"type": "Mirostat", "rate": 0.2, "learning_rate": 0.25})


# ---------------------------------------------------------------- penalties

def test_penalty_init_and_updates_hand_computed():
    cfg = Nucleus(presence_penalty=0.5, frequency_penalty=0.2, penalty_decay=0.5, temperature=0.0)
    sampler = make_sampler(cfg, seed=0, model_tokens=[7, 3, 7, 5])
    # backwards: 5 (i=0): .5 + .2 = .7;  7 (i=1): .5 + .2*.5 = .6;
    #            3 (i=2): .5 + .2*.25 = .55;  7 (i=3): .6 + .2*.125 = .625
    assert sampler.penalties.as_dict() == pytest.approx({5: 0.7, 7: 0.625, 3: 0.55})
    sampler.update(3)  # decay: 5 .35, 7 .3125, 3 .275; 3 present -> +.2
    assert sampler.penalties.as_dict() == pytest.approx({5: 0.35, 7: 0.3125, 3: 0.475})
    sampler.update(9)  # decay: 5 .175, 7 .15625, 3 .2375; 9 new -> exactly presence
    assert sampler.penalties.as_dict() == pytest.approx({5: 0.175, 7: 0.15625, 3: 0.2375, 9: 0.5})
    row = sampler.transform(np.zeros(10))
    assert row.tolist() == pytest.approx([0, 0, 0, -0.2375, 0, -0.175, 0, -0.15625, 0, -0.5])
    # init adds to what is already there (AI00 does not reset)
    sampler.init([3])
    assert sampler.penalties.as_dict()[3] == pytest.approx(0.2375 + 0.2)


def test_penalty_sequence_through_step():
    cfg = Nucleus(presence_penalty=0.5, frequency_penalty=0.3, penalty_decay=0.5, temperature=0.0)
    sampler = make_sampler(cfg, seed=0)
    logits = np.array([0.0, 1.0, 1.4, 0.0, 0.0])
    # step 1: no penalties -> 2 (1.4). Then {2: .5}
    # step 2: 2 -> .9 < 1.0 -> 1.  Then decay {2: .25}, 1 new {1: .5}
    # step 3: 1 -> .5, 2 -> 1.15 -> 2. Then decay {2: .125, 1: .25}; 2 present: .425
    # step 4: 1 -> .75, 2 -> .975 -> 2. Then {2: .2125 + .3 = .5125, 1: .125}
    # step 5: 1 -> .875, 2 -> .8875 -> 2.
    tokens = [sampler.step(logits).token for _ in range(5)]
    assert tokens == [2, 1, 2, 2, 2]
    assert sampler.penalties.as_dict() == pytest.approx({2: 0.5125 * 0.5 + 0.3, 1: 0.0625})


def test_openai_defaults_have_no_penalties():
    cfg = sampler_from_openai()
    assert cfg == Nucleus(top_p=0.5, top_k=128, temperature=1.0, presence_penalty=0.0,
                          frequency_penalty=0.0, penalty_decay=0.99654026)
    sampler = make_sampler(cfg, seed=1, model_tokens=[1, 2, 3])
    sampler.step(LOGITS)
    assert sampler.penalties.as_dict() == {}
    assert sampler_from_openai(presence_penalty=0.4).presence_penalty == 0.4
    # the AI00 sampler object keeps AI00's defaults
    assert decode_sampler({"type": "Nucleus"}).presence_penalty == 0.3


# ---------------------------------------------------------------- mask and logit_bias

def test_logit_bias_and_mask_distribution():
    logits = np.zeros(5)
    mask = np.array([False, True, False, True, False])
    # 0 is masked: its huge bias must not bring it back. 3 gets ln 3: P(1) = 1/4, P(3) = 3/4
    sampler = make_sampler(no_penalty(top_p=1.0), seed=21, logit_bias={"0": 100.0, 3: math.log(3)})
    counts = empirical(sampler, 8000, logits, mask)
    assert_matches(counts, {1: 0.25, 3: 0.75})


def test_bias_is_added_after_penalties_and_mask():
    cfg = Nucleus(presence_penalty=1.0, frequency_penalty=0.0, penalty_decay=1.0)
    sampler = make_sampler(cfg, seed=0, logit_bias={1: 2.0, 2: -1.0}, model_tokens=[1])
    x, problems = prepare_logits([sampler], np.zeros((1, 4)), [np.array([1, 1, 1, 0], bool)])
    assert problems == [None]
    assert x[0].tolist() == [0.0, -1.0 + 2.0, -1.0, -np.inf]


def test_all_masked_is_a_clear_error_and_changes_nothing():
    sampler = make_sampler(Nucleus(), seed=4, model_tokens=[2])
    before = (sampler.penalties.as_dict(), sampler.rng.bit_generator.state)
    with pytest.raises(SamplingError, match="no token is allowed"):
        sampler.step(LOGITS, np.zeros(5, bool))
    assert (sampler.penalties.as_dict(), sampler.rng.bit_generator.state) == before
    with pytest.raises(SamplingError, match="NaN"):
        sampler.step(np.array([0.0, np.nan, 0.0, 0.0, 0.0]))


def test_batch_names_the_row_it_cannot_sample():
    good, bad = make_sampler(no_penalty(), seed=1), make_sampler(no_penalty(), seed=2)
    logits = np.stack([LOGITS, LOGITS])
    masks = [None, np.zeros(5, bool)]
    with pytest.raises(SamplingError, match="row 1"):
        sample_batch([good, bad], logits, masks)


def test_logit_bias_validation():
    with pytest.raises(ValueError, match="not a token id"):
        make_sampler(None, 0, logit_bias={"abc": 1.0})
    with pytest.raises(ValueError, match="out of range"):
        make_sampler(None, 0, logit_bias={9: 1.0}, vocab_size=5)
    with pytest.raises(SamplingError, match="out of range"):
        make_sampler(None, 0, logit_bias={9: 1.0}).step(LOGITS)
    with pytest.raises(ValueError, match="finite"):
        make_sampler(None, 0, logit_bias={1: float("nan")})


# ---------------------------------------------------------------- log-probabilities

def test_logprobs_are_log_softmax_of_final_logits_before_truncation():
    cfg = Nucleus(top_p=0.0, presence_penalty=0.0, frequency_penalty=0.0)  # greedy
    sampler = make_sampler(cfg, seed=0, logit_bias={4: 1.0}, top_logprobs=3)
    mask = np.array([True, True, True, False, True])
    logits = np.array([0.0, 2.0, 1.0, 5.0, 0.0])
    # after mask and bias: 0, 2, 1, -inf, 1 -> log Z = log(1 + e^2 + 2e)
    log_z = math.log(1 + math.exp(2) + 2 * math.e)
    res = sampler.step(logits, mask)
    assert res.token == 1
    assert res.logprob == pytest.approx(2.0 - log_z)
    assert [t.token for t in res.top_logprobs] == [1, 2, 4]  # tie 2/4 by id; 3 masked
    assert [t.logprob for t in res.top_logprobs] == pytest.approx([2 - log_z, 1 - log_z, 1 - log_z])
    # fewer allowed tokens than asked for: masked ones are never listed
    sampler = make_sampler(cfg, seed=0, top_logprobs=4)
    res = sampler.step(logits, np.array([0, 1, 0, 0, 1], bool))
    assert [t.token for t in res.top_logprobs] == [1, 4]
    assert make_sampler(cfg, seed=0).step(logits).top_logprobs == []


# ---------------------------------------------------------------- seeds and batches

def test_same_seed_same_tokens():
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(60, 50)) * 2
    for cfg in (Nucleus(top_p=0.9), Typical(tau=0.9), Mirostat(tau=2.0)):
        runs = []
        for seed in (42, 42, 43):
            sampler = make_sampler(cfg, seed=seed)
            runs.append([sampler.step(row).token for row in steps])
        assert runs[0] == runs[1]
        assert runs[0] != runs[2]


def test_sample_batch_matches_single_steps_and_softmax_once():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 40)) * 3
    masks = [None, rng.random(40) > 0.3, None]
    configs = [Nucleus(top_p=0.9), Typical(tau=0.8), Mirostat(tau=2.0)]

    def fresh():
        return [make_sampler(c, seed=10 + i, top_logprobs=2) for i, c in enumerate(configs)]

    batch_samplers, single = fresh(), fresh()
    for _ in range(5):
        batched = sample_batch(batch_samplers, logits, masks)
        singles = [s.step(logits[i], masks[i]) for i, s in enumerate(single)]
        assert batched == singles
    assert all(isinstance(s, Sampler) for s in single)


def test_seed_none_and_negative_seed():
    a = make_sampler(None, None)
    assert isinstance(a.seed, int)
    b = make_sampler(None, a.seed)
    rows = np.random.default_rng(2).normal(size=(20, 30))
    assert [a.step(r).token for r in rows] == [b.step(r).token for r in rows]
    assert make_sampler(None, -1).seed == 2**64 - 1


# ---------------------------------------------------------------- decoding configs

def test_decode_sampler_types_and_defaults():
    assert decode_sampler({"type": "Nucleus"}) == Nucleus()
    assert decode_sampler({"type": "Typical", "tau": 0.2}) == Typical(tau=0.2)
    assert decode_sampler({"type": "Nucleus", "top_p": 1}).top_p == 1.0
    # unknown keys are ignored as in AI00, unless strict
    assert decode_sampler({"type": "Mirostat", "Rate": 5}) == Mirostat()
    with pytest.raises(SamplerConfigError, match="Rate"):
        decode_sampler({"type": "Mirostat", "Rate": 5}, strict=True)


@pytest.mark.parametrize("obj, needle", [
    ({"top_p": 0.5}, '"type"'),
    ({"type": "nucleus"}, "unknown sampler type 'nucleus'"),
    ({"type": 3}, "unknown sampler type 3"),
    ({"type": "Nucleus", "top_p": "high"}, "`sampler.top_p`"),
    ({"type": "Nucleus", "temperature": -1}, "`sampler.temperature`"),
    ({"type": "Nucleus", "top_k": 1.5}, "`sampler.top_k`"),
    ({"type": "Nucleus", "top_k": -1}, "`sampler.top_k`"),
    ({"type": "Typical", "tau": None}, "`sampler.tau`"),
    ({"type": "Mirostat", "rate": True}, "`sampler.rate`"),
    ({"type": "Nucleus", "presence_penalty": float("inf")}, "presence_penalty"),
    ("Nucleus", "must be an object"),
])
def test_decode_sampler_errors(obj, needle):
    with pytest.raises(SamplerConfigError) as info:
        decode_sampler(obj)
    assert isinstance(info.value, ValueError)
    assert needle in str(info.value)


def test_sampler_from_request():
    assert sampler_from_request({"sampler": {"type": "Typical"}}) == Typical()
    assert sampler_from_request({"sampler_override": {"type": "Mirostat"}}) == Mirostat()
    # the sampler object wins over the flat fields, as in AI00
    assert sampler_from_request({"sampler": {"type": "Nucleus"}, "top_p": 0.1}).top_p == 0.5
    flat = sampler_from_request({"temperature": 0.7, "top_p": None, "frequency_penalty": 0.2})
    assert flat == Nucleus(temperature=0.7, top_p=0.5, presence_penalty=0.0, frequency_penalty=0.2)
    with pytest.raises(SamplerConfigError, match="not both"):
        sampler_from_request({"sampler": {"type": "Nucleus"}, "sampler_override": {"type": "Nucleus"}})
    with pytest.raises(SamplerConfigError, match="`sampler_override.top_k`"):
        sampler_from_request({"sampler_override": {"type": "Nucleus", "top_k": "x"}})
    with pytest.raises(SamplerConfigError, match="`temperature`"):
        sampler_from_request({"temperature": "warm"})


def test_make_sampler_accepts_dicts_and_none():
    assert make_sampler(None, 0).config == Nucleus()
    assert type(make_sampler({"type": "Typical"}, 0)).__name__ == "TypicalSampler"
    with pytest.raises(SamplerConfigError):
        make_sampler({"type": "Bogus"}, 0)


def test_cli_sample_logits_still_importable():
    rng = np.random.default_rng(0)
    assert sample_logits(np.array([0.0, 3.0, 1.0]), rng, temperature=0.0) == 1
    assert sample_logits(np.array([0.0, 30.0, 1.0]), rng, temperature=1.0, top_p=0.5) == 1


# ---------------------------------------------------------------- fast paths vs brute force

def _ref_prefix(ids, p, limit, k):
    if k > 0:
        ids, p = ids[:k], p[:k]
    out, cum = [], 0.0
    for t, x in zip(ids, p):
        if cum > limit:
            break
        cum += x
        out.append(int(t))
    return out


def ref_nucleus(probs, top_p, top_k):
    ids = np.array(sorted(np.flatnonzero(probs > 0), key=lambda t: (-probs[t], t)), dtype=int)
    return _ref_prefix(ids, probs[ids], top_p, top_k)


def ref_typical(probs, tau, top_k):
    nz = np.flatnonzero(probs > 0)
    entropy = -sum(probs[t] * math.log(probs[t]) for t in nz)
    ids = np.array(sorted(nz, key=lambda t: (abs(-math.log(probs[t]) - entropy), t)), dtype=int)
    return _ref_prefix(ids, probs[ids], tau, top_k)


def random_rows(rng):
    v = 3000
    for scale in (0.3, 1.0, 3.0, 8.0):
        logits = rng.normal(size=v) * scale
        yield logits
        masked = logits.copy()
        masked[rng.random(v) < 0.9] = -np.inf
        yield masked
        yield np.round(logits)  # many ties
    few = np.full(v, -np.inf)
    few[[5, 17, 2000]] = [0.0, 1.0, 0.5]
    yield few


@pytest.mark.parametrize("top_p, top_k", [(0.5, 128), (0.9, 40), (0.99, 0), (1.0, 0), (0.3, 1),
                                          (1.0, 5000), (0.0, 0)])
def test_nucleus_fast_path_matches_brute_force(top_p, top_k):
    rng = np.random.default_rng(17)
    for logits in random_rows(rng):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        ids, _ = nucleus_candidates(probs, top_p, top_k)
        assert ids.tolist() == ref_nucleus(probs, top_p, top_k)


@pytest.mark.parametrize("tau, top_k", [(0.5, 128), (0.9, 40), (0.99, 0), (0.2, 1000), (0.0, 0)])
def test_typical_fast_path_matches_brute_force(tau, top_k):
    rng = np.random.default_rng(18)
    for logits in random_rows(rng):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        ids, _ = typical_candidates(probs, tau, top_k)
        assert ids.tolist() == ref_typical(probs, tau, top_k)


def test_top_logprobs_match_brute_force():
    rng = np.random.default_rng(19)
    for logits in random_rows(rng):
        sampler = make_sampler(no_penalty(), seed=0, top_logprobs=7)
        res = sampler.step(logits)
        lp = logits - np.logaddexp.reduce(logits[np.isfinite(logits)])
        want = sorted(np.flatnonzero(np.isfinite(logits)), key=lambda t: (-lp[t], t))[:7]
        assert [t.token for t in res.top_logprobs] == [int(t) for t in want]
        assert [t.logprob for t in res.top_logprobs] == pytest.approx(lp[want].tolist())


@pytest.mark.parametrize("max_surprise", [0.5, 3.0, 8.0, 12.0, 40.0])
def test_mirostat_fast_path_matches_brute_force(max_surprise):
    rng = np.random.default_rng(20)
    for logits in random_rows(rng):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        ordered = sorted(range(probs.size), key=lambda t: (-probs[t], t))
        want = []
        for t in ordered:
            if probs[t] == 0:
                break
            want.append(t)
            if -math.log2(probs[t]) > max_surprise:
                break
        ids, w = mirostat_candidates(probs, max_surprise)
        assert ids.tolist() == want
        assert w.tolist() == probs[want].tolist()
