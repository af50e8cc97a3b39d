"""The GPU engine against the reference implementation's numbers, for every RWKV version.

Tolerances follow tests/data's README: float32 logits within 1e-4 (3e-4 after 1000 tokens or a
chunked prefill), states within 1e-4 of each entry's largest value, greedy tokens compared where
the reference's top-2 margin is above 1e-3. The fp16 path gets its own, looser bound.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_MODELS

VERSIONS = list(TINY_MODELS)
FP32_LOGITS = 1e-4
FP32_LOGITS_LONG = 3e-4
FP16_LOGITS = 3e-2  # fp16 weights: ~3e-3 of the logits' range (|logit| up to ~10-20)
STATE_RELATIVE = 1e-4


def max_relative_state_error(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    assert len(ours) == len(theirs)
    worst = 0.0
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, (a.shape, b.shape)
        scale = max(float(np.abs(b).max()), 1e-6)
        worst = max(worst, float(np.abs(a - b).max()) / scale)
    return worst


@pytest.mark.parametrize("version", VERSIONS)
def test_info_matches_reference(version, load_tiny, references):
    model, ref = load_tiny(version), references(version).index
    assert model.info.version == version.split(".")[0]
    assert (model.info.n_layer, model.info.n_embd, model.info.n_vocab) == (ref["n_layer"], ref["n_embd"], ref["n_vocab"])


@pytest.mark.parametrize("version", VERSIONS)
def test_logits_after_each_prompt_fp32(version, load_tiny, references):
    model, ref = load_tiny(version), references(version)
    for prompt in ref.prompts:
        logits = model.forward(ref.tokens(prompt), model.new_state())
        assert logits.dtype == np.float32 and logits.shape == (model.info.n_vocab,)
        bound = FP32_LOGITS_LONG if len(ref.tokens(prompt)) >= 1000 else FP32_LOGITS
        err = np.abs(logits - ref[f"{prompt}/logits_last"]).max()
        assert err <= bound, f"{prompt}: max |Δlogit| {err}"


@pytest.mark.parametrize("version", VERSIONS)
def test_logits_after_each_prompt_fp16(version, load_tiny, references):
    model, ref = load_tiny(version, "fp16"), references(version)
    for prompt in ref.prompts:
        logits = model.forward(ref.tokens(prompt), model.new_state())
        err = np.abs(logits - ref[f"{prompt}/logits_last"]).max()
        assert err <= FP16_LOGITS, f"{prompt}: max |Δlogit| {err}"


@pytest.mark.parametrize("version", VERSIONS)
def test_full_sequence_logits_with_chunked_prefill(version, load_tiny, references):
    model, ref = load_tiny(version, chunk_size=64), references(version)
    tokens = ref.tokens("paragraph_200")
    logits = model.forward(tokens, model.new_state(), full=True)
    assert logits.shape == (len(tokens), model.info.n_vocab)
    err = np.abs(logits - ref["paragraph_200/logits_all"]).max()
    assert err <= FP32_LOGITS_LONG, f"max |Δlogit| over all 200 positions {err}"


@pytest.mark.parametrize("version", VERSIONS)
def test_state_after_prompt(version, load_tiny, references):
    model, ref = load_tiny(version), references(version)
    for prompt in ("sentence_20", "paragraph_200"):
        state = model.new_state()
        model.forward(ref.tokens(prompt), state)
        err = max_relative_state_error(state.to_numpy(), ref.state(prompt))
        assert err <= STATE_RELATIVE, f"{prompt}: relative state error {err}"


@pytest.mark.parametrize("version", VERSIONS)
def test_greedy_continuation(version, load_tiny, references):
    model, ref = load_tiny(version), references(version)
    prompt = "sentence_20"
    expected = ref[f"{prompt}/greedy_tokens"]
    margins = ref[f"{prompt}/greedy_margin"]
    state = model.new_state()
    logits = model.forward(ref.tokens(prompt), state)
    produced = []
    for step in range(len(expected)):
        err = np.abs(logits - ref[f"{prompt}/greedy_logits"][step]).max()
        assert err <= FP32_LOGITS_LONG, f"step {step}: max |Δlogit| {err}"
        token = int(np.argmax(logits))
        if margins[step] > 1e-3:
            assert token == expected[step], f"step {step}: {token} != {expected[step]}"
        produced.append(token)
        logits = model.forward([int(expected[step])], state)
    assert len(produced) == 64


@pytest.mark.parametrize("version", VERSIONS)
def test_one_pass_equals_token_by_token(version, load_tiny, references):
    model, ref = load_tiny(version), references(version)
    tokens = ref.tokens("sentence_20")
    one_pass = model.new_state()
    logits_pass = model.forward(tokens, one_pass, full=True)
    stepwise = model.new_state()
    logits_steps = np.stack([model.forward([t], stepwise) for t in tokens])
    assert np.abs(logits_pass - logits_steps).max() <= 1e-5
    assert max_relative_state_error(one_pass.to_numpy(), stepwise.to_numpy()) <= 1e-5


def test_state_round_trip_and_copy(load_tiny, references):
    model, ref = load_tiny("v7"), references("v7")
    tokens = ref.tokens("sentence_20")
    state = model.state_from_numpy(ref.state("sentence_20"))
    branch = state.copy()
    after = model.forward([32], state)
    again = model.forward([32], branch)
    assert np.array_equal(after, again)
    assert max_relative_state_error(model.state_from_numpy(ref.state("sentence_20")).to_numpy(),
                                    ref.state("sentence_20")) == 0.0
    fresh = model.new_state()
    model.forward(tokens + [32], fresh)
    assert max_relative_state_error(fresh.to_numpy(), state.to_numpy()) <= 1e-5


def test_bad_inputs_raise_clear_errors(load_tiny):
    model = load_tiny("v7")
    with pytest.raises(ValueError, match="out of range"):
        model.forward([256], model.new_state())
    with pytest.raises(ValueError, match="at least one token"):
        model.forward([], model.new_state())
    with pytest.raises(ValueError, match="arrays"):
        model.state_from_numpy([np.zeros(64, np.float32)])
    with pytest.raises(ValueError, match="another model"):
        model.forward([1], load_tiny("v4").new_state())


FORMAT_FIXTURES = {
    "v4": "tiny-rwkv-4v0-660K",
    "v5.1": "tiny-rwkv-5v1-730K",
    "v5.2": "tiny-rwkv-5v2-730K",
    "v6": "tiny-rwkv-6v0-3m-3layers",  # the first 3 layers only, to keep the fixtures small
    "v7": "tiny-rwkv-7v0-834K",
}


@pytest.mark.parametrize("version", VERSIONS)
def test_three_file_formats_give_identical_logits(version, load_tiny, references):
    from conftest import DATA

    name = FORMAT_FIXTURES[version]
    paths = [DATA / "fixtures" / f"{name}.{suffix}" for suffix in ("fp16.pth", "fp16.safetensors", "ai00.st")]
    tokens = references(version).tokens("sentence_20")
    results = [load_tiny(version, "fp16", path=p).forward(tokens, load_tiny(version, "fp16", path=p).new_state())
               for p in paths]
    for path, logits in zip(paths[1:], results[1:]):
        if version == "v5.1" and path.suffix == ".st":
            # AI00's layout stores the raw bonus u, a 5.0-style checkpoint stores log(u): in fp16
            # that one tensor rounds differently, so only this pair is compared with a bound.
            assert np.abs(logits - results[0]).max() <= 1e-3
        else:
            assert np.array_equal(logits, results[0]), f"{path.name} differs from {paths[0].name}"
    if "3layers" not in name:
        err = np.abs(results[0] - references(version)["sentence_20/logits_last"]).max()
        assert err <= FP16_LOGITS


@pytest.mark.gpu
def test_fp16_without_shader_f16_uses_packed_halves(references):
    """Devices without shader-f16 read the same fp16 weights as u32 pairs (unpack2x16float)."""
    from ai00_trio.engine import load_model
    from ai00_trio.gpu.context import create_context
    from conftest import TINY_MODELS

    ctx = create_context()
    ctx.has_f16 = False
    model = load_model(TINY_MODELS["v7"][0], precision="fp16", context=ctx)
    assert model.arch.head.fmt == "f16_packed"
    ref = references("v7")
    logits = model.forward(ref.tokens("sentence_20"), model.new_state())
    assert np.abs(logits - ref["sentence_20/logits_last"]).max() <= FP16_LOGITS


@pytest.mark.gpu
@pytest.mark.parametrize("version", ["v5.2", "v7"])
def test_devices_without_subgroups_sum_in_workgroup_memory(version, references):
    """Without the subgroup feature every reduction takes the workgroup-memory path: same math."""
    from ai00_trio.engine import load_model
    from ai00_trio.gpu.context import create_context
    from conftest import TINY_MODELS

    ctx = create_context()
    ctx.has_subgroups = False
    model = load_model(TINY_MODELS[version][0], precision="fp32", context=ctx)
    ref = references(version)
    state = model.new_state()
    for prompt in ("sentence_20", "quote_in"):
        tokens = ref.tokens(prompt)
        logits = model.forward(tokens, model.new_state())
        assert np.abs(logits - ref[f"{prompt}/logits_last"]).max() <= FP32_LOGITS
    decoded = [model.forward([t], state) for t in tokens]  # per-token kernels (matvec, fused WKV)
    assert np.abs(decoded[-1] - ref[f"{prompt}/logits_last"]).max() <= FP32_LOGITS
    graph = model._single._graph(1, 1, 1)
    assert not any("SUBGROUPS" in label for label in graph.labels)


@pytest.mark.gpu
def test_adapter_choice_errors_are_clear():
    from ai00_trio.gpu.context import NoAdapterError, list_adapters, pick_adapter

    adapters = list_adapters()
    assert adapters, "the test machine has at least the software Vulkan adapter"
    assert pick_adapter(0) is not None and pick_adapter(adapters[0].name[:4]) is not None
    with pytest.raises(NoAdapterError, match="no adapter named like"):
        pick_adapter("no-such-gpu-anywhere")
    with pytest.raises(NoAdapterError, match="out of range"):
        pick_adapter(99)


@pytest.mark.gpu
def test_cli_generate_prints_text():
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-m", "ai00_trio", "generate", "--prompt", "The", "--tokens", "12",
                             "--temperature", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The the the")
    assert "v7 model: 12 layers" in result.stderr
    int8 = subprocess.run([sys.executable, "-m", "ai00_trio", "generate", "--prompt", "The", "--tokens", "4",
                           "--temperature", "0", "--quant", "12", "--quant-type", "nf4"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert int8.returncode == 0 and int8.stdout.startswith("The"), int8.stderr
    bad = subprocess.run([sys.executable, "-m", "ai00_trio", "generate", "--lora", "x.st=big"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "expected PATH or PATH=ALPHA" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "ai00_trio", "generate", "--lora", "no-such-lora.st"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no-such-lora.st: no such file"


@pytest.mark.parametrize("version", ["v5.2", "v6", "v7"])
def test_state_tuning_files_load_in_the_package_layout(version, load_tiny, tmp_path):
    """A state-tuning file keeps `time_state` as [head, value, key]; the package's list layout
    has v5/v6 wkv states as [head, key, value] and v7's as the file's."""
    from safetensors.numpy import save_file

    from ai00_trio.server.engine_service import load_state_file

    model = load_tiny(version)
    info = model.info
    rng = np.random.default_rng(5)
    files = [rng.standard_normal((info.n_head, info.head_size, info.head_size)).astype(np.float32)
             for _ in range(info.n_layer)]
    path = tmp_path / "state.st"
    save_file({f"blocks.{i}.att.time_state": w for i, w in enumerate(files)}, str(path))
    arrays = load_state_file(model, path).to_numpy()
    for i, wkv in enumerate(files):
        want = wkv if version == "v7" else wkv.transpose(0, 2, 1)
        np.testing.assert_array_equal(arrays[3 * i + 1], want)
        assert not arrays[3 * i].any() and not arrays[3 * i + 2].any()
