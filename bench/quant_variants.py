"""Which 4-bit weight code costs the least fidelity: a host-only (numpy float64) study.

The projections our uploader quantizes (`engine/upload.py`: those loaded with `layer=`) are
replaced by what a candidate code reads back, and `tests/reference64.py` runs the model; the
score is the mean KL divergence of its softmax from the same model's unquantized float64 logits.
Weight error alone is measured (no GPU rounding), which is what separates the codes. Also
printed: the weights' RMS error relative to their spread, and the code's bits per weight.

    python3 bench/quant_variants.py --versions v6 --width 1024 --layers 8 --vocab 4096 --tokens 128
    python3 bench/quant_variants.py --sensitivity ...   # NF4 on one kind of matrix / layer at a time
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference64 import Reference64, random_checkpoint  # noqa: E402

from ai00_trio.engine import quant  # noqa: E402
from bench.fidelity import compare  # noqa: E402

Code = Callable[[np.ndarray], np.ndarray]  # [m, k] weights → what the GPU would read back

# which checkpoint tensors the uploader quantizes per version, and whether it uploads them transposed
ATT = {"v4": ("receptance", "key", "value", "output"), "v5": ("receptance", "key", "value", "gate", "output"),
       "v6": ("receptance", "key", "value", "gate", "output"), "v7": ("receptance", "key", "value", "output")}
ATT_T = {"v4": (), "v5": (), "v6": ("time_decay_w1",), "v7": ("w1", "a1", "v1", "g1")}
FFN = {"v4": ("key", "value", "receptance"), "v5": ("key", "value", "receptance"),
       "v6": ("key", "value", "receptance"), "v7": ("key", "value")}


def quantized_tensors(version: str, layers: int) -> list[tuple[str, bool, str]]:
    """(name, uploaded transposed, kind) of every tensor the uploader quantizes."""
    out = []
    for i in range(layers):
        a, f = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        out += [(a + m + ".weight", False, "att." + m) for m in ATT[version]]
        out += [(a + m, True, "att." + m) for m in ATT_T[version] if not (m == "v1" and i == 0)]
        out += [(f + m + ".weight", False, "ffn." + m) for m in FFN[version]]
    return out


def blocks_of(w: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(w, np.float32).reshape(-1, size)


def nf4_with(block: int, scale_of: Callable[[np.ndarray], np.ndarray]) -> Code:
    levels = quant.NF4_LEVELS.astype(np.float64)
    mids = (levels[:-1] + levels[1:]) / 2

    def code(w: np.ndarray) -> np.ndarray:
        b = blocks_of(w, block).astype(np.float64)
        s = scale_of(b).astype(np.float16).astype(np.float64)[:, None]
        q = np.searchsorted(mids, b / np.where(s > 0, s, 1), side="right")
        return (levels[q] * s).reshape(w.shape)
    return code


def absmax(b: np.ndarray) -> np.ndarray:
    return np.abs(b).max(axis=1)


def best_of(shrinks: np.ndarray, levels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Per block, of the scales absmax · shrink, the one with the least squared error."""
    mids = (levels[:-1] + levels[1:]) / 2

    def scale_of(b: np.ndarray) -> np.ndarray:
        top = np.abs(b).max(axis=1)
        best, best_err = top, np.full(len(b), np.inf)
        for f in shrinks:
            s = (top * f).astype(np.float16).astype(np.float64)
            s = np.where(s > 0, s, 1.0)[:, None]
            err = ((levels[np.searchsorted(mids, b / s, side="right")] * s - b) ** 2).sum(axis=1)
            better = err < best_err
            best, best_err = np.where(better, s[:, 0], best), np.where(better, err, best_err)
        return best
    return scale_of


def int4_minmax(block: int, search: bool) -> Code:
    """16 even levels from the block's min to its max (f16 each), optionally the range shrunk."""
    def code(w: np.ndarray) -> np.ndarray:
        b = blocks_of(w, block).astype(np.float64)
        lo0, hi0 = b.min(axis=1), b.max(axis=1)
        best, best_err = None, np.full(len(b), np.inf)
        for f in (np.linspace(0.6, 1.0, 17) if search else (1.0,)):
            mid = (lo0 + hi0) / 2
            lo = (mid + (lo0 - mid) * f).astype(np.float16).astype(np.float64)[:, None]
            hi = (mid + (hi0 - mid) * f).astype(np.float16).astype(np.float64)[:, None]
            span = np.where(hi > lo, hi - lo, 1.0)
            out = lo + np.clip(np.rint((b - lo) / span * 15), 0, 15) / 15 * span
            err = ((out - b) ** 2).sum(axis=1)
            better = err < best_err
            best = out if best is None else np.where(better[:, None], out, best)
            best_err = np.where(better, err, best_err)
        return best.reshape(w.shape)
    return code


def int8_code(w: np.ndarray) -> np.ndarray:
    words, scales = quant.quantize_int8(w)
    return quant.dequantize_int8(words, scales, w.size).reshape(w.shape)


SHRINKS = np.linspace(0.70, 1.0, 16)
CODES: dict[str, tuple[Code, float]] = {  # name: (code, bits per weight)
    "nf4": (nf4_with(64, absmax), 4.25),
    "nf4-mse": (nf4_with(64, best_of(SHRINKS, quant.NF4_LEVELS.astype(np.float64))), 4.25),
    "nf4-b32": (nf4_with(32, absmax), 4.5),
    "nf4-b32-mse": (nf4_with(32, best_of(SHRINKS, quant.NF4_LEVELS.astype(np.float64))), 4.5),
    "int4-minmax": (int4_minmax(64, False), 4.5),
    "int4-minmax-mse": (int4_minmax(64, True), 4.5),
    "int8": (int8_code, 8.5),
}


def run(version: str, tensors: dict[str, np.ndarray], tokens: list[int], ref: np.ndarray,
        plan: dict[str, Code]) -> dict[str, float]:
    """KL etc. with each tensor named in `plan` replaced by its code's read-back."""
    t = dict(tensors)
    err2 = var = 0.0
    for name, transposed, _ in quantized_tensors(version, 1 + max(int(k.split(".")[1]) for k in t if k.startswith("blocks."))):
        if name not in plan:
            continue
        w = t[name].T if transposed else t[name]
        back = plan[name](np.ascontiguousarray(w))
        err2 += float(((back - w) ** 2).sum())
        var += float((w.astype(np.float64) ** 2).sum())
        t[name] = np.ascontiguousarray(back.T if transposed else back).astype(np.float32)
    out = compare(Reference64(t, version).forward(tokens), ref)
    out["rel_rms"] = (err2 / var) ** 0.5 if var else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", default="v4,v5,v6,v7")
    ap.add_argument("--codes", default=",".join(CODES),
                    help="comma-separated; CODE@N keeps the first N layers' projections in int8")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--sensitivity", action="store_true",
                    help="NF4 on one kind of matrix, or one layer, at a time (the rest exact)")
    args = ap.parse_args()
    print("| version | code | bits/weight | weights' RMS error / spread | mean KL | top-1 | mean abs |")
    print("|---|---|---|---|---|---|---|")
    for version in args.versions.split(","):
        tensors = random_checkpoint(version, args.width, args.layers, args.vocab, seed=1)
        tokens = np.random.default_rng(2).integers(0, args.vocab, args.tokens).tolist()
        t0 = time.perf_counter()
        ref = Reference64(tensors, version).forward(tokens)
        print(f"# {version}: reference in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        names = quantized_tensors(version, args.layers)
        if args.sensitivity:
            nf4 = CODES["nf4"][0]
            groups: dict[str, list[str]] = {}
            for name, _, kind in names:
                groups.setdefault(kind, []).append(name)
                groups.setdefault(f"layer {name.split('.')[1]}", []).append(name)
            plans = {label: {n: nf4 for n in members} for label, members in groups.items()}
            bits = {label: 4.25 for label in plans}
        else:
            plans, bits = {}, {}
            for label in args.codes.split(","):
                c, _, first = label.partition("@")
                kept = int(first or 0)
                plans[label] = {n: CODES["int8" if int(n.split(".")[1]) < kept else c][0] for n, _, _ in names}
                bits[label] = round((kept * CODES["int8"][1] + (args.layers - kept) * CODES[c][1]) / args.layers, 2)
        for label, plan in plans.items():
            r = run(version, tensors, tokens, ref, plan)
            print(f"| {version} | {label} | {bits[label]} | {r['rel_rms']:.4f} | {r['kl']:.3e} | "
                  f"{100 * r['top1']:.1f}% | {r['mean_abs']:.3e} |", flush=True)


if __name__ == "__main__":
    main()
