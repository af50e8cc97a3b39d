"""LoRA adapters merged at load time: the merged model's logits equal those of a checkpoint
merged by hand, in BlinkDL's and in AI00's naming; bad adapters are refused with the file and
tensor named; the server merges the `[[lora]]` entries of its config."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ai00_trio.engine import load_model
from ai00_trio.engine.formats import ModelFormatError, read_checkpoint

MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "tiny-rwkv-7v0-834K.st"
PROMPT = [ord(c) for c in "The quick brown fox"]
RANK = 4


def adapter(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """BlinkDL-style pairs for two layers ([r, in] and [out, r]) and a retrained LayerNorm."""
    return {
        "blocks.0.att.key.lora_A": rng.standard_normal((RANK, 64)).astype(np.float32) * 0.3,
        "blocks.0.att.key.lora_B": rng.standard_normal((64, RANK)).astype(np.float32) * 0.3,
        "blocks.1.ffn.value.lora_A": rng.standard_normal((RANK, 256)).astype(np.float32) * 0.3,
        "blocks.1.ffn.value.lora_B": rng.standard_normal((64, RANK)).astype(np.float32) * 0.3,
        "blocks.0.ln1.weight": rng.standard_normal(64).astype(np.float32),
    }


def merged_by_hand(lora: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    tensors = read_checkpoint(MODEL)
    for stem in ("blocks.0.att.key", "blocks.1.ffn.value"):
        delta = lora[f"{stem}.lora_B"] @ lora[f"{stem}.lora_A"]
        tensors[f"{stem}.weight"] = tensors[f"{stem}.weight"] + alpha / RANK * delta
    tensors["blocks.0.ln1.weight"] = lora["blocks.0.ln1.weight"]
    return tensors


def logits(gpu, path: Path, loras=()) -> np.ndarray:
    model = load_model(path, precision="fp32", context=gpu, loras=loras)
    return model.forward(PROMPT, model.new_state())


def test_merged_adapter_equals_a_checkpoint_merged_by_hand(gpu, tmp_path):
    lora = adapter(np.random.default_rng(0))
    save_file(lora, str(tmp_path / "lora.st"))
    ai00_names = {}  # AI00's converter: lora_A -> lora.0 (transposed), lora_B -> lora.1
    for name, array in lora.items():
        if name.endswith(".lora_A"):
            ai00_names[name.replace(".lora_A", ".weight.lora.0")] = np.ascontiguousarray(array.T)
        elif name.endswith(".lora_B"):
            ai00_names[name.replace(".lora_B", ".weight.lora.1")] = array
        else:
            ai00_names[name] = array
    save_file(ai00_names, str(tmp_path / "lora-ai00.st"))
    save_file(merged_by_hand(lora, 8.0), str(tmp_path / "merged.st"))

    want = logits(gpu, tmp_path / "merged.st")
    got = logits(gpu, MODEL, [(tmp_path / "lora.st", 8.0)])
    got_ai00 = logits(gpu, MODEL, [(tmp_path / "lora-ai00.st", 8.0)])
    base = logits(gpu, MODEL)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_ai00, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - base).max() > 0.1  # the adapter changes what the model says


@pytest.mark.parametrize("tensors, message", [
    ({"blocks.0.att.key.lora_A": np.zeros((4, 64), np.float32)}, "no partner blocks.0.att.key.lora_B"),
    ({"blocks.99.att.key.lora_A": np.zeros((4, 64), np.float32),
      "blocks.99.att.key.lora_B": np.zeros((64, 4), np.float32)}, "blocks.99.att.key.weight is missing"),
    ({"blocks.0.ffn.key.lora_A": np.zeros((4, 64), np.float32),
      "blocks.0.ffn.key.lora_B": np.zeros((64, 4), np.float32)}, r"do not make a \[256, 64\] layer"),
    ({"blocks.0.ln1.weight": np.zeros(32, np.float32)}, r"is \[32\], the model's blocks.0.ln1.weight is \[64\]"),
    ({"blocks.0.att.nothing": np.zeros(64, np.float32)}, "blocks.0.att.nothing matches no tensor"),
], ids=["unpaired", "unknown-layer", "wrong-shape", "vector-shape", "unknown-vector"])
def test_bad_adapters_are_refused_by_name(gpu, tmp_path, tensors, message):
    save_file(tensors, str(tmp_path / "bad.st"))
    with pytest.raises(ModelFormatError, match=message) as caught:
        load_model(MODEL, context=gpu, loras=[(tmp_path / "bad.st", 1.0)])
    assert "bad.st" in str(caught.value)


@pytest.mark.gpu
def test_server_config_merges_its_loras(tmp_path):
    import msgspec

    from ai00_trio.config import Config
    from ai00_trio.server import engine_service

    lora = adapter(np.random.default_rng(1))
    save_file(lora, str(tmp_path / "lora.st"))
    save_file(merged_by_hand(lora, 2.0), str(tmp_path / "merged.st"))
    shutil.copy(MODEL, tmp_path / MODEL.name)  # the model, like its LoRAs, inside the models folder
    config = msgspec.convert({"model": {"path": str(tmp_path), "name": MODEL.name, "precision": "fp32"},
                              "lora": [{"path": "lora.st", "alpha": 2.0}]}, Config)
    loaded, = engine_service.load_service(config)
    model = loaded.model
    want = load_model(tmp_path / "merged.st", precision="fp32", context=model.ctx)
    np.testing.assert_allclose(model.forward(PROMPT, model.new_state()), want.forward(PROMPT, want.new_state()),
                               rtol=1e-5, atol=1e-5)
