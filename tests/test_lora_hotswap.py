"""LoRA hot-swap on the GPU: an adapter applied to a loaded model gives the logits of the same
adapter merged at load (every version, fp32 and fp16), removing it gives back the base model's
logits, lora.wgsl agrees with numpy on a matrix big enough for its 2-D dispatch, and what cannot
change in place (quantized, folded or transformed tensors, overlapping adapters) is refused with
nothing changed.

Tolerances (max |Δlogit|; these models' logits span about ±10):
  applied vs merged at load: fp32 1e-5; fp16 2e-3 (the GPU rounds W to fp16, then W + ΔW again:
    two roundings where the load-time merge has one).
  removed vs base: fp32 1e-5; fp16 5e-3 (W + ΔW - ΔW rounded twice: each weight within one fp16
    ulp of its base value; measured 7e-4 on v7).
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
from safetensors.numpy import save_file

from ai00_trio.engine import load_model
from ai00_trio.engine.formats import ModelFormatError, read_checkpoint
from ai00_trio.engine.hotswap import HotSwapError, LoraSwapper
from ai00_trio.engine.quant import stored_as
from ai00_trio.engine.upload import MatrixSlot
from ai00_trio.gpu.graph import Matrix
from ai00_trio.gpu.kernels import KernelCache
from conftest import TINY_MODELS
from server_helpers import http, running_server

PROMPT = [ord(c) for c in "The quick brown fox"]
RANK = 4
TOLERANCE = {"fp32": (1e-5, 1e-5), "fp16": (2e-3, 5e-3)}  # (applied vs merged, removed vs base)


def adapter(path, seed: int = 0, vector: bool = True) -> dict[str, np.ndarray]:
    """BlinkDL-style pairs for two layers of the checkpoint at `path`, and a retrained LayerNorm."""
    shapes = {name: t.shape for name, t in read_checkpoint(path).items()}
    rng = np.random.default_rng(seed)
    lora = {}
    for stem in ("blocks.0.att.key", "blocks.1.ffn.value"):
        out, inp = shapes[stem + ".weight"]
        lora[stem + ".lora_A"] = rng.standard_normal((RANK, inp)).astype(np.float32) * 0.3
        lora[stem + ".lora_B"] = rng.standard_normal((out, RANK)).astype(np.float32) * 0.3
    if vector:
        lora["blocks.0.ln1.weight"] = rng.standard_normal(shapes["blocks.0.ln1.weight"]).astype(np.float32)
    return lora


def logits(model) -> np.ndarray:
    return model.forward(PROMPT, model.new_state())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("version", list(TINY_MODELS))
def test_applied_equals_merged_at_load_and_removed_equals_base(gpu, tmp_path, version, precision):
    path = TINY_MODELS[version][0]
    save_file(adapter(path), str(tmp_path / "lora.st"))
    merged = logits(load_model(path, precision=precision, context=gpu, loras=[(tmp_path / "lora.st", 8.0)]))
    model = load_model(path, precision=precision, context=gpu)
    base = logits(model)
    handle = model.apply_lora(tmp_path / "lora.st", 8.0)
    applied = logits(model)
    assert model.loras == [handle]
    model.remove_lora(handle)
    removed = logits(model)
    applied_tol, removed_tol = TOLERANCE[precision]
    assert np.abs(merged - base).max() > 0.1  # the adapter changes what the model says
    assert np.abs(applied - merged).max() <= applied_tol
    assert np.abs(removed - base).max() <= removed_tol
    assert model.loras == []


def test_adapters_stack_and_come_out_in_any_order(gpu, tmp_path):
    path = TINY_MODELS["v7"][0]
    first = adapter(path, seed=1)
    second = adapter(path, seed=2, vector=False)  # pairs on the same layers as `first`: deltas add up
    # AI00's converted names for the second: lora.0 = A transposed, lora.1 = B
    ai00 = {name.replace(".lora_A", ".weight.lora.0"): np.ascontiguousarray(a.T)
            for name, a in second.items() if name.endswith(".lora_A")}
    ai00 |= {name.replace(".lora_B", ".weight.lora.1"): b for name, b in second.items() if name.endswith(".lora_B")}
    save_file(first, str(tmp_path / "first.st"))
    save_file(second, str(tmp_path / "second.st"))
    both = logits(load_model(path, precision="fp32", context=gpu,
                             loras=[(tmp_path / "first.st", 2.0), (tmp_path / "second.st", 0.5)]))
    only_second = logits(load_model(path, precision="fp32", context=gpu, loras=[(tmp_path / "second.st", 0.5)]))
    model = load_model(path, precision="fp32", context=gpu)
    base = logits(model)
    one = model.apply_lora(first, 2.0)        # tensors in memory, not a file
    two = model.apply_lora(ai00, 0.5)
    np.testing.assert_allclose(logits(model), both, rtol=1e-5, atol=1e-5)
    model.remove_lora(one)                    # the first out first: its LayerNorm comes back exactly
    np.testing.assert_allclose(logits(model), only_second, rtol=1e-5, atol=1e-5)
    model.remove_lora(two)
    np.testing.assert_allclose(logits(model), base, rtol=1e-5, atol=1e-5)
    with pytest.raises(HotSwapError, match="not applied"):
        model.remove_lora(two)


def refused(gpu, model, lora: dict[str, np.ndarray], error, message: str) -> None:
    base = logits(model)
    with pytest.raises(error, match=message):
        model.apply_lora(lora, 1.0)
    assert model.loras == []
    np.testing.assert_array_equal(logits(model), base)  # nothing changed


def test_quantized_weights_are_refused(gpu):
    path = TINY_MODELS["v7"][0]
    for quant_type in ("int8", "nf4"):
        model = load_model(path, precision="fp16", context=gpu, quant=1, quant_type=quant_type)
        lora = adapter(path)  # blocks.0.att.key is in the quantized layer 0 (int8 under NF4 too)
        refused(gpu, model, lora, HotSwapError, rf"blocks.0.att.key.weight is quantized \({stored_as(quant_type, 0)}\)")


def test_tensors_kept_in_another_form_are_refused(gpu):
    path = TINY_MODELS["v7"][0]
    model = load_model(path, precision="fp32", context=gpu)
    shapes = {name: t.shape for name, t in read_checkpoint(path).items()}
    rng = np.random.default_rng(3)
    vocab, width = shapes["emb.weight"]
    refused(gpu, model, {"emb.weight.lora_A": rng.standard_normal((RANK, width)).astype(np.float32),
                         "emb.weight.lora_B": rng.standard_normal((vocab, RANK)).astype(np.float32)},
            HotSwapError, "emb.weight is kept on the GPU in another form")
    refused(gpu, model, {"blocks.0.att.w1": rng.standard_normal(shapes["blocks.0.att.w1"]).astype(np.float32)},
            HotSwapError, "blocks.0.att.w1 is kept on the GPU in another form")
    # what the load-time merge refuses is refused the same way
    refused(gpu, model, {"blocks.0.att.key.lora_A": np.zeros((4, 64), np.float32)},
            ModelFormatError, "no partner blocks.0.att.key.lora_B")


def test_overlapping_adapters_are_refused(gpu):
    path = TINY_MODELS["v7"][0]
    model = load_model(path, precision="fp32", context=gpu)
    handle = model.apply_lora(adapter(path), 1.0)
    applied = logits(model)
    with pytest.raises(HotSwapError, match="blocks.0.ln1.weight is changed by an applied LoRA"):
        model.apply_lora({"blocks.0.ln1.weight": np.ones(64, np.float32)}, 1.0)
    replace_key = {"blocks.0.att.key.weight": np.zeros((64, 64), np.float32)}
    with pytest.raises(HotSwapError, match="blocks.0.att.key.weight is changed by an applied LoRA"):
        model.apply_lora(replace_key, 1.0)
    np.testing.assert_array_equal(logits(model), applied)
    model.remove_lora(handle)
    replaced = model.apply_lora(replace_key, 1.0)  # a whole matrix replaced, then a pair onto it refused
    with pytest.raises(HotSwapError, match="replaced whole by an applied LoRA"):
        model.apply_lora(adapter(path, vector=False), 1.0)
    model.remove_lora(replaced)


@pytest.mark.parametrize("fmt", ["f32", "f16"])
def test_the_kernel_agrees_with_numpy(gpu, fmt):
    """Matrix 1 of a stack of 2, with more pairs of weights than one row of workgroups holds
    (the 2-D dispatch) for f16; a small one for f32."""
    m, k, rank = (4097, 4100, 3) if fmt == "f16" else (96, 36, 5)
    rng = np.random.default_rng(4)
    dtype = np.float32 if fmt == "f32" else np.float16
    weights = rng.standard_normal((2, m, k)).astype(dtype)
    fmt = fmt if fmt == "f32" or gpu.has_f16 else "f16_packed"
    matrix = Matrix(gpu.upload(weights), 2, m, k, fmt)
    name = "blocks.0.att.key.weight"
    swapper = LoraSwapper(gpu, KernelCache(gpu.device), gpu.upload(np.zeros(4, np.float32)),
                          {name: [MatrixSlot(matrix, 1)]}, {name: (m, k)}, "v7")
    a = rng.standard_normal((rank, k)).astype(np.float32)
    b = rng.standard_normal((m, rank)).astype(np.float32)
    handle = swapper.apply({"blocks.0.att.key.lora_A": a, "blocks.0.att.key.lora_B": b}, 1.5)
    got = gpu.read(matrix.buffer, weights.nbytes).view(dtype).reshape(2, m, k)
    want = (weights[1].astype(np.float32) + 1.5 / rank * (b @ a)).astype(dtype)
    np.testing.assert_array_equal(got[0], weights[0])  # the other matrix of the stack is untouched
    ulp = np.spacing(np.abs(want).astype(dtype)).astype(np.float32)
    assert (np.abs(got[1].astype(np.float32) - want.astype(np.float32)) <= ulp * 1.01 + 1e-5).all()
    swapper.remove(handle)
    back = gpu.read(matrix.buffer, weights.nbytes).view(dtype).reshape(2, m, k)
    # merging rounds to half an ulp of the merged weight, unmerging to half an ulp of the base
    # weight (one ulp where the delta is small against the weight, as in trained adapters)
    bound = (ulp + np.spacing(np.abs(weights[1])).astype(np.float32)) * 0.51 + 1e-6
    assert (np.abs(back[1].astype(np.float32) - weights[1].astype(np.float32)) <= bound).all()


# --- through HTTP --------------------------------------------------------------------------
ADMIN_KEY = "lora-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODEL_V7 = TINY_MODELS["v7"][0]
HTTP_PROMPT = "The quick brown fox jumps over"  # past CACHE_MIN_TOKENS: its state is cached


def lora_folder(tmp_path):
    """The models folder: the v7 model, a LoRA, a sub-folder, and a LoRA linked from outside."""
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(MODEL_V7, folder / MODEL_V7.name)
    save_file(adapter(MODEL_V7), str(folder / "sub" / "lora.st"))
    (tmp_path / "outside.st").write_bytes((folder / "sub" / "lora.st").read_bytes())
    (folder / "link.st").symlink_to(tmp_path / "outside.st")
    return folder


def top_logprobs(base: str) -> dict[str, float]:
    status, body = http("POST", base + "/v1/completions", {"prompt": HTTP_PROMPT, "max_tokens": 1,
                                                            "temperature": 0, "logprobs": 5})
    assert status == 200, body
    return body["choices"][0]["logprobs"]["top_logprobs"][0]


def close(one: dict[str, float], other: dict[str, float], tolerance: float) -> bool:
    return one.keys() == other.keys() and all(abs(one[k] - other[k]) <= tolerance for k in one)


def models_info_loras(base: str) -> list[dict]:
    status, info = http("GET", base + "/api/models/info")
    assert status == 200, info
    return info["reload"]["lora"]


@pytest.mark.gpu
def test_lora_load_and_unload_through_http(tmp_path):
    folder = lora_folder(tmp_path)
    admin = f'[admin]\nkeys = ["{ADMIN_KEY}"]\n'
    with running_server(tmp_path, {"path": str(folder), "name": MODEL_V7.name}, extra_sections=admin) as base:
        before = top_logprobs(base)  # also caches the prompt's state, computed by the base weights
        assert models_info_loras(base) == []

        # a stream running when the load comes finishes (on the base weights) before the load is answered
        stream: dict = {"started": threading.Event()}

        def read_stream() -> None:
            request = urllib.request.Request(base + "/v1/completions", method="POST", data=json.dumps(
                {"prompt": "Once", "max_tokens": 300, "temperature": 0, "stream": True}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                first = response.readline()
                stream["started"].set()
                stream["events"] = (first + response.read()).decode().count("data: ")
            stream["ended"] = time.monotonic()

        reader = threading.Thread(target=read_stream)
        reader.start()
        assert stream["started"].wait(60)
        sent = time.monotonic()
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st", "alpha": 8.0}, ADMIN)
        loaded_at = time.monotonic()
        reader.join()
        assert status == 200, body
        assert body == {"loras": [{"id": 1, "path": "sub/lora.st", "alpha": 8.0}]}
        assert stream["events"] > 2 and sent < stream["ended"] <= loaded_at  # running at the load, then drained
        assert models_info_loras(base) == [{"path": "sub/lora.st", "alpha": 8.0}]

        with_lora = top_logprobs(base)  # not the cached base state: the cache was emptied
        assert not close(with_lora, before, 0.1)
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st"}, ADMIN)
        assert status == 400 and "applied already" in body["error"]["message"]

        status, body = http("POST", base + "/admin/loras/unload", {"path": "sub/lora.st"}, ADMIN)
        assert status == 200 and body == {"loras": []}
        assert close(top_logprobs(base), before, 5e-3)  # fp16: the unmerge rounds (see the top of this file)
        assert models_info_loras(base) == []

        # by id, and refusals
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st", "alpha": 8.0}, ADMIN)
        assert status == 200 and body["loras"][0]["id"] == 2
        assert close(top_logprobs(base), with_lora, 5e-3)
        status, body = http("POST", base + "/admin/loras/unload", {"id": 2}, ADMIN)
        assert status == 200 and body == {"loras": []}
        status, body = http("POST", base + "/admin/loras/unload", {"id": 2}, ADMIN)
        assert status == 404 and "no LoRA with id 2" in body["error"]["message"]
        for path, message in [("../outside.st", "'..' is not accepted"), (str(tmp_path / "outside.st"), "absolute"),
                              ("link.st", "leads outside the models folder"), ("nothing.st", "does not exist")]:
            status, body = http("POST", base + "/admin/loras/load", {"path": path}, ADMIN)
            assert status == 403 and message in body["error"]["message"], (path, body)
        status, body = http("POST", base + "/admin/loras/load", {"path": MODEL_V7.name}, ADMIN)
        assert status == 400 and "blocks.0.att.a1 is kept on the GPU in another form" in body["error"]["message"]
        (folder / "junk.st").write_bytes(b"not a safetensors file")
        status, body = http("POST", base + "/admin/loras/load", {"path": "junk.st"}, ADMIN)
        assert status == 400 and "junk.st: cannot read the LoRA" in body["error"]["message"]
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st"})
        assert status == 401 and body["error"]["code"] == "invalid_admin_key"
        status, body = http("POST", base + "/admin/loras/unload", {"path": "sub/lora.st"},
                            {"Authorization": "Bearer wrong"})
        assert status == 401
        assert close(top_logprobs(base), before, 5e-3)  # none of that changed the weights


@pytest.mark.gpu
def test_hot_loaded_equals_merged_at_load_and_that_one_stays(tmp_path):
    """A server with the LoRA in its config answers as the hot-loaded one did; a LoRA merged at
    load cannot be unloaded (only a reload takes it out), and the admin routes are closed without keys."""
    folder = lora_folder(tmp_path)
    admin = f'[admin]\nkeys = ["{ADMIN_KEY}"]\n'
    with running_server(tmp_path, {"path": str(folder), "name": MODEL_V7.name}, extra_sections=admin) as base:
        status, _ = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st", "alpha": 8.0}, ADMIN)
        assert status == 200
        hot = top_logprobs(base)
    section = admin + '[[lora]]\npath = "sub/lora.st"\nalpha = 8.0\n'
    with running_server(tmp_path, {"path": str(folder), "name": MODEL_V7.name}, extra_sections=section) as base:
        assert close(top_logprobs(base), hot, 2e-3)
        assert models_info_loras(base) == [{"path": "sub/lora.st", "alpha": 8.0}]
        status, body = http("POST", base + "/admin/loras/unload", {"path": "sub/lora.st"}, ADMIN)
        assert status == 400 and body["error"]["code"] == "lora_merged_at_load"
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st"}, ADMIN)
        assert status == 400 and "applied already" in body["error"]["message"]
    with running_server(tmp_path, {"path": str(folder), "name": MODEL_V7.name}) as base:
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st"})
        assert status == 403 and body["error"]["code"] == "admin_disabled"
