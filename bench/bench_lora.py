"""How long a LoRA hot-swap takes on a model of real shape (random weights, tests/reference64.py):
applying and removing a rank-r adapter on every layer projection (engine/hotswap.py, on the
GPU), beside merging the same adapter into the checkpoint on the host (engine/lora.py, what a
reload with the LoRA costs before the upload).

    python bench/bench_lora.py [--version v7] [--width 2048] [--layers 24] [--vocab 65536]
                               [--rank 64] [--precision fp16] [--repeats 5]

Prints one JSON line per measurement (RESULT {...}); times are the median of the repeats and
include waiting for the GPU to finish. The logits after the last removal are compared with the
base model's (max |Δ|), as a check that the swap undid itself.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ai00_trio.engine.info import detect_model  # noqa: E402
from ai00_trio.engine.lora import LoraPlan, plan_lora  # noqa: E402
from ai00_trio.engine.model import Model  # noqa: E402
from ai00_trio.gpu.context import create_context  # noqa: E402
from reference64 import random_checkpoint  # noqa: E402

PROJECTIONS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")


def report(**fields) -> None:
    print("RESULT", json.dumps(fields), flush=True)


def make_adapter(tensors: dict[str, np.ndarray], layers: int, rank: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    lora = {}
    for i in range(layers):
        for stem in PROJECTIONS:
            name = f"blocks.{i}.{stem}"
            out, inp = tensors[name + ".weight"].shape
            lora[name + ".lora_A"] = rng.standard_normal((rank, inp), dtype=np.float32) * 0.01
            lora[name + ".lora_B"] = rng.standard_normal((out, rank), dtype=np.float32) * 0.01
    return lora


def host_merge(tensors: dict[str, np.ndarray], plan: LoraPlan) -> None:
    """engine/lora.py's merge of one plan (its file already read)."""
    for delta in plan.deltas:
        base = tensors[delta.target]
        (base.astype(np.float32) + delta.scale * delta.product()).astype(base.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default="v7")
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    tensors = random_checkpoint(args.version, args.width, args.layers, args.vocab, seed=1)
    ctx = create_context()
    started = time.perf_counter()
    model = Model(tensors, detect_model(tensors), ctx, args.precision)
    load_s = time.perf_counter() - started
    lora = make_adapter(tensors, args.layers, args.rank)
    prompt = list(range(1, 17))
    base = model.forward(prompt, model.new_state())

    handle = model.apply_lora(lora, args.alpha)  # also compiles the kernel
    changed = float(np.abs(model.forward(prompt, model.new_state()) - base).max())
    model.remove_lora(handle)
    applies, removes = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        handle = model.apply_lora(lora, args.alpha)
        applies.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.remove_lora(handle)
        removes.append(time.perf_counter() - started)
    restored = float(np.abs(model.forward(prompt, model.new_state()) - base).max())
    plan = plan_lora(lora, args.alpha, {name: t.shape for name, t in tensors.items()}, "bench")
    started = time.perf_counter()
    host_merge(tensors, plan)
    host_s = time.perf_counter() - started
    report(kind="lora_swap", version=args.version, width=args.width, layers=args.layers, vocab=args.vocab,
           precision=args.precision, rank=args.rank, adapter_matrices=len(plan.deltas), device=ctx.info.name,
           load_s=round(load_s, 3), apply_s=round(statistics.median(applies), 4),
           remove_s=round(statistics.median(removes), 4), host_merge_s=round(host_s, 3),
           logits_changed_by=round(changed, 4), logits_after_remove_max_diff=restored)


if __name__ == "__main__":
    main()
