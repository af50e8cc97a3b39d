"""Fidelity at real shape: our logits beside BlinkDL's `rwkv` package and an exact float64 statement.

For each version (random weights of a 1.5B-class shape, tests/reference64.py) and each of our weight
formats, 512 random tokens go through `load_model(...).forward(tokens, state, full=True)` (prefill
chunks) and, for the first --decode tokens, one token per step (the decode kernels). The yardstick
is the package in fp32 on CUDA, token by token, TF32 off; beside it the package's own `cuda fp16`
and `cuda fp16i8` strategies against its fp32 (the targets of issue 17), and the float64 statement,
which tells whose error an fp32 difference is. Printed per row: max and mean |Δlogit|, top-1
agreement, and the mean KL divergence of the row's softmax from the fp32 reference's.

On the lent GPU, from the project root after `. .gl/remote.sh`:
    python3 bench/fidelity.py /tmp/fid --versions v4,v5,v6,v7 --formats fp32,fp16,int8,nf4
Without torch (or CUDA) the package rows are skipped and the float64 statement is the reference;
`--width 512 --layers 4 --vocab 4096` makes a shape this machine's software adapter can run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference64 import Reference64, random_checkpoint  # noqa: E402

# name: (strategy, TorchScript on); "cpu-fp32" and "fp32-nojit" tell where a package error comes from
PACKAGE_STRATEGIES = {"fp32": ("cuda fp32", True), "fp16": ("cuda fp16", True), "fp16i8": ("cuda fp16i8", True),
                      "cpu-fp32": ("cpu fp32", True), "fp32-nojit": ("cuda fp32", False)}
FORMATS = {"fp32": ("fp32", ""), "fp16": ("fp16", ""), "int8": ("fp16", "int8"), "nf4": ("fp16", "nf4")}


def compare(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Differences of logits rows [T, V] from the reference rows."""
    d = np.abs(ours.astype(np.float64) - ref)
    kl = []
    for a, b in zip(ref, ours.astype(np.float64)):
        lp = a - a.max() - np.log(np.exp(a - a.max()).sum())
        lq = b - b.max() - np.log(np.exp(b - b.max()).sum())
        kl.append(float((np.exp(lp) * (lp - lq)).sum()))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "top1": float((ours.argmax(1) == ref.argmax(1)).mean()), "kl": float(np.mean(kl))}


def package_logits(version: str, checkpoint: Path, strategy: str, jit: bool, tokens: list[int]) -> np.ndarray:
    """The package's logits for every token, fed one at a time (its plain RNN form). Runs in a
    child process: the package picks its v7 code at import time."""
    os.environ.update(RWKV_JIT_ON="1" if jit else "0", RWKV_CUDA_ON="0")
    if version == "v7":
        os.environ["RWKV_V7_ON"] = "1"
    import torch
    from rwkv.model import RWKV
    # after the import: the v7 code turns TF32 on, which moves fp32 logits by ~0.07
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = RWKV(model=str(checkpoint.with_suffix("")), strategy=strategy)
    print(f"# package {strategy}: TF32 {torch.backends.cuda.matmul.allow_tf32}", file=sys.stderr)
    rows, state = [], None
    with torch.no_grad():
        for t in tokens:
            logits, state = model.forward([t], state)
            rows.append(logits.float().cpu().numpy())
    return np.stack(rows)


def make_checkpoint(args: argparse.Namespace, version: str) -> Path:
    """DIR/<version>.pth (for the package) or .st without torch; made once. The weights are
    fp16 values either way; stored as fp32 (the default) they keep the package's v4-v6 loader
    from rounding its LN0-normalized embedding to fp16 (see Reference64's f16_embedding)."""
    try:
        import torch
    except ImportError:
        torch = None
    stored = args.pth_dtype if torch else "fp16"
    path = args.dir / f"{version}-{args.width}x{args.layers}-{stored}.{'pth' if torch else 'st'}"
    if not path.exists():
        t0 = time.perf_counter()
        tensors = random_checkpoint(version, args.width, args.layers, args.vocab, seed=1)
        if torch:
            dtype = torch.float16 if stored == "fp16" else torch.float32
            torch.save({k: torch.from_numpy(v).to(dtype) for k, v in tensors.items()}, path)
        else:
            from safetensors.numpy import save_file
            save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(path))
        print(f"# {path.name}: made in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def read_checkpoint_f32(path: Path) -> dict[str, np.ndarray]:
    from ai00_trio.engine.formats import read_checkpoint
    return {k: np.asarray(v, np.float32) for k, v in read_checkpoint(path).items()}


def ours(path: Path, fmt: str, tokens: list[int], decode: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Our logits: every token through prefill chunks, and the first `decode` one per step. A
    format written `fp16/runN` sums f16 products in runs of 4N columns in prefill's tiled matmul;
    `nf4@N` keeps NF4's first N layers in int8 (`load_model`'s nf4_int8_layers)."""
    import dataclasses
    from ai00_trio.engine import load_model
    from ai00_trio.gpu.tuning import DEFAULT_TUNING
    fmt, _, run = fmt.partition("/run")
    fmt, _, int8_layers = fmt.partition("@")
    precision, quant_type = FORMATS[fmt]
    mix = {"nf4_int8_layers": int(int8_layers)} if int8_layers else {}
    tuning = DEFAULT_TUNING
    if run:
        tuning = dataclasses.replace(tuning, tile_half_long=dataclasses.replace(tuning.tile_half_long, run_k4=int(run)))
    t0 = time.perf_counter()
    model = load_model(path, precision=precision, quant=1000 if quant_type else 0, quant_type=quant_type or "int8",
                       tuning=tuning, **mix)
    load_s = time.perf_counter() - t0
    prefill = model.forward(tokens, model.new_state(), full=True)
    state = model.new_state()
    steps = np.stack([model.forward([t], state) for t in tokens[:decode]]) if decode else prefill[:0]
    return prefill, steps, load_s


PROBE_WGSL = """
@group(0) @binding(0) var<storage, read> xs: array<f32>;
@group(0) @binding(1) var<storage, read_write> ys: array<f32>;  // [4, n]: tanh, exact_tanh, exp, sigmoid
EXACT_TANH
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = arrayLength(&xs);
    if id.x >= n { return; }
    let v = xs[id.x];
    ys[id.x] = tanh(v);
    ys[n + id.x] = exact_tanh(v);
    ys[2u * n + id.x] = exp(v);
    ys[3u * n + id.x] = 1.0 / (1.0 + exp(-v));
}
"""


def activation_probe() -> dict[str, float]:
    """Largest error of the device's builtin tanh, our exact_tanh (matmul.wgsl), exp and sigmoid
    against float64 on [-8, 8]: absolute for tanh and sigmoid, relative for exp."""
    import re

    from ai00_trio.gpu.context import create_context
    source = (ROOT / "ai00_trio/gpu/shaders/matmul.wgsl").read_text()
    exact = re.search(r"fn safe_tanh\(.*?\n", source).group(0).replace("safe_tanh", "exact_tanh")
    ctx = create_context()
    xs = np.linspace(-8, 8, 1 << 20, dtype=np.float32)
    out = ctx.storage(4 * xs.nbytes)
    module = ctx.device.create_shader_module(code=PROBE_WGSL.replace("EXACT_TANH", exact))
    pipeline = ctx.device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
    group = ctx.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": ctx.upload(xs)}}, {"binding": 1, "resource": {"buffer": out}}])
    encoder = ctx.device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, group)
    compute.dispatch_workgroups(len(xs) // 64)
    compute.end()
    ctx.device.queue.submit([encoder.finish()])
    ys = ctx.read(out, 4 * xs.nbytes).view(np.float32).reshape(4, -1).astype(np.float64)
    x = xs.astype(np.float64)
    return {"adapter": ctx.info.name,
            "builtin_tanh_abs": float(np.abs(ys[0] - np.tanh(x)).max()),
            "exact_tanh_abs": float(np.abs(ys[1] - np.tanh(x)).max()),
            "exp_rel": float((np.abs(ys[2] - np.exp(x)) / np.exp(x)).max()),
            "sigmoid_abs": float(np.abs(ys[3] - 1 / (1 + np.exp(-x))).max())}


def run_version(args: argparse.Namespace, version: str) -> list[dict]:
    path = make_checkpoint(args, version)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, args.vocab, args.tokens).tolist()
    rows: list[dict] = []

    def row(name: str, logits: np.ndarray, against: str, ref: np.ndarray, **extra: object) -> None:
        n = min(len(logits), len(ref))
        r = {"version": version, "what": name, "against": against, "tokens": n, **compare(logits[:n], ref[:n]), **extra}
        rows.append(r)
        print("JSON fidelity " + json.dumps(r), flush=True)

    package: dict[str, np.ndarray] = {}
    if path.suffix == ".pth" and not args.no_package:
        for name in args.strategies:
            if version == "v7" and name == "fp16i8":
                continue  # the package's v7 code takes fp16, fp32 and bf16 only
            out = args.dir / f"{path.stem}-package-{name}.npy"
            count = args.float64 if name in ("cpu-fp32", "fp32-nojit") else args.tokens  # diagnostics: a prefix
            if not out.exists():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, __file__, str(args.dir), "--package-child", version, str(path),
                                "|".join(map(str, PACKAGE_STRATEGIES[name])), str(out), "--tokens", str(args.tokens), "--vocab", str(args.vocab),
                                "--first", str(count)],
                               check=True, stdout=subprocess.DEVNULL)
                print(f"# package {version} {name}: {time.perf_counter() - t0:.0f} s", flush=True)
            package[name] = np.load(out)
    exact = None
    if args.float64:
        t0 = time.perf_counter()
        exact = Reference64(read_checkpoint_f32(path), version).forward(tokens[:args.float64])
        if "fp32" in package and version != "v7" and args.pth_dtype == "fp16":
            as_package = Reference64(read_checkpoint_f32(path), version, f16_embedding=True)
            row("float64, fp16 embedding", as_package.forward(tokens[:args.float64]), "package fp32", package["fp32"])
        print(f"# float64 statement {version}: {time.perf_counter() - t0:.0f} s", flush=True)
    ref, ref_name = (package["fp32"], "package fp32") if "fp32" in package else (exact, "float64")
    if ref is None:
        raise SystemExit("no reference: give --float64 N or run where torch and the package are")
    if exact is not None and "fp32" in package:
        row("package fp32", package["fp32"], "float64", exact)
    for name, logits in package.items():
        if name in ("cpu-fp32", "fp32-nojit") and exact is not None:
            row(f"package {name}", logits, "float64", exact)
        elif name != "fp32":
            row(f"package {name}", logits, ref_name, ref)
    for fmt in args.formats:
        prefill, steps, load_s = ours(path, fmt, tokens, args.decode)
        row(f"ours {fmt}", prefill, ref_name, ref, load_s=round(load_s, 1))
        if len(steps):
            row(f"ours {fmt} decode", steps, ref_name, ref)
        if exact is not None and ref_name != "float64" and fmt == "fp32":
            row(f"ours {fmt}", prefill, "float64", exact)
    return rows


def embedding_rounding(args: argparse.Namespace) -> None:
    """What the package's fp16 embedding alone moves: the float64 statement with and without it
    (numpy only; one model in memory at a time)."""
    import gc
    for version in args.versions.split(","):
        tensors = random_checkpoint(version, args.width, args.layers, args.vocab, seed=1)
        tokens = np.random.default_rng(2).integers(0, args.vocab, args.float64).tolist()
        out = []
        for rounded in (False, True):
            out.append(Reference64(tensors, version, f16_embedding=rounded).forward(tokens))
            gc.collect()
        d = np.abs(out[1] - out[0])
        print(f"{version} C {args.width} L {args.layers}: first token {d[0].max():.2e}, max {d.max():.2e}, "
              f"logits' spread {out[0].std():.2f}", flush=True)


def table(rows: list[dict]) -> str:
    lines = ["| version | logits | against | tokens | max abs | mean abs | top-1 | mean KL |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['version']} | {r['what']} | {r['against']} | {r['tokens']} | {r['max_abs']:.2e} | "
                     f"{r['mean_abs']:.2e} | {100 * r['top1']:.1f}% | {r['kl']:.2e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="where the checkpoints and the package's logits are kept")
    ap.add_argument("--versions", default="v4,v5,v6,v7")
    ap.add_argument("--formats", default="fp32,fp16,int8,nf4")
    ap.add_argument("--strategies", default="fp32,fp16,fp16i8", help="the package's, beside ours")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--decode", type=int, default=32, help="tokens also fed one per step")
    ap.add_argument("--float64", type=int, default=64, help="tokens through the float64 statement (0: none)")
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--no-package", action="store_true")
    ap.add_argument("--embedding-rounding", action="store_true",
                    help="only print what the package's fp16 embedding moves (float64, CPU)")
    ap.add_argument("--pth-dtype", choices=("fp32", "fp16"), default="fp32",
                    help="how the checkpoint stores its (fp16-valued) weights; fp16 reproduces issue 17's setting")
    ap.add_argument("--first", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--package-child", nargs=4, metavar=("VERSION", "CHECKPOINT", "STRATEGY", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.package_child:
        version, checkpoint, strategy, out = args.package_child
        tokens = np.random.default_rng(2).integers(0, args.vocab, args.tokens).tolist()[:args.first]
        strategy, jit = strategy.split("|")
        np.save(out, package_logits(version, Path(checkpoint), strategy, jit == "True", tokens))
        return
    if args.embedding_rounding:
        embedding_rounding(args)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    args.formats = args.formats.split(",")
    args.strategies = args.strategies.split(",")
    print("JSON activations " + json.dumps(activation_probe()), flush=True)
    rows = []
    for version in args.versions.split(","):
        rows += run_version(args, version)
    print(table(rows))


if __name__ == "__main__":
    main()
