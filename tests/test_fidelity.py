"""Fidelity at real widths: our fp32 logits against the float64 statement of each version's math
(tests/reference64.py) on random-weight models as wide as published ones, through prefill chunks and
single-token steps. The bundled tiny models are 64-128 wide, too narrow to show errors that grow
with width. bench/fidelity.py runs the same check at full depth on the lent GPU, beside BlinkDL's
package (whose own fp32 RWKV-6 is the one that strays from float64 there: bench/RESULTS.md)."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ai00_trio.engine import load_model
from ai00_trio.engine.upload import Uploader
from ai00_trio.gpu.graph import Act
from conftest import TINY_MODELS
from reference64 import Reference64, random_checkpoint
from test_matmul import read, run

VOCAB = 512
PROMPT, STEPS = 70, 3  # a chunk of 64 tokens (tiled kernels), one of 6, then single-token steps


@pytest.mark.parametrize("name, version", [("v4", "v4"), ("v5.2", "v5"), ("v6", "v6"), ("v7", "v7")])
def test_float64_statement_matches_the_reference_vectors(name, version, references):
    """The yardstick itself: the float64 statement against the committed reference logits (made
    with the float64 reference behind the tiny models' vectors), for every version."""
    path, _ = TINY_MODELS[name]
    ref = references(name)
    for prompt in ref.prompts[:3]:
        logits = Reference64(load_file(str(path)), version).forward(ref.tokens(prompt))
        np.testing.assert_allclose(logits, ref[f"{prompt}/logits_all"], rtol=0, atol=2e-6)


@pytest.mark.parametrize("version, width", [("v4", 1024), ("v5", 1024), ("v6", 2048), ("v7", 1024)])
def test_real_width_logits_match_float64(version, width, gpu, tmp_path):
    """fp32 logits of every prompt token and of the steps after it, within 5e-5 of float64
    (the logits' spread is ~0.9)."""
    tensors = random_checkpoint(version, width, layers=2, vocab=VOCAB, seed=3)
    path = tmp_path / f"{version}.st"
    save_file(tensors, str(path))
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, VOCAB, PROMPT + STEPS).tolist()
    want = Reference64(tensors, version).forward(tokens)
    model = load_model(path, precision="fp32", chunk_size=64, context=gpu)
    state = model.new_state()
    got = np.concatenate([model.forward(tokens[:PROMPT], state, full=True)] +
                         [model.forward([t], state)[None] for t in tokens[PROMPT:]])
    assert np.abs(want).std() > 0.3  # logits of a real spread, not near zero
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)


@pytest.mark.parametrize("tokens", [1, 70], ids=["per-token", "tiled"])
def test_tanh_activation_is_exact(gpu, tokens):
    """The matmul's tanh (RWKV-6's mix and decay LoRAs, RWKV-7's decay LoRA) within 3e-7 of
    float64 over [-8, 8], small arguments included."""
    k = 64
    (eye,) = Uploader(gpu, "fp32").matrices([np.eye(k, dtype=np.float32)])
    x_host = np.concatenate([np.linspace(-8, 8, tokens * k - 16), np.geomspace(1e-6, 0.07, 16)])
    x_host = x_host.astype(np.float32).reshape(1, tokens, k)
    x = Act(gpu.upload(x_host), k, tokens, 1)
    y = Act(gpu.storage(k * tokens * 4), k, tokens, 1)
    run(gpu, lambda g: g.matmuls([(eye, x, y, "tanh")]))
    np.testing.assert_allclose(read(gpu, y), np.tanh(x_host.astype(np.float64)), rtol=0, atol=3e-7)
