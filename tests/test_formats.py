"""Checkpoint readers (.pth without torch, safetensors, AI00 .st), version detection, validation.

Fixtures come from tests/make_fixtures.py (real torch.save output); the fp32 originals
are the tiny models in tests/data and assets/models.
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import msgspec
import numpy as np
import pytest

from ai00_trio.engine.formats import UnsafePickleError, read_checkpoint
from ai00_trio.engine.formats.ai00_layout import ai00_to_canonical, detect_layout
from ai00_trio.engine.info import ModelFormatError, ModelInfo, detect_model

DATA = Path(__file__).parent / "data"
FIXTURES = DATA / "fixtures"
ASSETS = Path(__file__).parent.parent / "assets" / "models"
FORMATS = ("fp16.pth", "fp16.safetensors", "ai00.st")


class Model(msgspec.Struct, frozen=True):
    original: Path
    fixture: str  # base name in FIXTURES
    info: ModelInfo  # of the original (figures from shared/testdata/tiny/README.md)
    fixture_layers: int  # layers kept in the fixtures


def _info(version: str, sub: str, L: int, C: int, H: int, N: int, F: int, **extra: int | bool) -> ModelInfo:
    return ModelInfo(version=version, subversion=sub, n_layer=L, n_embd=C, n_head=H, head_size=N,
                     n_vocab=256, n_ffn=F, **extra)


MODELS: dict[str, Model] = {
    "v4": Model(DATA / "tiny-rwkv-4v0-660K.st", "tiny-rwkv-4v0-660K",
                _info("v4", "4", 4, 128, 1, 128, 256), 4),
    "v5.1": Model(DATA / "tiny-rwkv-5v1-730K.st", "tiny-rwkv-5v1-730K",
                  _info("v5", "5.0", 12, 64, 8, 8, 256), 12),
    "v5.2": Model(DATA / "tiny-rwkv-5v2-730K.st", "tiny-rwkv-5v2-730K",
                  _info("v5", "5.2", 12, 64, 8, 8, 256, gated=True), 12),
    "v6": Model(DATA / "tiny-rwkv-6v0-3m-Q5_1-dequant.st", "tiny-rwkv-6v0-3m-3layers",
                _info("v6", "6", 12, 128, 16, 8, 448, gated=True, maa_dim=32, decay_dim=64), 3),
    "v7": Model(ASSETS / "tiny-rwkv-7v0-834K.st", "tiny-rwkv-7v0-834K",
                _info("v7", "7", 12, 64, 1, 64, 256, w_dim=32, a_dim=32, g_dim=32, v_dim=32), 12),
}
#: the one tensor whose AI00 form is not bit-exact: the ungated v5 bonus, stored raw in AI00.
LOG_BONUS_FROM_AI00 = ("v5.1", "att.time_first")


@functools.cache
def original(key: str) -> dict[str, np.ndarray]:
    return read_checkpoint(MODELS[key].original)


@functools.cache
def fixture(key: str, fmt: str, layout: str = "auto") -> dict[str, np.ndarray]:
    return read_checkpoint(FIXTURES / f"{MODELS[key].fixture}.{fmt}", layout=layout)


def kept_layers(tensors: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if not k.startswith("blocks.") or int(k.split(".")[1]) < n_layer}


def bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint16 if array.dtype == np.float16 else np.uint32)


# ---------------------------------------------------------------- the three formats agree


@pytest.mark.parametrize("key", MODELS)
def test_formats_read_to_the_same_canonical_dict(key: str) -> None:
    model = MODELS[key]
    expected = {k: v.astype(np.float16) for k, v in kept_layers(original(key), model.fixture_layers).items()}
    for fmt in FORMATS:
        got = fixture(key, fmt)
        assert set(got) == set(expected), f"{fmt}: names differ: {sorted(set(got) ^ set(expected))[:5]}"
        for name, want in expected.items():
            if fmt == "ai00.st" and key == LOG_BONUS_FROM_AI00[0] and name.endswith(LOG_BONUS_FROM_AI00[1]):
                continue
            value = got[name]
            assert value.shape == want.shape, f"{fmt} {name}: shape {value.shape} != {want.shape}"
            assert value.dtype == np.float16, f"{fmt} {name}: dtype {value.dtype}"
            assert np.array_equal(bits(value), bits(want)), f"{fmt} {name}: values differ"


def test_ungated_v5_bonus_from_ai00_is_log_of_the_stored_raw_bonus() -> None:
    pth = fixture("v5.1", "fp16.pth")
    raw = fixture("v5.1", "ai00.st", "pytorch")  # as stored: [H, N] repeated, raw bonus
    canon = fixture("v5.1", "ai00.st")
    for layer in range(12):
        name = f"blocks.{layer}.att.time_first"
        got = canon[name]
        assert got.dtype == np.float32 and got.shape == (8,)
        # exp(got) is the stored fp16 bonus, exactly once rounded back to fp16 ...
        assert np.array_equal(np.exp(got).astype(np.float16), raw[name][:, 0])
        # ... which is exp of the .pth's log-form value, to fp16 precision.
        np.testing.assert_allclose(np.exp(got), np.exp(pth[name].astype(np.float32)), rtol=2**-11 * 1.01, atol=0)
        assert not np.array_equal(got, pth[name].astype(np.float32))  # the documented inexactness


@pytest.mark.parametrize("key", ["v5.1", "v5.2", "v6", "v7"])
def test_ai00_fixture_is_really_in_ai00_layout(key: str) -> None:
    raw = fixture(key, "ai00.st", "pytorch")
    assert all(v.dtype == np.float16 for v in raw.values())
    assert all(k == k.lower() for k in raw)
    assert detect_layout(raw) == "ai00"
    assert detect_layout(fixture(key, "fp16.safetensors")) == "pytorch"
    C = MODELS[key].info.n_embd
    if key == "v6":
        assert "blocks.0.att.time_mix_x" in raw and not any("time_maa" in k or "time_faaaa" in k for k in raw)
        assert raw["blocks.1.att.time_mix_w1"].shape == (160, C)
        assert raw["blocks.1.att.time_mix_w2"].shape == (5, C, 32)
        assert raw["blocks.1.att.time_decay_w2"].shape == (C, 64)
        assert raw["blocks.1.att.time_first"].shape == (16, 8)
    elif key == "v7":
        assert raw["blocks.2.att.w1"].shape == (32, C) and raw["blocks.2.att.v2"].shape == (C, 32)
    else:
        assert raw["blocks.0.att.time_first"].shape == (8, 8) and raw["blocks.0.att.time_decay"].shape == (8, 8)
        assert "blocks.0.att.time_faaaa" not in raw


def test_v4_has_one_layout() -> None:
    raw = fixture("v4", "ai00.st", "pytorch")
    assert detect_layout(raw) == "pytorch"
    assert set(raw) == set(fixture("v4", "fp16.pth"))


def test_canonical_shapes_follow_pytorch() -> None:
    v6, v7 = fixture("v6", "ai00.st"), fixture("v7", "ai00.st")
    assert v6["blocks.0.att.time_maa_w1"].shape == (128, 160)
    assert v6["blocks.0.att.time_maa_w2"].shape == (5, 32, 128)
    assert v6["blocks.2.att.time_decay_w1"].shape == (128, 64)
    assert v6["blocks.2.att.time_faaaa"].shape == (16, 8)
    assert v7["blocks.3.att.w1"].shape == (64, 32) and v7["blocks.3.att.a2"].shape == (32, 64)
    assert "blocks.0.att.v1" not in v7 and v7["blocks.1.att.v1"].shape == (64, 32)
    assert fixture("v5.2", "ai00.st")["blocks.0.att.time_faaaa"].shape == (8, 8)


# ---------------------------------------------------------------- .pth specifics


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def test_bf16_pth_is_widened_exactly() -> None:
    got = read_checkpoint(FIXTURES / "tiny-rwkv-5v2-730K.bf16.pth")
    src = original("v5.2")
    assert set(got) == set(src)
    for name, value in got.items():
        assert value.dtype == np.float32 and value.shape == src[name].shape, name
        assert not np.any(value.view(np.uint32) & 0xFFFF), f"{name}: low bits set"
        assert np.array_equal(value, round_to_bf16(src[name])), name
    assert detect_model(got) == MODELS["v5.2"].info


def test_pth_views_offsets_and_shared_storages() -> None:
    path = FIXTURES / "strided.pth"
    with zipfile.ZipFile(path) as archive:
        storages = [n for n in archive.namelist() if "/data/" in n]
    got = read_checkpoint(path)
    assert len(storages) < len(got)  # the views really share storages
    base = np.arange(48, dtype=np.float32).reshape(6, 8) * 0.25 - 3.0
    expected = {
        "transposed": base.T,
        "offset_slice": base[2:5, 1:7],
        "every_other": base[:, ::2],
        "row3_shared": base[3],
        "half_transposed": base.astype(np.float16).T,
        "bf16_strided": base[1:, ::3],
        "expanded": np.broadcast_to(np.arange(4, dtype=np.float32), (3, 4)),
        "param": base[0],
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "double": base[:2],
        "int64": np.arange(5, dtype=np.int64),
    }
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        assert got[name].shape == want.shape, name
        assert np.array_equal(got[name], want), name


def test_pth_wrapped_state_dict() -> None:
    got = read_checkpoint(FIXTURES / "wrapped.pth")
    assert set(got) == {"a", "b"}
    assert np.array_equal(got["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert got["b"].dtype == np.float16


def test_pth_reader_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    got = read_checkpoint(FIXTURES / "tiny-rwkv-7v0-834K.fp16.pth")
    assert detect_model(got).version == "v7"


# A minimal writer of torch-style pickles (protocol 2 opcodes), to craft edge cases.


def _str(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def torch_pickle(tensors: dict[str, tuple[str, str, int, int, tuple[int, ...], tuple[int, ...]]]) -> bytes:
    """{name: (storage class, key, numel, offset, size, stride)} -> data.pkl bytes."""
    out = b"\x80\x02}("
    for name, (storage, key, numel, offset, size, stride) in tensors.items():
        storage_class = b"ctorch\n" + storage.encode() + b"\n"
        pid = b"(" + _str("storage") + storage_class + _str(key) + _str("cpu") + _int(numel) + b"t"
        args = b"(" + pid + b"Q" + _int(offset) + _ints(size) + _ints(stride) + b"\x89}t"
        out += _str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    return out + b"u."


def write_pth(path: Path, data_pkl: bytes, storages: dict[str, bytes], byteorder: str | None = "little") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        if byteorder:
            archive.writestr("archive/byteorder", byteorder)
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def test_crafted_pth_little_and_big_endian(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32) * 1.5
    halves = np.arange(4, dtype=np.float16)
    spec = {"w": ("FloatStorage", "0", 12, 2, (3, 2), (1, 3)), "h": ("HalfStorage", "1", 4, 0, (4,), (1,))}
    for order, dt32, dt16 in (("little", "<f4", "<f2"), ("big", ">f4", ">f2")):
        path = write_pth(tmp_path / f"{order}.pth", torch_pickle(spec),
                         {"0": values.astype(dt32).tobytes(), "1": halves.astype(dt16).tobytes()}, order)
        got = read_checkpoint(path)
        assert np.array_equal(got["w"], values[2:8].reshape(2, 3).T), order
        assert got["h"].dtype == np.float16 and np.array_equal(got["h"], halves), order


def test_pth_view_past_its_storage_is_refused(tmp_path: Path) -> None:
    spec = {"w": ("FloatStorage", "0", 4, 1, (2, 2), (4, 1))}  # needs element 6 of 4
    path = write_pth(tmp_path / "oob.pth", torch_pickle(spec), {"0": bytes(16)})
    with pytest.raises(ModelFormatError, match=r"oob\.pth: .*reaches element 6 of a storage holding only 4"):
        read_checkpoint(path)


def test_pth_missing_or_short_storage(tmp_path: Path) -> None:
    spec = {"w": ("FloatStorage", "0", 4, 0, (4,), (1,))}
    with pytest.raises(ModelFormatError, match=r"storage archive/data/0 is missing"):
        read_checkpoint(write_pth(tmp_path / "missing.pth", torch_pickle(spec), {}))
    with pytest.raises(ModelFormatError, match=r"holds 8 bytes, 16 expected"):
        read_checkpoint(write_pth(tmp_path / "short.pth", torch_pickle(spec), {"0": bytes(8)}))


class _RunsCommand:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize("func, global_name", [(os.system, "posix.system"), (eval, "__builtin__.eval")])
def test_pth_with_forbidden_global_is_refused_without_running_it(
    tmp_path: Path, func: object, global_name: str
) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    payload = pickle.dumps({"emb.weight": _RunsCommand(func, command)}, protocol=2)
    path = write_pth(tmp_path / "evil.pth", payload, {})
    with pytest.raises(UnsafePickleError, match=rf"evil\.pth: .*{global_name}") as info:
        read_checkpoint(path)
    assert isinstance(info.value, ModelFormatError)
    assert not marker.exists()


def test_pth_other_torch_globals_are_refused(tmp_path: Path) -> None:
    payload = b"\x80\x02ctorch._utils\n_rebuild_qtensor\n)R."
    with pytest.raises(UnsafePickleError, match=r"torch\._utils\._rebuild_qtensor"):
        read_checkpoint(write_pth(tmp_path / "q.pth", payload, {}))


def test_pth_without_tensors(tmp_path: Path) -> None:
    path = write_pth(tmp_path / "empty_dict.pth", pickle.dumps({"epoch": 3}, protocol=2), {})
    with pytest.raises(ModelFormatError, match=r"empty_dict\.pth: the checkpoint holds no tensor state dict"):
        read_checkpoint(path)


# ---------------------------------------------------------------- unreadable files


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.st", b"", r"empty file"),
        ("garbage.st", bytes(range(256)) * 8, r"not a safetensors file"),
        ("short.st", b"abc", r"too short"),
        ("notes.txt", b"just some text, not a model\n", r"not a safetensors file"),
        ("legacy.pth", b"\x80\x02\x8a\x0a" + bytes(60), r"legacy \(pre-1.6, non-zip\) torch checkpoint"),
        ("plain.pth", b"hello", r"not a torch.save checkpoint"),
        ("bad_header.st", struct.pack("<Q", 10) + b"{not json}", r"header is not JSON"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = _write(tmp_path, name, data)
    with pytest.raises(ModelFormatError, match=message) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"nope\.st: no such file"):
        read_checkpoint(tmp_path / "nope.st")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    source = FIXTURES / f"tiny-rwkv-7v0-834K.{fmt}"
    data = source.read_bytes()
    path = _write(tmp_path, f"cut.{fmt}", data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"truncated") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_json_file_is_not_a_model() -> None:
    with pytest.raises(ModelFormatError, match=r"tokenizer-vectors\.json: not a safetensors file"):
        read_checkpoint(DATA / "tokenizer-vectors.json")


def test_safetensors_that_is_not_a_model() -> None:
    tensors = read_checkpoint(DATA / "vectors-4v0-660K.safetensors")  # reference vectors
    assert tensors
    with pytest.raises(ModelFormatError, match=r"vec: not an RWKV model"):
        detect_model(tensors, source="vec")


def test_zip_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ModelFormatError, match=r"no data\.pkl: not a torch\.save checkpoint"):
        read_checkpoint(path)


# ---------------------------------------------------------------- detection and validation


@pytest.mark.parametrize("key", MODELS)
def test_detect_model_on_originals(key: str) -> None:
    assert detect_model(original(key)) == MODELS[key].info


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key", MODELS)
def test_detect_model_on_fixtures(key: str, fmt: str) -> None:
    model = MODELS[key]
    assert detect_model(fixture(key, fmt)) == msgspec.structs.replace(model.info, n_layer=model.fixture_layers)


def test_model_info_is_a_frozen_struct() -> None:
    info = MODELS["v6"].info
    with pytest.raises(AttributeError):
        info.n_layer = 3  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(info), type=ModelInfo) == info


def _without(tensors: dict[str, np.ndarray], *names: str) -> dict[str, np.ndarray]:
    for name in names:
        assert name in tensors, name
    return {k: v for k, v in tensors.items() if k not in names}


def test_missing_tensor_is_named() -> None:
    tensors = _without(original("v6"), "blocks.5.att.gate.weight")
    with pytest.raises(ModelFormatError) as info:
        detect_model(tensors)
    assert "blocks.5.att.gate.weight: missing (expected shape (128, 128))" in str(info.value)


def test_wrong_shape_is_named_with_expected_and_found() -> None:
    tensors = dict(original("v7"))
    tensors["blocks.3.att.key.weight"] = np.zeros((64, 32), dtype=np.float32)
    with pytest.raises(ModelFormatError) as info:
        detect_model(tensors)
    assert "blocks.3.att.key.weight: expected shape (64, 64), found (64, 32)" in str(info.value)
    assert info.value.problems == ("blocks.3.att.key.weight: expected shape (64, 64), found (64, 32)",)


def test_every_problem_is_collected() -> None:
    tensors = _without(original("v4"), "blocks.1.att.time_first", "blocks.3.ffn.value.weight", "ln_out.bias")
    with pytest.raises(ModelFormatError) as info:
        detect_model(tensors)
    assert len(info.value.problems) == 3
    assert "ln_out.bias: missing (expected shape (128,))" in info.value.problems


def test_v7_layer0_needs_no_value_residual_but_later_layers_do() -> None:
    tensors = original("v7")
    assert not {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"} & set(tensors)  # and it validates
    with pytest.raises(ModelFormatError, match=r"blocks\.4\.att\.v2: missing \(expected shape \(32, 64\)\)"):
        detect_model(_without(tensors, "blocks.4.att.v2"))
    with pytest.raises(ModelFormatError, match=r"blocks\.1\.att\.v1: missing"):
        detect_model(_without(tensors, "blocks.1.att.v1"))


def test_one_layer_v7_has_no_value_lora() -> None:
    info = detect_model(kept_layers(original("v7"), 1))
    assert info.n_layer == 1 and info.v_dim == 0


def test_ln0_is_required_in_block_0_only() -> None:
    with pytest.raises(ModelFormatError, match=r"blocks\.0\.ln0\.weight: missing"):
        detect_model(_without(original("v5.2"), "blocks.0.ln0.weight"))


def test_non_float_tensor_is_refused() -> None:
    tensors = dict(original("v4"))
    tensors["blocks.2.ln1.weight"] = np.zeros(128, dtype=np.int64)
    with pytest.raises(ModelFormatError, match=r"blocks\.2\.ln1\.weight: expected float16 or float32, found int64"):
        detect_model(tensors)


def test_unknown_extra_tensors_are_ignored() -> None:
    tensors = dict(original("v5.2"))
    tensors["blocks.0.att.time_state"] = np.zeros((8, 8, 8), dtype=np.float32)
    tensors["some.extra"] = np.zeros(3, dtype=np.float32)
    assert detect_model(tensors) == MODELS["v5.2"].info


def test_a_missing_layer_in_the_middle_is_reported() -> None:
    tensors = {k: v for k, v in original("v5.1").items() if not k.startswith("blocks.7.")}
    with pytest.raises(ModelFormatError, match=r"blocks\.7\.ln1\.weight: missing"):
        detect_model(tensors)


def test_raw_ai00_names_are_not_mistaken_for_pytorch_ones() -> None:
    with pytest.raises(ModelFormatError, match=r"AI00/web-rwkv layout"):
        detect_model(fixture("v6", "ai00.st", "pytorch"))
    with pytest.raises(ModelFormatError, match=r"AI00/web-rwkv's renamed time_faaaa"):
        detect_model(fixture("v5.2", "ai00.st", "pytorch"))


def test_no_tensors_at_all() -> None:
    with pytest.raises(ModelFormatError, match=r"not an RWKV model"):
        detect_model({})


# ---------------------------------------------------------------- AI00 layout edge cases


def test_ungated_ai00_v5_must_repeat_per_head_values() -> None:
    raw = dict(fixture("v5.1", "ai00.st", "pytorch"))
    decay = raw["blocks.2.att.time_decay"].copy()
    decay[0, 3] += 1
    raw["blocks.2.att.time_decay"] = decay
    with pytest.raises(ModelFormatError, match=r"blocks\.2\.att\.time_decay: .*repeat one value per head"):
        ai00_to_canonical(raw)


def test_inconsistent_v7_orientation_is_an_error() -> None:
    raw = dict(fixture("v7", "ai00.st", "pytorch"))
    raw["blocks.5.att.a1"] = np.ascontiguousarray(raw["blocks.5.att.a1"].T)
    with pytest.raises(ModelFormatError, match=r"oriented inconsistently"):
        detect_layout(raw)


def test_layout_argument_is_checked() -> None:
    with pytest.raises(ValueError, match=r"layout must be"):
        read_checkpoint(FIXTURES / "wrapped.pth", layout="onnx")  # type: ignore[arg-type]
