"""Int8 weights: the packing's error bound, int8 matmuls (per-token and tiled kernels, ragged
stacks, split K) against numpy on the same dequantized weights, every tiny model quantized
against its reference logits, and the config's quant / quant_type."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_MODELS

from ai00_trio.config import ConfigError, parse_config
from ai00_trio.engine.quant import INT8_BLOCK, dequantize_int8, quantize_int8
from ai00_trio.engine.upload import Uploader
from ai00_trio.gpu import graph as graph_module
from ai00_trio.gpu.graph import Act, StepGraph
from ai00_trio.gpu.kernels import KernelCache

INT8_LOGITS = 0.15  # against the fp32 reference (measured ≤ 0.12); fp16 weights stay within 0.03
NEAR_TIE = 0.05     # int8 may pick another token only where the reference's top two are this close


def test_packing_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.standard_normal(1000) * 0.05, np.full(88, 0.25), rng.standard_normal(4) * 3])
    words, scales = quantize_int8(weights)
    assert words.dtype == np.uint32 and words.size == weights.size // 4
    assert scales.size == -(-weights.size // INT8_BLOCK)
    back = dequantize_int8(words, scales, weights.size)
    for b in range(scales.size):
        part = slice(b * INT8_BLOCK, min((b + 1) * INT8_BLOCK, weights.size))
        span = weights[part].max() - weights[part].min()
        # half a step of 255, plus the f16 rounding of the block's bounds
        bound = span / 510 + 2 * np.abs(weights[part]).max() * 2.0**-11 + 1e-7
        assert np.abs(back[part] - weights[part]).max() <= bound
    np.testing.assert_array_equal(back[1000:1088], 0.25)  # a constant block comes back exactly


@pytest.mark.parametrize("tokens, split, k", [(1, False, 96), (3, False, 100), (6, False, 96), (70, False, 96),
                                             (70, True, 96)],
                         ids=["1-wide", "3-narrow", "6-wide", "70", "70-split-k"])
def test_int8_ragged_stack_equals_numpy(gpu, monkeypatch, tokens, split, k):
    """The per-token kernel reads 16 weights at a time when each row starts a 16-byte word
    (k a multiple of 16), 4 at a time otherwise; the tiled kernel reads 4 at a time."""
    if split:
        monkeypatch.setattr(graph_module, "SPLIT_K_GROUPS", 256)
        monkeypatch.setattr(graph_module, "SPLIT_K_MIN_K4", 4)
    rng = np.random.default_rng(tokens)
    big, small = 40, 8
    first = [rng.standard_normal((big, k)).astype(np.float32) for _ in range(3)]
    second = [rng.standard_normal((small, k)).astype(np.float32) for _ in range(2)]
    up = Uploader(gpu, "fp16", int8_layers=1)
    w1, w2 = up.matrices(first, second, layer=0)
    assert w1.fmt == w2.fmt == "int8" and w1.scales is w2.scales
    words, scales = quantize_int8(np.concatenate([m.reshape(-1) for m in first + second]))
    dequantized = dequantize_int8(words, scales, words.size * 4)
    first_q = dequantized[: 3 * big * k].reshape(3, big, k)
    second_q = dequantized[3 * big * k:].reshape(2, small, k)
    x_host = rng.standard_normal((4, tokens, k)).astype(np.float32)
    x = Act(gpu.upload(x_host), k, tokens, 4)
    out = Act(gpu.storage((3 * big + 2 * small) * tokens * 4), big, tokens, 3)
    hidden = Act(out.buffer, small, tokens, 2, offset=3 * big * tokens)
    graph = StepGraph(gpu, KernelCache(gpu.device), 0, 1, None, None, None)
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


@pytest.mark.parametrize("version", list(TINY_MODELS))
def test_int8_models_stay_close_to_the_reference(gpu, version, references):
    from ai00_trio.engine import load_model

    path, _ = TINY_MODELS[version]
    model = load_model(path, precision="fp16", context=gpu, int8_layers=99)
    plain = load_model(path, precision="fp16", context=gpu)
    assert model.int8_layers == model.info.n_layer
    assert model.weight_bytes < 0.8 * plain.weight_bytes
    ref = references(version)
    for prompt in ref.prompts:
        want = ref[f"{prompt}/logits_last"]
        logits = model.forward(ref.tokens(prompt), model.new_state())
        err = np.abs(logits - want).max()
        assert err <= INT8_LOGITS, f"{prompt}: max |Δlogit| {err}"
        assert want[logits.argmax()] >= want.max() - NEAR_TIE


def test_config_quant_options():
    config = parse_config('[model]\nquant = 12\nquant_type = "Int8"\n')
    assert config.model.int8_layers == 12
    assert parse_config('[model]\nquant = 12\nquant_type = "None"\n').model.int8_layers == 0
    with pytest.raises(ConfigError, match="quant_type: expected None or Int8, got 'NF4'"):
        parse_config('[model]\nquant = 12\nquant_type = "NF4"\n')
    with pytest.raises(ConfigError, match="model.quant must be 0 or more"):
        parse_config('[model]\nquant = -1\nquant_type = "Int8"\n')
