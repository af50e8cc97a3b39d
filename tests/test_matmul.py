"""Linear layers on the GPU against numpy: the few-token kernel (ragged stacks in one pass,
16-byte f16 reads, thread counts by shape) and the tiled kernel on matrices that share a buffer."""
from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from ai00_trio.engine.quant import NF4_INT8_LAYERS, dequantize_int8, dequantize_nf4, quantize
from ai00_trio.engine.upload import Uploader
from ai00_trio.gpu.graph import Act, StepGraph
from ai00_trio.gpu.tuning import DEFAULT_TUNING, KernelTuning, RowsShape, TileShape
from ai00_trio.gpu.kernels import KernelCache

DEQUANTIZE = {"int8": dequantize_int8, "nf4": dequantize_nf4}
PAST_INT8 = NF4_INT8_LAYERS  # the first layer whose projections NF4 stores as NF4 (not int8)


def run(gpu, record, tuning: KernelTuning = DEFAULT_TUNING) -> StepGraph:
    graph = StepGraph(gpu, KernelCache(gpu.device), 0, 1, None, None, None, tuning=tuning)
    record(graph)
    encoder = gpu.device.create_command_encoder()
    graph.encode(encoder)
    gpu.device.queue.submit([encoder.finish()])
    return graph


def read(gpu, act: Act) -> np.ndarray:
    raw = gpu.read(act.buffer, (act.offset + act.planes * act.t * act.width) * 4).view(np.float32)
    return raw[act.offset:].reshape(act.planes, act.t, act.width)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("tokens, split", [(1, False), (3, False), (6, False), (70, False), (70, True)],
                         ids=["1", "3", "6", "70", "70-split-k"])
def test_ragged_stack_in_one_pass_equals_numpy(gpu, precision, tokens, split):
    """Matrices of different heights on one input, in one dispatch (and its reduce pass when K
    is split): each output as if each matmul ran alone."""
    tuning = DEFAULT_TUNING
    tuning = replace(tuning, tiled_half=False)  # f16 multiply-adds: test_tiled_kernel_edges_equal_numpy
    if split:
        tuning = replace(tuning, split_k_groups=256)
        tuning = replace(tuning, split_k_min_k4=4)
    rng = np.random.default_rng(tokens)
    k, big, small = 64, 48, 8
    up = Uploader(gpu, precision)
    first = [rng.standard_normal((big, k)).astype(np.float32) for _ in range(3)]
    second = [rng.standard_normal((small, k)).astype(np.float32) for _ in range(2)]
    w1, w2 = up.matrices(first, second)
    assert w1.buffer is w2.buffer and w2.offset == 3 * big * k
    x_host = rng.standard_normal((4, tokens, k)).astype(np.float32)  # planes 0-2 feed w1, 2-3 feed w2
    x = Act(gpu.upload(x_host), k, tokens, 4)
    out = Act(gpu.storage((3 * big + 2 * small) * tokens * 4), big, tokens, 3)
    hidden = Act(out.buffer, small, tokens, 2, offset=3 * big * tokens)
    graph = run(gpu, lambda g: g.matmuls([(w1, x.plane(0, 3), out, "none"),
                                          (w2, x.plane(2, 2), hidden, ("tanh", "sigmoid"))]), tuning)
    assert len(graph.dispatches) == (2 if split else 1)  # one ragged stack, per-token or tiled

    def rounded(m):
        return m.astype(np.float16).astype(np.float32) if precision == "fp16" else m

    want_rkv = np.stack([x_host[z] @ rounded(first[z]).T for z in range(3)])
    pre = [x_host[2 + z] @ rounded(second[z]).T for z in range(2)]
    want_hidden = np.stack([np.tanh(pre[0]), 1 / (1 + np.exp(-pre[1]))])
    np.testing.assert_allclose(read(gpu, out), want_rkv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(read(gpu, hidden), want_hidden, rtol=1e-4, atol=1e-4)


def test_matrices_sharing_a_buffer_need_one_input_width(gpu):
    up = Uploader(gpu, "fp16")
    with pytest.raises(ValueError, match="one input width"):
        up.matrices([np.zeros((4, 8))], [np.zeros((4, 16))])


def test_one_activation_per_stacked_matrix(gpu):
    up = Uploader(gpu, "fp32")
    (w,) = up.matrices([np.zeros((4, 8)), np.zeros((4, 8))])
    x = Act(gpu.storage(2 * 8 * 4), 8, 1, 2)
    y = Act(gpu.storage(2 * 4 * 4), 4, 1, 2)
    with pytest.raises(ValueError, match="3 activations for 2 matrices"):
        run(gpu, lambda g: g.matmuls([(w, x, y, ("tanh", "tanh", "none"))]))


@pytest.mark.parametrize("tile", [TileShape(8, 8, 16, 8, 8), TileShape(4, 4, 16, 16, 8), TileShape(8, 4, 16, 16, 4),
                                  TileShape(4, 8, 16, 16, 4), TileShape(4, 4, 16, 16, 16, 4)],
                         ids=["8x8", "4x4", "8x4-k16", "4x8-k16", "4x4-k64-runs16"])
@pytest.mark.parametrize("split_groups", [1, 256], ids=["whole-k", "split-k"])
@pytest.mark.parametrize("half", [False, True], ids=["f32-math", "f16-math"])
def test_tiled_kernel_edges_equal_numpy(gpu, tile, split_groups, half):
    """Rows, tokens and K that fill no tile evenly, with and without splitting K, each tile shape,
    with f32 multiply-adds and with f16 ones (HALF_MATH: its partial sums round to f16, so it
    agrees to ~1e-3 of the largest output)."""
    tuning = DEFAULT_TUNING
    if half and not gpu.has_f16:
        pytest.skip("the device has no shader-f16")
    tuning = replace(tuning, rows_max_tokens=0)
    tuning = replace(tuning, tiled_half=half)
    tuning = replace(tuning, tile=tile)
    tuning = replace(tuning, tile_half=tile)
    tuning = replace(tuning, split_k_groups=split_groups)
    tuning = replace(tuning, split_k_min_k4=8)
    rng = np.random.default_rng(7)
    z, m, k, tokens = 2, 136, 264, 70
    (w,) = Uploader(gpu, "fp16").matrices([rng.standard_normal((m, k)).astype(np.float32) for _ in range(z)])
    weights = gpu.read(w.buffer, z * m * k * 2).view(np.float16).astype(np.float32).reshape(z, m, k)
    x_host = rng.standard_normal((z, tokens, k)).astype(np.float32)
    x = Act(gpu.upload(x_host), k, tokens, z)
    y = Act(gpu.upload(np.ones((z, tokens, m), np.float32)), m, tokens, z)
    graph = run(gpu, lambda g: g.matmul(w, x, y, "relu_sq", add=True), tuning)
    assert len(graph.dispatches) == (2 if split_groups > 1 else 1)
    assert ("HALF_MATH" in graph.labels[0]) == half
    want = 1 + np.maximum(np.einsum("ztk,zmk->ztm", x_host, weights), 0) ** 2
    if half:  # relu² doubles the relative error of the sums
        assert np.abs(read(gpu, y) - want).max() <= 3e-3 * np.abs(want).max()
    else:
        np.testing.assert_allclose(read(gpu, y), want, rtol=1e-4, atol=1e-3)


def test_f16_sums_in_shorter_runs_round_less(gpu):
    """HALF_MATH adds each run of 4 * run_k4 products in f16 before the f32 total: at K 2048 runs
    of 8 products come out nearer the exact sums of the same f16 operands than runs of 64."""
    if not gpu.has_f16:
        pytest.skip("the device has no shader-f16")
    rng = np.random.default_rng(11)
    m, k, tokens = 128, 2048, 64
    (w,) = Uploader(gpu, "fp16").matrices([rng.standard_normal((m, k)).astype(np.float32)])
    weights = gpu.read(w.buffer, m * k * 2).view(np.float16).astype(np.float64).reshape(m, k)
    x_host = rng.standard_normal((tokens, k)).astype(np.float32)
    want = x_host.astype(np.float16).astype(np.float64) @ weights.T
    errors = {}
    for run_k4 in (16, 2):
        tuning = replace(DEFAULT_TUNING, rows_max_tokens=0, split_k_groups=1,
                         tile_half=replace(DEFAULT_TUNING.tile_half, k4=16, run_k4=run_k4))
        x = Act(gpu.upload(x_host), k, tokens)
        y = Act(gpu.storage(tokens * m * 4), m, tokens)
        graph = run(gpu, lambda g: g.matmul(w, x, y), tuning)
        assert "HALF_MATH" in graph.labels[0]
        errors[run_k4] = np.sqrt(np.mean((read(gpu, y)[0] - want) ** 2))
    assert errors[2] < 0.6 * errors[16], errors


@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_tiled_f16_sums_of_quantized_weights(gpu, precision):
    """int8 and NF4 weights, decoded to f16 in the tiles, through the tiled kernel's f16 sums."""
    tuning = DEFAULT_TUNING
    if not gpu.has_f16:
        pytest.skip("the device has no shader-f16")
    tuning = replace(tuning, rows_max_tokens=0)
    rng = np.random.default_rng(5)
    m, k, tokens = 136, 512, 70
    weights = rng.standard_normal((m, k)).astype(np.float32)
    (w,) = Uploader(gpu, "fp16", quant_layers=PAST_INT8 + 1, quant_type=precision).matrices([weights], layer=PAST_INT8)
    stored = DEQUANTIZE[precision](*quantize(precision, weights.reshape(-1)), weights.size).reshape(m, k)
    x_host = rng.standard_normal((tokens, k)).astype(np.float32)
    x = Act(gpu.upload(x_host), k, tokens)
    y = Act(gpu.storage(tokens * m * 4), m, tokens)
    graph = run(gpu, lambda g: g.matmul(w, x, y), tuning)
    assert "HALF_MATH" in graph.labels[0]
    want = x_host @ stored.T
    assert np.abs(read(gpu, y)[0] - want).max() <= 2e-3 * np.abs(want).max()


@pytest.mark.parametrize("k4, tiles, splits", [(512, 96, 2), (2048, 32, 8), (512, 8, 8), (32, 128, 1), (32, 8, 1)])
def test_split_k_parts(gpu, k4, tiles, splits):
    """K is cut into a power of two of parts: the fewest that make SPLIT_K_GROUPS workgroups,
    each part at least SPLIT_K_MIN_K4 vec4 long."""
    tuning = DEFAULT_TUNING
    tuning = replace(tuning, rows_max_tokens=0)
    rows = tiles * tuning.tile.rows
    (w,) = Uploader(gpu, "fp16").matrices([np.zeros((rows, 4 * k4), np.float32)])
    x = Act(gpu.storage(64 * 4 * k4 * 4), 4 * k4, 64)
    y = Act(gpu.storage(64 * rows * 4), rows, 64)
    graph = run(gpu, lambda g: g.matmul(w, x, y), tuning)
    assert graph.dispatches[0][2] == (tiles, splits, 1)
    assert len(graph.dispatches) == (2 if splits > 1 else 1)


@pytest.mark.parametrize("half", [False, True], ids=["f32-math", "f16-math"])
def test_long_steps_take_the_long_tile(gpu, half):
    """From long_tile_min_tokens tokens on, f32 matmuls take tile_long's tiles and f16 ones
    tile_half_long's (here made 128 tokens wide to tell them from tile_half's 64)."""
    tuning = replace(DEFAULT_TUNING, tiled_half=half, tile_half_long=TileShape(4, 8, 16, 16, 8, 4))
    rows, k = 64, 32
    for tokens in (tuning.long_tile_min_tokens - 64, tuning.long_tile_min_tokens):
        (w,) = Uploader(gpu, "fp16").matrices([np.zeros((rows, k), np.float32)])
        x = Act(gpu.storage(tokens * k * 4), k, tokens)
        y = Act(gpu.storage(tokens * rows * 4), rows, tokens)
        graph = run(gpu, lambda g: g.matmul(w, x, y), tuning)
        long = tokens >= tuning.long_tile_min_tokens
        if half and gpu.has_f16:
            tile = tuning.tile_half_long if long else tuning.tile_half
        else:
            tile = tuning.tile_long if long else tuning.tile
        assert graph.dispatches[0][2] == (1, -(-tokens // tile.tokens), 1), (tokens, tile)


@pytest.mark.parametrize("shape", [RowsShape(128, 8, 4, 16, 32, 1), RowsShape(64, 1, 8, 8, 16, 1),
                                   RowsShape(32, 4, 4, 32, 8, 1)],
                         ids=["128x4-8lanes-16", "64x8-1lane-8", "32x4-4lanes-32"])
@pytest.mark.parametrize("precision", ["fp16", "int8", "nf4"])
@pytest.mark.parametrize("split_groups", [1, 4096], ids=["whole-k", "split-k"])
def test_rows_kernel_edges_equal_numpy(gpu, shape, precision, split_groups):
    """The batched-decode kernel (matmul_rows) on rows, tokens and K that fill no workgroup
    evenly, in a ragged stack, for each weight format it reads, with and without splitting K."""
    tuning = DEFAULT_TUNING
    shape = dataclasses.replace(shape, split_groups=split_groups)
    tuning = replace(tuning, tiled_half=False)  # which takes f16 weights from 32 tokens
    tuning = replace(tuning, rows=shape)
    tuning = replace(tuning, rows_few=shape)
    tuning = replace(tuning, rows_min_k4=8)
    rng = np.random.default_rng(11)
    m, k, tokens = (shape.rows(shape.lanes) + 24, 200), 640, 37
    if precision == "nf4":  # which takes only up to ROWS_FEW_TOKENS
        tuning = replace(tuning, rows_few_tokens=tokens)
    assert tokens < tuning.rows_max_tokens
    weights = [rng.standard_normal((rows, k)).astype(np.float32) for rows in m]
    if precision == "fp16":
        w = Uploader(gpu, "fp16").matrices(weights[:1], weights[1:])
        stored = [a.astype(np.float16).astype(np.float32) for a in weights]
    else:
        w = Uploader(gpu, "fp16", quant_layers=PAST_INT8 + 1, quant_type=precision).matrices(weights[:1], weights[1:],
                                                                                            layer=PAST_INT8)
        flat = np.concatenate([a.reshape(-1) for a in weights])
        restored = DEQUANTIZE[precision](*quantize(precision, flat), flat.size)
        stored = [restored[: m[0] * k].reshape(m[0], k), restored[m[0] * k:].reshape(m[1], k)]
    x_host = rng.standard_normal((tokens, k)).astype(np.float32)
    x = Act(gpu.upload(x_host), k, tokens)
    y = Act(gpu.upload(np.ones((tokens, sum(m)), np.float32)), m[0], tokens)
    second = Act(y.buffer, m[1], tokens, offset=tokens * m[0])
    graph = run(gpu, lambda g: g.matmuls([(w[0], x, y, "relu_sq"), (w[1], x, second, "none")]), tuning)
    assert graph.labels[0].startswith("matmul_rows")
    assert len(graph.dispatches) == (2 if split_groups > 1 else 1)
    got = [read(gpu, y)[0], read(gpu, second)[0]]
    np.testing.assert_allclose(got[0], np.maximum(x_host @ stored[0].T, 0) ** 2, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[1], x_host @ stored[1].T, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("half, precision, tokens, heights, kernel", [
    (False, "fp16", 16, [2048], "matmul_rows"), (False, "fp16", 32, [2048], "matmul_rows"),
    (False, "fp16", 63, [2048], "matmul_rows"), (False, "fp16", 64, [2048], "matmul_tiled"),
    (False, "fp16", 64, [2048, 2048, 2048, 64], "matmul_tiled"), (False, "fp16", 64, [8192], "matmul_rows"),
    (False, "fp16", 64, [8192, 64], "matmul_tiled"), (False, "fp16", 65, [8192], "matmul_tiled"),
    (False, "fp16", 15, [2048], "matvec"),
    (True, "fp16", 15, [2048], "matvec"), (True, "fp16", 16, [2048], "matmul_rows"),
    (True, "fp16", 31, [2048], "matmul_rows"), (True, "fp16", 32, [2048], "matmul_tiled"),
    (True, "int8", 32, [2048], "matmul_rows"), (True, "int8", 33, [2048], "matmul_tiled"),
    (True, "fp16", 64, [8192], "matmul_tiled")])
def test_which_kernel_takes_a_matmul(gpu, half, precision, tokens, heights, kernel):
    """With f32 sums in the tiled kernel, the rows kernel takes 16-63 tokens (in two shapes), and
    64 tokens only through matrices of 4096 rows or more (in 32-token blocks). With f16 sums
    (shader-f16), the tiled kernel takes every matmul from 32 tokens on (int8 and NF4: 33)."""
    tuning = DEFAULT_TUNING
    tuning = replace(tuning, tiled_half=half)
    if half and not gpu.has_f16:
        pytest.skip("the device has no shader-f16")
    k = 512
    quant = dict(quant_layers=1, quant_type="int8") if precision == "int8" else {}
    matrices = Uploader(gpu, "fp16", **quant).matrices(*[[np.zeros((m, k), np.float32)] for m in heights], layer=0)
    x = Act(gpu.storage(tokens * k * 4), k, tokens)
    out = gpu.storage(sum(heights) * tokens * 4)
    firsts = np.cumsum([0] + heights[:-1]) * tokens
    jobs = [(w, x, Act(out, w.m, tokens, offset=int(first)), "none") for w, first in zip(matrices, firsts)]
    graph = run(gpu, lambda g: g.matmuls(jobs), tuning)
    assert graph.labels[0].startswith(kernel + "[")
    if kernel == "matmul_rows":  # its shape for this many tokens: rows and tokens per workgroup
        shape = tuning.rows_few if tokens <= 32 else tuning.rows if tokens < 64 else tuning.rows_tall
        lanes = shape.lanes if gpu.has_subgroups else 1
        assert graph.dispatches[0][2][0] == -(-max(heights) // shape.rows(lanes)) * -(-tokens // shape.tokens)


@pytest.mark.parametrize("tokens, kernel", [(32, "matmul_rows"), (33, "matmul_tiled")])
def test_nf4_takes_the_rows_kernel_up_to_32_tokens(gpu, tokens, kernel):
    k = 512
    (w,) = Uploader(gpu, "fp16", quant_layers=PAST_INT8 + 1, quant_type="nf4").matrices([np.zeros((2048, k), np.float32)],
                                                                                layer=PAST_INT8)
    x = Act(gpu.storage(tokens * k * 4), k, tokens)
    y = Act(gpu.storage(tokens * 2048 * 4), 2048, tokens)
    graph = run(gpu, lambda g: g.matmul(w, x, y))
    assert graph.labels[0].startswith(kernel + "[")
