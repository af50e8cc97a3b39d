"""Per-dispatch GPU timeline of recorded steps, from timestamp queries written between the
dispatches of one compute pass: what each kernel costs in its real place in the step (its own
run time plus the wait on the dispatch before it), and what the whole step costs on the GPU.

Also times the host side of a batch-1 decode step: readback through wgpu-py's read_buffer
(a fresh mappable buffer each time) against the engine's `GpuContext.read` (one reused buffer).

    python bench/timeline.py MODEL.st [--tokens 1,64,1024]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np
import wgpu
from wgpu.backends.wgpu_native import extras

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ai00_trio.engine import load_model  # noqa: E402
from ai00_trio.engine.runtime import Run  # noqa: E402
from kernel_options import add_kernel_options, tuning_from_options  # noqa: E402
from ai00_trio.gpu.context import create_context  # noqa: E402

FEATURES = ("timestamp-query", "timestamp-query-inside-passes")


def timeline(ctx, dispatches) -> np.ndarray:
    """Nanoseconds each dispatch took, end to end, inside one pass (best of 5 replays)."""
    device = ctx.device
    n = len(dispatches) + 1
    queries = device.create_query_set(type="timestamp", count=n)
    resolved = device.create_buffer(size=n * 8, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    best = None
    for _ in range(5):
        encoder = device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        extras.write_timestamp(compute, queries, 0)
        for i, (pipeline, group, (x, y, z), _native) in enumerate(dispatches):
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(x, y, z)
            extras.write_timestamp(compute, queries, i + 1)
        compute.end()
        encoder.resolve_query_set(queries, 0, n, resolved, 0)
        device.queue.submit([encoder.finish()])
        stamps = np.frombuffer(ctx.read(resolved, n * 8), np.uint64).astype(np.int64)
        deltas = np.diff(stamps)
        if best is None or deltas.sum() < best.sum():
            best = deltas
    return best


def host_side(model, n: int = 50) -> dict:
    """Decode-step host costs at batch 1."""
    ctx, device = model.ctx, model.ctx.device
    runtime = model.runtime(1, 1)
    graph = runtime._graph(1, 1, 1)
    nbytes = model.info.n_vocab * 4
    out = {}

    def step(readback: str) -> None:
        encoder = device.create_command_encoder()
        graph.encode(encoder)
        if readback == "ctx_read":  # the engine's path: copy in the step's own submit
            ctx.read(runtime.io.logits, nbytes, encoder=encoder)
            return
        device.queue.submit([encoder.finish()])
        np.frombuffer(device.queue.read_buffer(runtime.io.logits, 0, nbytes), np.float32)

    for mode in ("wgpu_read_buffer", "ctx_read"):
        for _ in range(5):
            step(mode)
        t0 = time.perf_counter()
        for _ in range(n):
            step(mode)
        out[f"step_{mode}_ms"] = round((time.perf_counter() - t0) / n * 1e3, 3)
    t0 = time.perf_counter()
    for _ in range(n):
        device.queue.read_buffer(runtime.io.ids, 0, 4)
    out["wgpu_read4_ms"] = round((time.perf_counter() - t0) / n * 1e3, 3)
    t0 = time.perf_counter()
    for _ in range(n):
        ctx.read(runtime.io.ids, 4)
    out["ctx_read4_ms"] = round((time.perf_counter() - t0) / n * 1e3, 3)
    t0 = time.perf_counter()
    for _ in range(n):
        encoder = device.create_command_encoder()
        graph.encode(encoder)
        encoder.finish()
    out["encode_ms"] = round((time.perf_counter() - t0) / n * 1e3, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tokens", default="1,64,1024")
    parser.add_argument("--top", type=int, default=12)
    add_kernel_options(parser)
    parser.add_argument("--first", type=int, default=0, help="also list the first N dispatches and the last 4, each timed")
    args = parser.parse_args()
    sizes = [int(t) for t in args.tokens.split(",")]
    ctx = create_context(extra_features=FEATURES)
    model = load_model(args.model, chunk_size=max(sizes), context=ctx, tuning=tuning_from_options(args))
    print(json.dumps({"device": ctx.info.name, "host": host_side(model)}), flush=True)
    if "timestamp-query-inside-passes" not in ctx.device.features:
        print(json.dumps({"error": "no timestamp queries inside passes on this adapter"}))
        return
    runtime = model.runtime(min(64, max(sizes)), max(sizes))
    for t in sizes:
        runs = [Run(i, [1]) for i in range(t)] if t <= 64 else [Run(0, [1] * t)]
        out_rows = list(range(len(runs))) if t <= 64 else [t - 1]
        runtime.step(runs, out_rows)
        graph = runtime._graph(t, len(runs), len(out_rows))
        ns = timeline(ctx, graph.dispatches)
        by_label = collections.defaultdict(list)
        for label, d in zip(graph.labels, ns):
            by_label[label].append(int(d))
        rows = sorted(((sum(v), k, len(v), min(v), max(v)) for k, v in by_label.items()), reverse=True)
        picked = list(range(min(args.first, len(ns)))) + list(range(max(args.first, len(ns) - 4), len(ns))) if args.first else []
        for i in picked:
            print(json.dumps({"tokens": t, "dispatch": i, "kernel": graph.labels[i], "groups": graph.dispatches[i][2],
                              "us": round(float(ns[i]) / 1e3, 1)}), flush=True)
        print(json.dumps({
            "tokens": t, "dispatches": len(ns), "step_gpu_ms": round(ns.sum() / 1e6, 3),
            "median_dispatch_us": round(float(np.median(ns)) / 1e3, 1),
            "kernels": [{"kernel": k, "count": n, "ms": round(s / 1e6, 3), "min_us": round(lo / 1e3, 1),
                         "max_us": round(hi / 1e3, 1)} for s, k, n, lo, hi in rows[:args.top]],
        }), flush=True)


if __name__ == "__main__":
    main()
