"""GPU benchmark of the engine on a model of real shape (random weights, e.g. from
shared/gpu/peers.py --gen6 --gen7): batch-1 decode, batched decode, prefill, memory.

    python bench/bench_engine.py MODEL.st [--batches 1,8,32,64] [--prefill 1024] [--decode 128]

Prints one JSON line per measurement. Decode includes reading the logits back and an argmax on
the host for every sequence, as a server's sampler would.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ai00_trio.engine import load_model  # noqa: E402
from ai00_trio.engine.batch import BatchRuntime  # noqa: E402


def report(**fields) -> None:
    print("RESULT", json.dumps(fields), flush=True)


def decode_single(model, n: int) -> float:
    state = model.new_state()
    logits = model.forward([1, 2, 3, 4], state)
    for _ in range(4):
        logits = model.forward([int(np.argmax(logits))], state)
    started = time.perf_counter()
    for _ in range(n):
        logits = model.forward([int(np.argmax(logits))], state)
    return n / (time.perf_counter() - started)


def decode_batched(model, batch: int, n: int, rng, prerecord: bool) -> tuple[float, float]:
    runtime = BatchRuntime(model, max_batch=batch, token_chunk_size=max(256, batch))
    runtime.runtime.prerecord = prerecord
    for slot in range(batch):
        runtime.submit(slot, rng.integers(1, model.info.n_vocab, 8).tolist())
    while runtime.busy_slots:
        out = runtime.step()
    for slot in range(batch):
        runtime.submit(slot, [1])
    for _ in range(3):  # warm the step graph for this shape
        out = runtime.step()
        for slot, logits in out.items():
            runtime.submit(slot, [int(np.argmax(logits))])
    encode = 0.0
    started = time.perf_counter()
    for _ in range(n):
        out = runtime.step()
        for slot, logits in out.items():
            runtime.submit(slot, [int(np.argmax(logits))])
    elapsed = time.perf_counter() - started
    graph = runtime.runtime._graph(batch, batch, batch)
    enc = model.ctx.device.create_command_encoder()
    t0 = time.perf_counter()
    for _ in range(20):
        graph.encode(enc)
    encode = (time.perf_counter() - t0) / 20
    return batch * n / elapsed, encode


def profile_single(model) -> dict:
    """Where a batch-1 decode step's time goes: Python encoding, a bare submit+readback round
    trip, and GPU execution of the recorded step (timed by waiting on a 4-byte readback)."""
    runtime = model.runtime(1, 1)
    graph = runtime._graph(1, 1, 1)
    device, ctx = model.ctx.device, model.ctx
    t0 = time.perf_counter()
    for _ in range(50):
        encoder = device.create_command_encoder()
        graph.encode(encoder)
        encoder.finish()
    encode = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    for _ in range(50):
        device.queue.submit([device.create_command_encoder().finish()])
        ctx.read(runtime.io.ids, 4)
    roundtrip = (time.perf_counter() - t0) / 50
    encoders = []
    for _ in range(20):
        encoder = device.create_command_encoder()
        graph.encode(encoder)
        encoders.append(encoder.finish())
    t0 = time.perf_counter()
    device.queue.submit(encoders)
    ctx.read(runtime.io.ids, 4)
    gpu = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for _ in range(50):
        ctx.read(runtime.io.logits, model.info.n_vocab * 4)
    readback = (time.perf_counter() - t0) / 50
    return dict(dispatches=len(graph.dispatches), python_encode_ms=round(encode * 1e3, 3),
                submit_roundtrip_ms=round(roundtrip * 1e3, 3), gpu_step_ms=round(gpu * 1e3, 3),
                logits_readback_ms=round(readback * 1e3, 3))


def prefill(model, n: int, rng) -> float:
    tokens = rng.integers(1, model.info.n_vocab, n).tolist()
    model.forward(tokens, model.new_state())  # build the step graphs once
    started = time.perf_counter()
    model.forward(tokens, model.new_state())
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--prefill", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--matvec", default=None, help="THREADS,TOKENS of the per-token matmul kernel")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--tiled-min", type=int, default=None, help="fewest tokens for the tiled matmul")
    parser.add_argument("--norm-split", type=int, default=None, help="fewest tokens with whole-row LayerNorm")
    parser.add_argument("--no-prerecord", action="store_true", help="record each step after its inputs")
    parser.add_argument("--split-groups", type=int, default=None, help="split K below this many tiles (0: never)")
    parser.add_argument("--no-wide", action="store_true", help="per-token matmul reads f16 weights 8 bytes at a time")
    parser.add_argument("--no-subgroups", action="store_true", help="per-token matmul sums in workgroup memory only")
    args = parser.parse_args()
    from ai00_trio.gpu import graph

    graph.MATVEC_WIDE = not args.no_wide
    graph.MATVEC_SUBGROUPS = not args.no_subgroups

    if args.matvec:
        graph.MATVEC_THREADS, graph.MATVEC_TOKENS = (int(v) for v in args.matvec.split(","))
    if args.tiled_min is not None:
        graph.TILED_MIN_TOKENS = args.tiled_min
    if args.norm_split is not None:
        graph.NORM_SPLIT_MAX_TOKENS = args.norm_split
    if args.split_groups is not None:
        graph.SPLIT_K_GROUPS = args.split_groups
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model = load_model(args.model, precision="fp16", chunk_size=args.chunk)
    info = model.info
    name = os.path.basename(args.model)
    model._single.prerecord = not args.no_prerecord
    decode_single(model, 64)  # warm-up: the GPU's clocks, every step graph of batch 1
    report(model=name, matvec=args.matvec, tiled_min=graph.TILED_MIN_TOKENS, split_groups=graph.SPLIT_K_GROUPS,
           norm_split=graph.NORM_SPLIT_MAX_TOKENS,
           prerecord=not args.no_prerecord, wide=graph.MATVEC_WIDE, subgroups=graph.MATVEC_SUBGROUPS,
           version=info.version, n_layer=info.n_layer, n_embd=info.n_embd,
           device=model.ctx.info.name, backend=model.ctx.info.backend, f16_shaders=model.ctx.has_f16,
           load_s=round(time.perf_counter() - started, 2), weight_bytes=model.weight_bytes)
    if not args.no_profile:
        report(model=name, profile_batch1=profile_single(model))
    if args.prefill:
        report(model=name, prefill_tokens=args.prefill, prefill_tps=round(prefill(model, args.prefill, rng), 1))
    for batch in [int(b) for b in args.batches.split(",")]:
        if batch == 1:
            report(model=name, batch=1, decode_tps=round(decode_single(model, args.decode), 1))
        tps, encode = decode_batched(model, batch, max(16, args.decode // 2), rng, not args.no_prerecord)
        report(model=name, batch=batch, runtime="BatchRuntime", decode_tps=round(tps, 1),
               python_encode_ms=round(encode * 1000, 3),
               dispatches=len(model.runtime(1, 1)._graph(1, 1, 1).dispatches) if batch == 1 else None)
    report(model=name, gpu_bytes_allocated=model.ctx.allocated_bytes)


if __name__ == "__main__":
    main()
