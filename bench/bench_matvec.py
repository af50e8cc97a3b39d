"""GPU micro-benchmark of the few-token matmul (decode), of the tiled matmul's tile shapes
(batches, prefill), of its split-K part counts (64-sequence steps) and of waiting on the GPU.

    python bench/bench_matvec.py [--repeat 100]
    python bench/bench_matvec.py --tiled [--repeat 20] [--tiles "R,T,RT,TT,K4;..."] [--half 0,1]
    python bench/bench_matvec.py --splits "4,4,16,16,8;4,4,16,16,4" [--repeat 20]
    python bench/bench_matvec.py --peak [--repeat 10]

For each weight shape of a 1.5B-class RWKV-7 layer (and the head), times `repeat` chained
dispatches of the same matmul in one compute pass (each writes the buffer the next one writes,
so the GPU orders them, as in a real step) under each kernel variant, and reports µs per
dispatch and the weight bandwidth that implies. Prints one JSON line per figure.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ai00_trio.gpu.context import Readback, create_context  # noqa: E402
from ai00_trio.gpu.graph import Act, Matrix, StepGraph  # noqa: E402
from ai00_trio.gpu.kernels import KernelCache  # noqa: E402
from ai00_trio.gpu.tuning import DEFAULT_TUNING, RowsShape, TileShape  # noqa: E402

SHAPES = {  # name: (stacked matrices, rows, input width)
    "rkv": (3, 2048, 2048),
    "ffn_key": (1, 8192, 2048),
    "ffn_value": (1, 2048, 8192),
    "output": (1, 2048, 2048),
    "lora_down": (4, 128, 2048),
    "lora_up": (4, 2048, 128),
    "head": (1, 65536, 2048),
}


def report(**fields) -> None:
    print("RESULT", json.dumps(fields), flush=True)


def timed(ctx, back: Readback, source, encode, repeat: int) -> float:
    """Seconds per repetition of what `encode(encoder)` records, best of 3."""
    best = float("inf")
    for _ in range(4):
        encoder = ctx.device.create_command_encoder()
        encode(encoder)
        back.record(encoder, source, 4)
        command = encoder.finish()
        started = time.perf_counter()
        ctx.device.queue.submit([command])
        back.fetch(4)
        best = min(best, time.perf_counter() - started)
    return best / repeat


FLOOR_KERNEL = """
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) { out[id.x] = out[id.x] + 1.0; }
"""


def floor_probe(ctx, back: Readback, repeat: int) -> None:
    """What a dispatch costs when it does (almost) nothing: `repeat` one-workgroup dispatches
    that each write the same buffer (so each waits on the one before it), or each its own."""
    device = ctx.device
    module = device.create_shader_module(code=FLOOR_KERNEL)
    pipeline = device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
    buffers = [ctx.storage(256) for _ in range(repeat)]
    groups = [device.create_bind_group(layout=pipeline.get_bind_group_layout(0),
                                       entries=[{"binding": 0, "resource": {"buffer": b}}]) for b in buffers]
    for name, chosen in (("same buffer", [groups[0]] * repeat), ("own buffers", groups)):
        def encode(encoder, chosen=chosen):
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            for group in chosen:
                compute.set_bind_group(0, group)
                compute.dispatch_workgroups(1)
            compute.end()
        per = timed(ctx, back, buffers[0], encode, repeat)
        report(probe=f"tiny dispatch, {name}", us=round(per * 1e6, 2))


TILES = [  # rows per thread, tokens per thread, row threads, token threads, vec4 per K step
    (4, 4, 16, 16, 8), (8, 4, 16, 16, 8), (4, 8, 16, 8, 8), (4, 4, 8, 16, 8), (4, 4, 16, 8, 8),
    (4, 4, 16, 16, 4), (8, 8, 16, 8, 4),
]


def tiled_shapes(ctx, back: Readback, kernels, repeat: int, tiles: list[tuple], halves: list[bool]) -> None:
    """Each tile shape (and split-K target, and f16 or f32 multiply-adds) on each layer matmul at
    a 64-sequence decode step and a 1024-token prefill chunk: µs per matmul (with its reduce
    pass), TFLOP/s, and the largest error against numpy relative to the largest output."""
    rng = np.random.default_rng(0)
    fmt = "f16" if ctx.has_f16 else "f16_packed"
    for name, (z, m, k) in SHAPES.items():
        if name.startswith("lora"):
            continue
        weights = (rng.standard_normal((z, m, k)) * 0.02).astype(np.float16)
        w = Matrix(ctx.upload(weights), z, m, k, fmt)
        for t in (64, 1024) if name != "head" else (64,):
            x_host = rng.standard_normal((z, t, k)).astype(np.float32)
            x = Act(ctx.upload(x_host), k, t, z)
            y = Act(ctx.storage(z * t * m * 4), m, t, z)
            want = np.einsum("ztk,zmk->ztm", x_host, weights.astype(np.float32))
            seen = set()
            for tile, groups, half in itertools.product(tiles, (96, 192, 384), halves):
                shape = TileShape(*tile)
                tuning = replace(DEFAULT_TUNING, tile=shape, tile_long=shape, tile_half=shape, split_k_groups=groups,
                                 tiled_half=half)
                g = StepGraph(ctx, kernels, t, 1, None, None, None, tuning=tuning)
                for _ in range(repeat):
                    g.matmul(w, x, y)
                key = (tile, half, len(g.dispatches))
                if len(g.dispatches) == repeat and key in seen:
                    continue  # no split: the split target changes nothing
                seen.add(key)
                per = timed(ctx, back, y.buffer, g.encode, repeat)
                got = ctx.read(y.buffer, y.planes * t * m * 4).view(np.float32).reshape(z, t, m)
                report(tiled=name, z=z, m=m, k=k, tokens=t, tile=tile, split_groups=groups, half=half,
                       dispatches=len(g.dispatches) // repeat, us=round(per * 1e6, 2),
                       tflops=round(2 * z * m * k * t / per / 1e12, 2),
                       rel_err=float(np.abs(got - want).max() / np.abs(want).max()))


PEAK_WGSL = """
ENABLE
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let seed = f32(id.x) * 1e-9;
    var s0 = vec4<SCALAR>(SCALAR(seed)); var s1 = s0 + 1.0; var s2 = s0 + 2.0; var s3 = s0 + 3.0;
    var s4 = s0 + 4.0; var s5 = s0 + 5.0; var s6 = s0 + 6.0; var s7 = s0 + 7.0;
    let m = vec4<SCALAR>(0.999);
    let c = vec4<SCALAR>(1e-3);
    for (var i = 0u; i < ITERATIONSu; i++) {
        s0 = fma(s0, m, c); s1 = fma(s1, m, c); s2 = fma(s2, m, c); s3 = fma(s3, m, c);
        s4 = fma(s4, m, c); s5 = fma(s5, m, c); s6 = fma(s6, m, c); s7 = fma(s7, m, c);
    }
    let total = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    out[id.x] = f32(total.x + total.y + total.z + total.w);
}
"""


def fma_peak(ctx, back: Readback, repeat: int) -> None:
    """What fp32 (and f16, with shader-f16) multiply-adds from registers alone reach: 32
    independent chains per thread."""
    for kind in ("f32", "f16") if ctx.has_f16 else ("f32",):
        fma_peak_of(ctx, back, repeat, kind)


def fma_peak_of(ctx, back: Readback, repeat: int, kind: str) -> None:
    from ai00_trio.gpu.kernels import shader_module

    iterations = 4096
    code = PEAK_WGSL.replace("ITERATIONS", str(iterations)).replace("SCALAR", kind)
    code = code.replace("ENABLE", "enable f16;" if kind == "f16" else "")
    module = shader_module(ctx.device, "peak", code, False)
    pipeline = ctx.device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
    for groups in (132, 264, 528, 1056, 4224):
        out = ctx.storage(groups * 256 * 4)
        bind = ctx.device.create_bind_group(layout=pipeline.get_bind_group_layout(0),
                                            entries=[{"binding": 0, "resource": {"buffer": out}}])

        def encode(encoder, bind=bind):
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, bind)
            for _ in range(repeat):
                compute.dispatch_workgroups(groups)
            compute.end()
        per = timed(ctx, back, out, encode, repeat)
        report(peak="fma", kind=kind, workgroups=groups, us=round(per * 1e6, 2),
               tflops=round(2 * 32 * iterations * 256 * groups / per / 1e12, 2))


def split_counts(ctx, back: Readback, kernels, repeat: int, tiles: list[tuple]) -> None:
    """Each layer matmul at a 64-sequence step, K split into each power of two of parts that
    the split rule allows (run 31 timed 1..24 parts, before the rule took powers of two only),
    for each tile shape."""
    rng = np.random.default_rng(0)
    fmt = "f16" if ctx.has_f16 else "f16_packed"
    t = 64
    for name, (z, m, k) in SHAPES.items():
        if name == "head":
            continue
        weights = (rng.standard_normal((z, m, k)) * 0.02).astype(np.float16)
        w = Matrix(ctx.upload(weights), z, m, k, fmt)
        x = Act(ctx.upload(rng.standard_normal((z, t, k)).astype(np.float32)), k, t, z)
        y = Act(ctx.storage(z * t * m * 4), m, t, z)
        for tile in tiles:
            shape = TileShape(*tile)
            n_tiles = -(-m // shape.rows) * -(-t // shape.tokens) * z
            for splits in (1, 2, 4, 8, 16, 32):
                tuning = replace(DEFAULT_TUNING, tile=shape, tile_long=shape, split_k_groups=n_tiles * splits)
                g = StepGraph(ctx, kernels, t, 1, None, None, None, tuning=tuning)
                for _ in range(repeat):
                    g.matmul(w, x, y)
                if g.dispatches[0][2][1] != splits * -(-t // shape.tokens):
                    break  # parts this short are not allowed
                per = timed(ctx, back, y.buffer, g.encode, repeat)
                report(split=name, z=z, m=m, k=k, tokens=t, tile=tile, splits=splits,
                       groups=n_tiles * splits, us=round(per * 1e6, 2),
                       tflops=round(2 * z * m * k * t / per / 1e12, 2))


ROW_SHAPES = [  # threads, lanes per row, rows per thread, tokens per workgroup, vec4 input columns per chunk
    (128, 1, 4, 16, 32), (128, 4, 4, 16, 32), (64, 1, 4, 16, 32), (128, 1, 4, 8, 32), (256, 1, 4, 8, 32),
    (128, 1, 4, 32, 16), (128, 8, 4, 16, 32),
]
L2_BYTES = 200 << 20  # weights cycled through per shape, so that they come from memory as in a model


def rows_shapes(ctx, back: Readback, kernels, repeat: int, shapes: list[tuple], tokens: list[int]) -> None:
    """matmul_rows (each weight read once into registers, inputs from workgroup memory) on each
    layer matmul at these token counts, for each rows shape and split target, beside the tiled
    kernel (timed first and last): µs per matmul (with its reduce pass), TFLOP/s, error against
    numpy. Each shape cycles through copies of its weights, L2_BYTES in all."""
    rng = np.random.default_rng(0)
    fmt = "f16" if ctx.has_f16 else "f16_packed"
    for name, (z, m, k) in SHAPES.items():
        if z * m * k * 2 > ctx.device.limits["max-storage-buffer-binding-size"]:
            continue  # e.g. the head on lavapipe
        weights = (rng.standard_normal((z, m, k)) * 0.02).astype(np.float16)
        copies = [Matrix(ctx.upload(weights), z, m, k, fmt) for _ in range(-(-L2_BYTES // weights.nbytes))]
        for t in tokens:
            x_host = rng.standard_normal((z, t, k)).astype(np.float32)
            x = Act(ctx.upload(x_host), k, t, z)
            y = Act(ctx.storage(z * t * m * 4), m, t, z)
            want = np.einsum("ztk,zmk->ztm", x_host, weights.astype(np.float32))
            seen = set()
            variants = [("tiled", None, 0)] + [("rows", shape, groups) for shape in shapes for groups in (132, 264, 528)]
            for index, (kind, shape, groups) in enumerate(variants + variants[:1]):  # tiled first and last
                tuning = replace(DEFAULT_TUNING, rows_max_tokens=0 if kind == "tiled" else 1 << 20, rows_min_tokens=1)
                if shape is not None:
                    rows = RowsShape(*shape, groups)
                    tuning = replace(tuning, rows=rows, rows_few=rows, rows_tall=rows, rows_tall_rows=0)
                g = StepGraph(ctx, kernels, t, 1, None, None, None, tuning=tuning)
                for i in range(repeat):
                    g.matmul(copies[i % len(copies)], x, y)
                key = (kind, shape, tuple(d[2] for d in g.dispatches[:2]))
                if key in seen and index < len(variants):
                    continue  # the split target changes nothing
                seen.add(key)
                per = timed(ctx, back, y.buffer, g.encode, repeat)
                got = ctx.read(y.buffer, y.planes * t * m * 4).view(np.float32).reshape(z, t, m)
                report(rows=name, z=z, m=m, k=k, tokens=t, kernel=g.labels[0], shape=shape, split_groups=groups,
                       grid=g.dispatches[0][2], dispatches=len(g.dispatches) // repeat, us=round(per * 1e6, 2),
                       tflops=round(2 * z * m * k * t / per / 1e12, 2),
                       rel_err=float(np.abs(got - want).max() / np.abs(want).max()))


def parse_tiles(text: str) -> list[tuple[int, ...]]:
    """"R,T,RT,TT,K4;..." → tile shapes."""
    return [tuple(int(v) for v in tile.split(",")) for tile in text.split(";")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--tokens", default="1,4")
    parser.add_argument("--tiled", action="store_true", help="time the tiled kernel's tile shapes instead")
    parser.add_argument("--tiles", default=None, help="with --tiled: these tiles (R,T,RT,TT,K4;...)")
    parser.add_argument("--splits", default=None,
                        help="time split-K part counts at 64 tokens for these tiles (R,T,RT,TT,K4;...)")
    parser.add_argument("--rows", default=None, help="time matmul_rows at these token counts (e.g. 32,64)")
    parser.add_argument("--row-shapes", default=None, help="with --rows: these shapes (THREADS,LANES,ROWS,TOKENS,K4;...)")
    parser.add_argument("--half", default="0,1", help="with --tiled: tiled f16 multiply-adds off (0) / on (1)")
    parser.add_argument("--peak", action="store_true", help="time fp32 and f16 multiply-adds from registers alone")
    parser.add_argument("--checked-shaders", action="store_true", help="keep wgpu's runtime checks in the kernels")
    args = parser.parse_args()
    ctx = create_context()
    back = Readback(ctx.device)
    back.reserve(4)
    report(device=ctx.info.name, backend=ctx.info.backend, subgroups=ctx.has_subgroups, f16=ctx.has_f16,
           checked_shaders=args.checked_shaders)
    if args.peak:
        fma_peak(ctx, back, args.repeat)
        return
    if args.tiled:
        tiled_shapes(ctx, back, KernelCache(ctx.device, checked=args.checked_shaders), args.repeat,
                     parse_tiles(args.tiles) if args.tiles else TILES, [v == "1" for v in args.half.split(",")])
        return
    if args.rows:
        rows_shapes(ctx, back, KernelCache(ctx.device, checked=args.checked_shaders), args.repeat,
                    parse_tiles(args.row_shapes) if args.row_shapes else ROW_SHAPES,
                    [int(t) for t in args.rows.split(",")])
        return
    if args.splits:
        split_counts(ctx, back, KernelCache(ctx.device, checked=args.checked_shaders), args.repeat, parse_tiles(args.splits))
        return

    floor_probe(ctx, back, args.repeat)
    has_subgroups = ctx.has_subgroups
    rng = np.random.default_rng(0)
    kernels = KernelCache(ctx.device, checked=args.checked_shaders)
    for name, (z, m, k) in SHAPES.items():
        weights = (rng.standard_normal((z, m, k)) * 0.02).astype(np.float16)
        w = Matrix(ctx.upload(weights), z, m, k, "f16" if ctx.has_f16 else "f16_packed")
        for t in (int(x) for x in args.tokens.split(",")):
            x = Act(ctx.upload(rng.standard_normal((z, t, k)).astype(np.float32)), k, t, z)
            y = Act(ctx.storage(z * t * m * 4), m, t, z)
            for wide, subgroups, threads in itertools.product((False, True), (False, True), (32, 64, 128)):
                ctx.has_subgroups = subgroups and has_subgroups
                tuning = replace(DEFAULT_TUNING, matvec_wide=wide, matvec_threads=threads)
                g = StepGraph(ctx, kernels, t, 1, None, None, None, tuning=tuning)
                for _ in range(args.repeat):
                    g.matmul(w, x, y)
                per = timed(ctx, back, y.buffer, g.encode, args.repeat)
                report(shape=name, z=z, m=m, k=k, tokens=t, wide=wide, subgroups=subgroups, threads=threads,
                       label=g.labels[0], us=round(per * 1e6, 2), weight_gbps=round(weights.nbytes / per / 1e9, 1))


if __name__ == "__main__":
    main()
