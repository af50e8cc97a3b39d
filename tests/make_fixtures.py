"""Make the checkpoint-format fixtures in tests/data/fixtures/ (dev-only; needs real torch).

Neither the project nor its tests need torch; this script does, so that the ``.pth``
fixtures are genuine ``torch.save`` output. Run it from a throwaway venv::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy safetensors
    /tmp/torchenv/bin/python tests/make_fixtures.py

For each tiny fp32 model (plain safetensors, PyTorch names) it writes, all float16:

* ``<name>.fp16.pth``          ``torch.save({k: torch.from_numpy(v).half()})``
* ``<name>.fp16.safetensors``  the same tensors as plain safetensors
* ``<name>.ai00.st``           AI00 / web-rwkv layout, converted the way web-rwkv's
  ``convert_safetensors.py`` does it (lower-case, ``time_faaaa -> time_first``,
  ``time_maa -> time_mix``, last two dims swapped for names *containing* one of its
  LoRA names, per-head v5 decay/bonus repeated to ``[H, N]``)

plus ``<5v2>.bf16.pth`` and two small hand-made checkpoints:

* ``strided.pth``: non-contiguous views, storage offsets, shared storages, stride 0,
  a Parameter, a 0-d and an empty tensor, float64/int64/bf16/fp16 storages;
  the values are a formula the tests recompute (see ``strided_tensors``);
* ``wrapped.pth``: a state dict nested as ``{"state_dict": ..., "epoch": 3}``.

The ungated v5 model (rwkv.cpp "5v1", ChatRWKV "5.0") keeps its bonus in log form,
``time_first [H]`` (the model uses ``exp(time_first)``). web-rwkv's converter cannot
run such a model (it leaves it unrepeated and its loader rejects models without a
gate); the project's convention for its AI00 file is the gated 5.1 treatment: decay and
bonus repeated to ``[H, N]``, and the bonus stored raw, ``time_first = fp16(exp(t))``
where ``t`` is the fp16 value in the ``.pth``. Reading it back gives ``log`` of that in
float32, which matches the ``.pth`` only to fp16 precision of the bonus; the ``.pth``
and ``.safetensors`` fixtures keep the ordinary log form.

To keep the fixtures small the v6 model (3.3M parameters) is cut to its first
``KEEP_LAYERS["6v0"]`` layers; the other models are complete.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "fixtures"

#: short id -> (fp32 source, fixture base name)
MODELS: dict[str, tuple[Path, str]] = {
    "4v0": (ROOT / "tests/data/tiny-rwkv-4v0-660K.st", "tiny-rwkv-4v0-660K"),
    "5v1": (ROOT / "tests/data/tiny-rwkv-5v1-730K.st", "tiny-rwkv-5v1-730K"),
    "5v2": (ROOT / "tests/data/tiny-rwkv-5v2-730K.st", "tiny-rwkv-5v2-730K"),
    "6v0": (ROOT / "tests/data/tiny-rwkv-6v0-3m-Q5_1-dequant.st", "tiny-rwkv-6v0-3m-3layers"),
    "7v0": (ROOT / "assets/models/tiny-rwkv-7v0-834K.st", "tiny-rwkv-7v0-834K"),
}
KEEP_LAYERS: dict[str, int] = {"6v0": 3}
BF16_VARIANTS = ("5v2",)

# web-rwkv convert_safetensors.py: renames and (substring-matched) transposed names.
AI00_RENAMES = (("time_faaaa", "time_first"), ("time_maa", "time_mix"))
AI00_TRANSPOSE_IF_CONTAINS = (
    "time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
    "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "time_state",
)


def load_model(source: Path, keep_layers: int | None) -> dict[str, np.ndarray]:
    tensors = load_file(str(source))
    if keep_layers is None:
        return tensors
    return {
        k: v for k, v in tensors.items()
        if not k.startswith("blocks.") or int(k.split(".")[1]) < keep_layers
    }


def to_ai00(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 AI00 layout from fp32 PyTorch tensors (see the module docstring)."""
    names = list(tensors)
    is_v5 = any("ln_x" in k for k in names) and not any("time_maa" in k or "r_k" in k for k in names)
    per_head = is_v5 and tensors["blocks.0.att.time_decay"].dim() == 1
    n_embd = tensors["emb.weight"].shape[1]
    out: dict[str, torch.Tensor] = {}
    for name in names:
        value = tensors[name].half()
        leaf = name.rsplit(".", 1)[-1]
        if per_head and leaf in ("time_decay", "time_faaaa", "time_first"):
            if leaf == "time_first":  # log-form bonus -> raw bonus (project convention)
                value = torch.exp(value.float()).half()
            value = value.unsqueeze(1).repeat(1, n_embd // value.shape[0])
        new_name = name
        for old, new in AI00_RENAMES:
            new_name = new_name.replace(old, new)
        new_name = new_name.lower()
        if any(t in new_name for t in AI00_TRANSPOSE_IF_CONTAINS):
            value = value.transpose(-2, -1)
        out[new_name] = value.contiguous()
    return out


def strided_tensors() -> dict[str, torch.Tensor]:
    """Views with offsets, strides and shared storages; tests rebuild them with numpy."""
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8) * 0.25 - 3.0
    half = base.half()
    return {
        "transposed": base.t(),
        "offset_slice": base[2:5, 1:7],
        "every_other": base[:, ::2],
        "row3_shared": base[3],
        "half_transposed": half.t(),
        "bf16_strided": base.bfloat16()[1:, ::3],
        "expanded": torch.arange(4, dtype=torch.float32).expand(3, 4),
        "param": torch.nn.Parameter(base[0].clone(), requires_grad=False),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 5),
        "double": base.double()[:2],
        "int64": torch.arange(5),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for short, (source, base_name) in MODELS.items():
        fp32 = load_model(source, KEEP_LAYERS.get(short))
        torch_fp32 = {k: torch.from_numpy(v) for k, v in fp32.items()}
        half = {k: v.half() for k, v in torch_fp32.items()}
        paths = {
            "pth": OUT / f"{base_name}.fp16.pth",
            "st": OUT / f"{base_name}.fp16.safetensors",
            "ai00": OUT / f"{base_name}.ai00.st",
        }
        torch.save(half, paths["pth"])
        save_file(half, str(paths["st"]), metadata={"format": "pt"})
        save_file(to_ai00(torch_fp32), str(paths["ai00"]), metadata={"format": "pt"})
        written += paths.values()
        if short in BF16_VARIANTS:
            bf16_path = OUT / f"{base_name}.bf16.pth"
            torch.save({k: v.bfloat16() for k, v in torch_fp32.items()}, bf16_path)
            written.append(bf16_path)
    torch.save(strided_tensors(), OUT / "strided.pth")
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save({"state_dict": {"a": base, "b": base.half()}, "epoch": 3}, OUT / "wrapped.pth")
    written += [OUT / "strided.pth", OUT / "wrapped.pth"]
    total = 0
    for path in written:
        size = path.stat().st_size
        total += size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        print(f"{size:>10}  {digest}  {path.relative_to(ROOT)}")
    print(f"{total:>10}  total ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
