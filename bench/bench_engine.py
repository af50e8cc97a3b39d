"""GPU benchmark of the engine on a model of real shape (random weights, e.g. from
shared/gpu/peers.py --gen6 --gen7): batch-1 decode, batched decode, prefill, memory.

    python bench/bench_engine.py MODEL.st [--batches 1,8,32,64] [--prefill 1024] [--decode 128]

Prints one JSON line per measurement. Batch-1 decode through `Model.forward` reads the logits
back and takes the argmax on the host; BatchRuntime decode takes the GPU's greedy pick per
sequence (as the server does for greedy requests), with --host-argmax also reads every
logits row back for a host argmax, and with --sampled also decodes with AI00's default
Nucleus sampler on the GPU (the server's sampled requests) and on the host.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ai00_trio.engine import load_model  # noqa: E402
from kernel_options import add_kernel_options, kernel_report, tuning_from_options  # noqa: E402
from ai00_trio.engine.batch import BatchRuntime  # noqa: E402
from ai00_trio.engine.slots import BufferLimits  # noqa: E402


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


AI00_NUCLEUS = dict(temperature=1.0, top_p=0.5, top_k=128, presence=0.3, frequency=0.3, decay=0.99654026)


def decode_batched(model, batch: int, n: int, rng, prerecord: bool, want: str = "pick",
                   limits: BufferLimits | None = None) -> tuple[float, float]:
    """Aggregate decode tok/s of `batch` sequences. want="pick": the GPU's greedy choice (the
    server's plain greedy requests); "last": every logits row read back, host argmax; "sample":
    the GPU's Nucleus draw with AI00's default sampler and penalties (the server's sampled
    requests); "host": logits read back and AI00's default Nucleus sampler run on the host,
    one sequence after the other (where sampled requests went before the GPU sampled)."""
    from ai00_trio.engine.runtime import GREEDY, Sampling
    from ai00_trio.sampling import make_sampler
    from ai00_trio.sampling.config import Nucleus

    runtime = BatchRuntime(model, max_batch=batch, token_chunk_size=max(256, batch), limits=limits)
    runtime.runtime.prerecord = prerecord
    for slot in range(batch):
        runtime.submit(slot, rng.integers(1, model.info.n_vocab, 8).tolist())
    while runtime.busy_slots:
        runtime.step()
    sampling = Sampling(seed=1, **AI00_NUCLEUS) if want == "sample" else GREEDY
    host = [make_sampler(Nucleus(), seed=slot) for slot in range(batch)] if want == "host" else []
    gpu_side = want in ("pick", "sample")

    def feed(out) -> None:
        for slot, value in out.items():
            if gpu_side:
                token = value.token
            elif host:
                token = host[slot].step(value).token
            else:
                token = int(np.argmax(value))
            runtime.submit(slot, [token], "pick" if gpu_side else "last", sampling)

    for slot in range(batch):
        runtime.set_penalties(slot, {})
        runtime.submit(slot, [1], "pick" if gpu_side else "last", sampling)
    for _ in range(3):  # warm the step graph for this shape
        feed(runtime.step())
    started = time.perf_counter()
    for _ in range(n):
        feed(runtime.step())
    elapsed = time.perf_counter() - started
    graph = runtime.runtime._graph(batch, batch, batch)
    enc = model.ctx.device.create_command_encoder()
    t0 = time.perf_counter()
    for _ in range(20):
        graph.encode(enc)
    encode = (time.perf_counter() - t0) / 20
    return batch * n / elapsed, encode


def decode_chained(model, batch: int, n: int, rng, sampled: bool, limits: BufferLimits | None = None) -> float:
    """Aggregate decode tok/s of `batch` chains (each GPU choice fed straight back, as the
    server decodes): greedy picks, or AI00's default sampler with sampled=True."""
    from ai00_trio.engine.runtime import GREEDY, Sampling

    runtime = BatchRuntime(model, max_batch=batch, token_chunk_size=max(256, batch), limits=limits)
    sampling = Sampling(seed=1, **AI00_NUCLEUS) if sampled else GREEDY
    for slot in range(batch):
        runtime.set_penalties(slot, {})
        runtime.submit(slot, rng.integers(1, model.info.n_vocab, 8).tolist(), "pick", sampling, chain=n + 8)
    for _ in range(4):  # the prompts, then warm the step graph of the decode shape
        runtime.step()
    started = time.perf_counter()
    made = sum(len(runtime.step()) for _ in range(n))
    return made / (time.perf_counter() - started)


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


def trace_single(model, n: int = 64) -> dict:
    """A batch-1 decode step of `Runtime.step`, phase by phase on the host (median ms): the
    input writes, the submit, recording the next step, waiting for the logits, the argmax;
    and the same step submitted alone and waited for, without any of the host work."""
    from ai00_trio.engine.runtime import Run

    runtime = model.runtime(1, 16)
    runtime.step([Run(0, [1])], [0])
    graph = runtime._graph(1, 1, 1)
    queue = model.ctx.device.queue
    nbytes = model.info.n_vocab * 4
    phases: dict[str, list[float]] = {k: [] for k in ("write", "submit", "record", "wait", "argmax", "total")}
    token = 1
    step_key = (1, 1, 1, 0, False, 0)  # Runtime.launch's key of a one-token step with its logits read back
    command = runtime._record(step_key, graph)
    for _ in range(n):
        t0 = time.perf_counter()
        queue.write_buffer(runtime.io.ids, 0, np.array([token], np.uint32))
        queue.write_buffer(runtime.io.tokens, 0, np.array([[0, 1, 0, 0]], np.uint32))
        queue.write_buffer(runtime.io.runs, 0, np.array([[0, 0, 1, 0]], np.uint32))
        queue.write_buffer(runtime.io.out_rows, 0, np.zeros(1, np.uint32))
        t1 = time.perf_counter()
        queue.submit([command])
        t2 = time.perf_counter()
        command = runtime._record(step_key, graph)
        t3 = time.perf_counter()
        logits = runtime._logits_back.fetch(nbytes).view(np.float32)
        t4 = time.perf_counter()
        token = int(np.argmax(logits))
        t5 = time.perf_counter()
        for key, a, b in (("write", t0, t1), ("submit", t1, t2), ("record", t2, t3), ("wait", t3, t4),
                          ("argmax", t4, t5), ("total", t0, t5)):
            phases[key].append(b - a)
    alone = []
    for _ in range(n):
        command = runtime._record(step_key, graph)
        t0 = time.perf_counter()
        queue.submit([command])
        runtime._logits_back.fetch(4)
        alone.append(time.perf_counter() - t0)
    out = {k: round(float(np.median(v)) * 1e3, 3) for k, v in phases.items()}
    out["step_alone"] = round(float(np.median(alone)) * 1e3, 3)
    return out


def prefill(model, n: int, rng) -> float:
    tokens = rng.integers(1, model.info.n_vocab, n).tolist()
    model.forward(tokens, model.new_state())  # build the step graphs once
    started = time.perf_counter()
    model.forward(tokens, model.new_state())
    return n / (time.perf_counter() - started)


def hold_gil(fraction: float, period: float = 0.01) -> None:
    """Compete for the GIL as the server's event loop thread does: pure Python for `fraction` of
    each period, asleep for the rest."""
    while True:
        end = time.perf_counter() + fraction * period
        while time.perf_counter() < end:
            sum(range(100))
        time.sleep((1 - fraction) * period)


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
    add_kernel_options(parser)
    parser.add_argument("--tiled-unstacked", action="store_true",
                        help="many-token matmuls sharing an input run one dispatch each (as before run 35)")
    parser.add_argument("--host-argmax", action="store_true",
                        help="also time batches reading back every logits row (argmax on the host)")
    parser.add_argument("--sampled", action="store_true",
                        help="also decode with AI00's default Nucleus sampler, on the GPU and on the host")
    parser.add_argument("--chained", action="store_true",
                        help="also decode chains (GPU choices fed straight back, steps launched one ahead)")
    parser.add_argument("--no-subgroups", action="store_true", help="kernels sum in workgroup memory only")
    parser.add_argument("--quant", type=int, default=0, help="quantize this many layers' projections")
    parser.add_argument("--quant-type", choices=("int8", "nf4"), default="int8")
    parser.add_argument("--checked-shaders", action="store_true", help="keep wgpu's runtime checks in every kernel")
    parser.add_argument("--binding-mib", type=int, default=None,
                        help="bind at most this many MiB of one buffer (splits the batched states sooner)")
    parser.add_argument("--gil-load", type=float, default=0.0,
                        help="a thread runs pure Python this fraction of every 10 ms (as a busy event loop does)")
    args = parser.parse_args()
    from ai00_trio.gpu import graph, kernels

    if args.gil_load > 0:
        threading.Thread(target=hold_gil, args=(args.gil_load,), daemon=True).start()

    if args.checked_shaders:
        unchecked = kernels.shader_module
        kernels.shader_module = lambda device, label, code, checked: unchecked(device, label, code, True)

    fields = {"matvec_wide": not args.no_wide}
    if args.matvec:
        fields["matvec_threads"], fields["matvec_tokens"] = (int(v) for v in args.matvec.split(","))
    if args.tiled_min is not None:
        fields["tiled_min_tokens"] = args.tiled_min
    if args.norm_split is not None:
        fields["norm_split_max_tokens"] = args.norm_split
    if args.split_groups is not None:
        fields["split_k_groups"] = args.split_groups
    tuning = tuning_from_options(args, **fields)
    if args.tiled_unstacked:
        stacked = graph.StepGraph.matmuls

        def unstacked(self, jobs):
            if jobs[0][1].t < self.tuning.tiled_min_tokens:
                return stacked(self, jobs)
            for w, x, y, act in jobs:
                self.matmul(w, x, y, act)
        graph.StepGraph.matmuls = unstacked
    limits = BufferLimits(args.binding_mib << 20) if args.binding_mib else None
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model = load_model(args.model, precision="fp16", chunk_size=args.chunk, quant=args.quant, quant_type=args.quant_type,
                       tuning=tuning)
    info = model.info
    name = os.path.basename(args.model)
    model._single.prerecord = not args.no_prerecord
    model.ctx.has_subgroups = model.ctx.has_subgroups and not args.no_subgroups
    decode_single(model, 64)  # warm-up: the GPU's clocks, every step graph of batch 1
    report(model=name, matvec=args.matvec, tiled_min=tuning.tiled_min_tokens, split_groups=tuning.split_k_groups,
           **kernel_report(tuning),
           tiled_unstacked=args.tiled_unstacked, checked_shaders=args.checked_shaders, quant=[args.quant, args.quant_type],
           norm_split=tuning.norm_split_max_tokens,
           prerecord=not args.no_prerecord, wide=tuning.matvec_wide, subgroups=model.ctx.has_subgroups,
           version=info.version, n_layer=info.n_layer, n_embd=info.n_embd,
           device=model.ctx.info.name, backend=model.ctx.info.backend, f16_shaders=model.ctx.has_f16,
           load_s=round(time.perf_counter() - started, 2), weight_bytes=model.weight_bytes, binding_mib=args.binding_mib,
           gil_load=args.gil_load)
    if not args.no_profile:
        report(model=name, profile_batch1=profile_single(model))
        report(model=name, trace_batch1_ms=trace_single(model))
    if args.prefill:
        report(model=name, prefill_tokens=args.prefill, prefill_tps=round(prefill(model, args.prefill, rng), 1))
    for batch in [int(b) for b in args.batches.split(",")]:
        if batch == 1:
            report(model=name, batch=1, decode_tps=round(decode_single(model, args.decode), 1))
        wants = ("pick", "last") if args.host_argmax else ("pick",)
        wants += ("sample", "host") if args.sampled else ()
        for want in wants:
            tps, encode = decode_batched(model, batch, max(16, args.decode // 2), rng, not args.no_prerecord, want,
                                         limits)
            report(model=name, batch=batch, runtime="BatchRuntime", want=want, decode_tps=round(tps, 1),
                   python_encode_ms=round(encode * 1000, 3),
                   dispatches=len(model.runtime(1, 1)._graph(1, 1, 1).dispatches) if batch == 1 else None)
        if args.chained:
            for sampled in (False, True):
                tps = decode_chained(model, batch, max(16, args.decode // 2), rng, sampled, limits)
                report(model=name, batch=batch, runtime="BatchRuntime", want="sample" if sampled else "pick",
                       chained=True, decode_tps=round(tps, 1))
    report(model=name, gpu_bytes_allocated=model.ctx.allocated_bytes)


if __name__ == "__main__":
    main()
