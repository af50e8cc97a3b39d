"""Where a step's GPU time goes, per kernel: replays the recorded step's dispatches of one kernel
at a time (many times over, in one pass) and times them against a bare submit.

    python bench/profile_kernels.py MODEL.st [--tokens 1,64,1024]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ai00_trio.engine import load_model  # noqa: E402
from ai00_trio.engine.runtime import Run  # noqa: E402
from ai00_trio.gpu import fast_encode  # noqa: E402


def timed(ctx, encode, repeat: int) -> float:
    device = ctx.device
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    for _ in range(repeat):
        encode(compute)
    compute.end()
    ctx.read(ctx.storage(16), 4)  # idle
    started = time.perf_counter()
    device.queue.submit([encoder.finish()])
    ctx.read(ctx.storage(16), 4)
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tokens", default="1,64,1024")
    args = parser.parse_args()
    sizes = [int(t) for t in args.tokens.split(",")]
    model = load_model(args.model, chunk_size=max(sizes))
    runtime = model.runtime(min(64, max(sizes)), max(sizes))
    for t in sizes:
        runs = [Run(i, [1]) for i in range(t)] if t <= 64 else [Run(0, [1] * t)]
        runtime.step(runs, [len(runs) - 1])  # records the graph and warms it
        graph = runtime._graph(t, len(runs), 1)
        by_label = collections.defaultdict(list)
        for label, dispatch in zip(graph.labels, graph.dispatches):
            by_label[label].append(dispatch)
        repeat = 20 if t <= 64 else 3
        whole = timed(model.ctx, lambda c: fast_encode.encode_dispatches(c, graph.dispatches), repeat)
        rows = []
        for label, dispatches in by_label.items():
            seconds = timed(model.ctx, lambda c, d=dispatches: fast_encode.encode_dispatches(c, d), repeat)
            rows.append((seconds, label, len(dispatches)))
        rows.sort(reverse=True)
        print(json.dumps({"tokens": t, "step_ms": round(whole * 1e3, 3), "dispatches": len(graph.dispatches),
                          "kernels": [{"kernel": label, "count": n, "ms": round(sec * 1e3, 3)}
                                      for sec, label, n in rows]}), flush=True)


if __name__ == "__main__":
    main()
