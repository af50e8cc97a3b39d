"""The GPU budget: what a checkpoint's load is estimated to take, read from its header, and the
400 when it cannot fit; and the [[models]] config that names more chat models."""
from __future__ import annotations

from pathlib import Path

import pytest

from ai00_trio.config import ConfigError, parse_config
from ai00_trio.server.errors import ApiError
from ai00_trio.server.gpu_budget import MemoryNeed, check_fits, estimate_need

V7 = Path(__file__).resolve().parents[1] / "assets" / "models" / "tiny-rwkv-7v0-834K.st"


def test_estimate_reads_the_header():
    fp32, fp16 = estimate_need(V7, "fp32", 4), estimate_need(V7, "fp16", 8, cache_bytes=1000)
    # the file holds fp32 weights: fp16 halves them; 12 layers of 64 channels, vocab 256, and a
    # flattened r_k [1, 64] (rwkv.cpp's layout), so the head size counts as 64 (8 in truth)
    assert fp32.weights == 2 * fp16.weights and abs(fp32.weights - V7.stat().st_size) < 64 * 1024
    per_slot = 12 * (2 * 64 + 64 * 64) * 4 + 256 * 4
    assert (fp32.slots, fp16.slots, fp16.cache) == (4 * per_slot, 8 * per_slot, 1000)
    assert fp16.total == fp16.weights + fp16.slots + 1000


def test_no_file_no_estimate(tmp_path):
    """A folder or a missing path (the fuzzer sends model_path "") estimates nothing: the load
    itself then refuses it with its 400, not a 500 from reading a directory."""
    assert estimate_need(tmp_path, "fp16", 8, cache_bytes=5).total == 5
    assert estimate_need(tmp_path / "missing.st", "fp16", 8).total == 0


def test_check_fits_says_what_is_needed():
    need = MemoryNeed(300 << 20, 50 << 20, 0)
    check_fits(need, None, 10 << 30, "m")       # no budget: nothing refused
    check_fits(need, 400 << 20, 50 << 20, "m")  # exactly fits
    with pytest.raises(ApiError) as error:
        check_fits(need, 400 << 20, 60 << 20, "the model 'x'")
    body = error.value.body.error
    assert error.value.status == 400 and body.code == "insufficient_gpu_memory"
    assert "about 350.0 MiB (300.0 MiB of weights, 50.0 MiB of slot states)" in body.message
    assert "340.0 MiB free" in body.message


def test_models_entries():
    config = parse_config('[[models]]\nname = "b"\npath = "b.st"\naliases = ["bee"]\nprecision = "Fp32"\n'
                          '[adapter]\nmemory_bytes = 1000\n')
    assert [(m.name, m.path, m.kind, m.precision, m.aliases) for m in config.models] == \
        [("b", "b.st", "chat", "fp32", ["bee"])]
    assert config.adapter.memory_bytes == 1000
    assert parse_config("").models == []


@pytest.mark.parametrize("text, message", [
    ('[[models]]\nname = "tiny-rwkv-7v0-834K"\npath = "x.st"\n', "taken by [model]"),
    ('[[models]]\nname = "a"\npath = "x.st"\n[[models]]\nname = "b"\npath = "y.st"\naliases = ["a"]\n',
     "taken by [[models]] 'a'"),
    ('[embedding]\npath = "e.st"\n[[models]]\nname = "e"\npath = "x.st"\n', "taken by [embedding]"),
    ('[[models]]\nname = "a"\npath = "x.st"\nkind = "embedding"\n', "kind"),
    ('[[models]]\nname = "a"\npath = "x.st"\nmax_batch = 0\n', "max_batch"),
])
def test_models_entries_refused(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text)
