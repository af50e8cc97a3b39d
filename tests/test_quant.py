"""Quantized weights (int8, NF4): the packings' error bounds, quantized matmuls (per-token kernel
16 bytes or 4 weights at a time, tiled kernel, ragged stacks, split K) against numpy on the same
dequantized weights, every tiny model quantized against its reference logits, and the config's
quant / quant_type."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_MODELS

from ai00_trio.config import ConfigError, parse_config
from ai00_trio.engine.quant import (NF4_INT8_LAYERS, NF4_LEVELS, QUANT_BLOCK, dequantize_int8, dequantize_nf4,
                                    quantize_int8, quantize_nf4, stored_as)
from ai00_trio.engine.upload import Uploader
from ai00_trio.gpu.graph import Act, StepGraph
from ai00_trio.gpu.kernels import KernelCache
from ai00_trio.gpu.tuning import DEFAULT_TUNING

# Against the fp32 reference (fp16 weights stay within 0.03: test_engine.py): max |Δlogit|, the
# least correlation of the logits, and how much lower the reference may rate the token picked.
# Measured: int8 ≤ 0.12; NF4 ≤ 1.77 on the tiny v5 models (64 channels; 4 bits cost them most),
# ≤ 0.05 on v7, correlation ≥ 0.985, a pick at most 0.91 below the best.
LOGIT_BOUND = {"int8": 0.15, "nf4": 2.0}
LEAST_CORRELATION = {"int8": 0.999, "nf4": 0.98}
NEAR_TIE = {"int8": 0.05, "nf4": 1.0}


def weights_with_a_constant_block(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.standard_normal(1000) * 0.05, np.full(88, 0.25), rng.standard_normal(8) * 3])


def test_int8_error_is_at_most_half_a_step():
    weights = weights_with_a_constant_block(np.random.default_rng(0))
    words, scales = quantize_int8(weights)
    assert words.dtype == np.uint32 and words.size == weights.size // 4
    assert scales.size == -(-weights.size // QUANT_BLOCK)
    back = dequantize_int8(words, scales, weights.size)
    for b in range(scales.size):
        part = slice(b * QUANT_BLOCK, min((b + 1) * QUANT_BLOCK, weights.size))
        span = weights[part].max() - weights[part].min()
        # half a step of 255, plus the f16 rounding of the block's bounds
        bound = span / 510 + 2 * np.abs(weights[part]).max() * 2.0**-11 + 1e-7
        assert np.abs(back[part] - weights[part]).max() <= bound
    np.testing.assert_array_equal(back[1000:1088], 0.25)  # a constant block comes back exactly


def test_nf4_picks_the_nearest_level():
    weights = weights_with_a_constant_block(np.random.default_rng(1))
    words, scales = quantize_nf4(weights)
    assert words.dtype == np.uint32 and words.size == weights.size // 8
    back = dequantize_nf4(words, scales, weights.size)
    gaps = np.diff(NF4_LEVELS).max()
    for b in range(-(-weights.size // QUANT_BLOCK)):
        part = slice(b * QUANT_BLOCK, min((b + 1) * QUANT_BLOCK, weights.size))
        absmax = np.abs(weights[part]).max()
        assert np.abs(back[part] - weights[part]).max() <= absmax * (gaps / 2 + 2.0**-10) + 1e-7
        assert np.isclose(np.abs(back[part]).max(), np.float16(absmax), rtol=1e-6)  # the extreme keeps its value
    np.testing.assert_array_equal(back[1000:1088], np.float32(np.float16(0.25)))
    # weight e of each group of 8 sits in bits 4e..4e+3: level 15 (1.0) for the block's max
    first = np.zeros(64, np.float32)
    first[3] = 1.0
    words, _ = quantize_nf4(first)
    assert words[0] == 0x7777F777


@pytest.mark.parametrize("kind", ["int8", "nf4"])
@pytest.mark.parametrize("tokens, split, k", [(1, False, 128), (3, False, 104), (6, False, 128), (70, False, 128),
                                             (70, True, 128)],
                         ids=["1-wide", "3-narrow", "6-wide", "70", "70-split-k"])
def test_quantized_ragged_stack_equals_numpy(gpu, kind, tokens, split, k):
    """The per-token kernel reads 16 bytes of weights at a time when each row starts a 16-byte
    word (k a multiple of 16 for int8, 32 for NF4), a vec4 of weights at a time otherwise; the
    tiled kernel reads a vec4 at a time (here with f32 sums; its f16 sums:
    test_matmul.test_tiled_f16_sums_of_quantized_weights)."""
    tuning = DEFAULT_TUNING
    tuning = replace(tuning, tiled_half=False)
    if split:
        tuning = replace(tuning, split_k_groups=256)
        tuning = replace(tuning, split_k_min_k4=4)
    rng = np.random.default_rng(tokens)
    big, small = 40, 8
    first = [rng.standard_normal((big, k)).astype(np.float32) for _ in range(3)]
    second = [rng.standard_normal((small, k)).astype(np.float32) for _ in range(2)]
    up = Uploader(gpu, "fp16", quant_layers=NF4_INT8_LAYERS + 1, quant_type=kind)
    w1, w2 = up.matrices(first, second, layer=NF4_INT8_LAYERS)  # past the layers NF4 keeps in int8
    assert w1.fmt == w2.fmt == kind and w1.scales is w2.scales
    flat = np.concatenate([m.reshape(-1) for m in first + second])
    quantize, dequantize = (quantize_int8, dequantize_int8) if kind == "int8" else (quantize_nf4, dequantize_nf4)
    dequantized = dequantize(*quantize(flat), flat.size)
    first_q = dequantized[: 3 * big * k].reshape(3, big, k)
    second_q = dequantized[3 * big * k:].reshape(2, small, k)
    x_host = rng.standard_normal((4, tokens, k)).astype(np.float32)
    x = Act(gpu.upload(x_host), k, tokens, 4)
    out = Act(gpu.storage((3 * big + 2 * small) * tokens * 4), big, tokens, 3)
    hidden = Act(out.buffer, small, tokens, 2, offset=3 * big * tokens)
    graph = StepGraph(gpu, KernelCache(gpu.device), 0, 1, None, None, None, tuning=tuning)
    graph.matmuls([(w1, x.plane(0, 3), out, "none"), (w2, x.plane(2, 2), hidden, ("tanh", "none"))])
    encoder = gpu.device.create_command_encoder()
    graph.encode(encoder)
    gpu.device.queue.submit([encoder.finish()])
    raw = gpu.read(out.buffer, (3 * big + 2 * small) * tokens * 4).view(np.float32)
    got_rkv = raw[: 3 * big * tokens].reshape(3, tokens, big)
    got_hidden = raw[3 * big * tokens:].reshape(2, tokens, small)
    np.testing.assert_allclose(got_rkv, np.stack([x_host[z] @ first_q[z].T for z in range(3)]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_hidden[0], np.tanh(x_host[2] @ second_q[0].T), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_hidden[1], x_host[3] @ second_q[1].T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
@pytest.mark.parametrize("version", list(TINY_MODELS))
def test_quantized_models_stay_close_to_the_reference(gpu, version, kind, references):
    from ai00_trio.engine import load_model

    path, _ = TINY_MODELS[version]
    model = load_model(path, precision="fp16", context=gpu, quant=99, quant_type=kind)
    plain = load_model(path, precision="fp16", context=gpu)
    assert model.quant_layers == model.info.n_layer and model.quant_type == kind
    assert model.weight_bytes < (0.8 if kind == "int8" else 0.6) * plain.weight_bytes
    ref = references(version)
    for prompt in ref.prompts:
        want = ref[f"{prompt}/logits_last"]
        logits = model.forward(ref.tokens(prompt), model.new_state())
        err = np.abs(logits - want).max()
        assert err <= LOGIT_BOUND[kind], f"{prompt}: max |Δlogit| {err}"
        assert np.corrcoef(logits, want)[0, 1] >= LEAST_CORRELATION[kind]
        assert want[logits.argmax()] >= want.max() - NEAR_TIE[kind]


def test_config_quant_options():
    config = parse_config('[model]\nquant = 12\nquant_type = "Int8"\n')
    assert (config.model.quant_layers, config.model.quant_kind) == (12, "int8")
    config = parse_config('[model]\nquant = 12\nquant_type = "NF4"\n')
    assert (config.model.quant_layers, config.model.quant_kind) == (12, "nf4")
    assert parse_config('[model]\nquant = 12\nquant_type = "None"\n').model.quant_layers == 0
    with pytest.raises(ConfigError, match="quant_type: expected None, Int8 or NF4, got 'SF4' \\(SF4 is not"):
        parse_config('[model]\nquant = 12\nquant_type = "SF4"\n')
    with pytest.raises(ConfigError, match="model.quant must be 0 or more"):
        parse_config('[model]\nquant = -1\nquant_type = "Int8"\n')


def test_nf4_keeps_the_first_layers_in_int8():
    assert [stored_as("nf4", layer) for layer in range(NF4_INT8_LAYERS + 2)] == \
        ["int8"] * NF4_INT8_LAYERS + ["nf4", "nf4"]
    assert {stored_as("int8", layer) for layer in range(6)} == {"int8"}
    assert [stored_as("nf4", layer, 1) for layer in range(3)] == ["int8", "nf4", "nf4"]


def test_each_version_chooses_its_nf4_mix():
    from ai00_trio.engine.versions import ARCHITECTURES
    assert [ARCHITECTURES["v4"].nf4_int8_layers(n) for n in (2, 6, 12, 24, 32)] == [2, 3, 4, 8, 11]
    assert {ARCHITECTURES[v].nf4_int8_layers(24) for v in ("v5", "v6", "v7")} == {NF4_INT8_LAYERS}
    assert ARCHITECTURES["v7"].nf4_int8_layers(2) == 2


@pytest.mark.gpu
def test_nf4_int8_layers_choose_the_mix(gpu):
    """load_model's nf4_int8_layers: each layer kept in int8 stores its projections in about
    twice NF4's bytes."""
    from ai00_trio.engine import load_model
    from ai00_trio.engine.versions import ARCHITECTURES
    path = TINY_MODELS["v7"][0]
    sizes = [load_model(path, context=gpu, quant=99, quant_type="nf4", nf4_int8_layers=n).weight_bytes
             for n in (0, 1, 99)]
    assert sizes[0] < sizes[1] < sizes[2]
    int8 = load_model(path, context=gpu, quant=99, quant_type="int8").weight_bytes
    assert sizes[2] == int8
    v4 = load_model(TINY_MODELS["v4"][0], context=gpu, quant=99, quant_type="nf4")  # its version's mix
    third = ARCHITECTURES["v4"].nf4_int8_layers(v4.info.n_layer)
    assert [m.fmt for m in v4.arch.output] == ["int8"] * third + ["nf4"] * (v4.info.n_layer - third)


# A generated v6 model (random weights of real scale, tests/reference64.py) wide and deep enough
# for the first layers' share of the error to show; the tensors the uploader quantizes (the
# decay LoRA's first matrix goes up transposed).
KL_SHAPE = {"width": 512, "layers": 12, "vocab": 512}
KL_TOKENS = 32
V6_PROJECTIONS = tuple(f"att.{m}.weight" for m in ("receptance", "key", "value", "gate", "output")) + \
    tuple(f"ffn.{m}.weight" for m in ("key", "value", "receptance"))


def mean_kl(ref: np.ndarray, got: np.ndarray) -> float:
    lp = ref - ref.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    lq = got - got.max(1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(1, keepdims=True))
    return float((np.exp(lp) * (lp - lq)).sum(1).mean())


def read_back(tensors: dict[str, np.ndarray], code_of_layer) -> dict[str, np.ndarray]:
    """The checkpoint as the GPU reads it when layer i's projections are stored as code_of_layer(i)."""
    out = dict(tensors)
    for i in range(KL_SHAPE["layers"]):
        kind = code_of_layer(i)
        quantize, dequantize = (quantize_int8, dequantize_int8) if kind == "int8" else (quantize_nf4, dequantize_nf4)
        for m in V6_PROJECTIONS + ("att.time_decay_w1",):
            name = f"blocks.{i}.{m}"
            w = tensors[name].T if m == "att.time_decay_w1" else tensors[name]
            back = dequantize(*quantize(np.ascontiguousarray(w).reshape(-1)), w.size).reshape(w.shape)
            out[name] = np.ascontiguousarray(back.T if m == "att.time_decay_w1" else back)
    return out


@pytest.fixture(scope="module")
def generated_v6():
    from reference64 import Reference64, random_checkpoint

    tensors = random_checkpoint("v6", **KL_SHAPE, seed=5)
    tokens = np.random.default_rng(6).integers(0, KL_SHAPE["vocab"], KL_TOKENS).tolist()
    exact = Reference64(tensors, "v6").forward(tokens)
    all_nf4 = mean_kl(exact, Reference64(read_back(tensors, lambda i: "nf4"), "v6").forward(tokens))
    mixed = mean_kl(exact, Reference64(read_back(tensors, lambda i: stored_as("nf4", i)), "v6").forward(tokens))
    return tensors, tokens, exact, all_nf4, mixed


def test_nf4_with_int8_first_layers_cuts_the_kl(generated_v6):
    """Weight error alone (float64): the first layers in int8 cut an all-NF4 model's KL
    divergence by 1.6× or more (measured: 9.9e-3 → 4.8e-3, 2.1×, with 3 of its 12 layers in int8)."""
    _, _, _, all_nf4, mixed = generated_v6
    assert 1e-3 < all_nf4 < 0.3  # 4 bits do move this model: the comparison means something
    assert mixed <= all_nf4 / 1.6, (mixed, all_nf4)


def test_nf4_model_on_the_gpu_has_the_predicted_kl(gpu, generated_v6, tmp_path):
    """The GPU's NF4 model (fp16 elsewhere) stays as close to the float64 logits as its
    read-back weights predict (fp16 rounding adds ~1e-5), and well below an all-NF4 model."""
    from safetensors.numpy import save_file

    from ai00_trio.engine import load_model

    tensors, tokens, exact, all_nf4, mixed = generated_v6
    path = tmp_path / "v6.st"
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(path))
    model = load_model(path, precision="fp16", context=gpu, quant=99, quant_type="nf4")
    assert [m.fmt for m in model.arch.ffn_key] == [stored_as("nf4", i) for i in range(KL_SHAPE["layers"])]
    got = mean_kl(exact, model.forward(tokens, model.new_state(), full=True))
    assert got <= 1.5 * mixed + 1e-5, (got, mixed)
    assert got <= all_nf4 / 1.6, (got, all_nf4)
