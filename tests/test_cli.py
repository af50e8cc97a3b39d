"""The command line: --version, help with every flag's default, convert (round trip against the
torch-made fixtures), and `serve --model` on a file outside any config."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ai00_trio import __version__
from ai00_trio.engine.formats.convert import convert_checkpoint
from ai00_trio.engine.formats.pth import read_pth
from ai00_trio.engine.formats.safetensors_file import read_safetensors
from server_helpers import http, running_server

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "fixtures"
# models whose AI00 form converts back bit for bit (the ungated v5's log-form bonus does not)
EXACT = ["tiny-rwkv-4v0-660K", "tiny-rwkv-5v2-730K", "tiny-rwkv-6v0-3m-3layers", "tiny-rwkv-7v0-834K"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ai00_trio", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def same_tensors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Names whose dtype, shape or bytes differ (or that one side lacks)."""
    return sorted(name for name in a.keys() | b.keys()
                  if name not in a or name not in b or a[name].dtype != b[name].dtype
                  or a[name].shape != b[name].shape or a[name].tobytes() != b[name].tobytes())


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ai00_trio {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


@pytest.mark.parametrize("command", [(), ("serve",), ("generate",), ("convert",), ("adapters",)])
def test_help_gives_every_flags_default(command):
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    # an option's entry runs from its "  -x" line to the next one; help and version have no default
    entries = re.split(r"\n(?=  -)", result.stdout.split("options:", 1)[1].split("\ncommands:")[0])
    options = [e for e in entries if e.strip().startswith("-") and not e.strip().startswith(("-h", "--version"))]
    assert len(options) >= {(): 5, ("serve",): 5, ("generate",): 13, ("convert",): 1, ("adapters",): 0}[command]
    for entry in options:
        assert "(default:" in " ".join(entry.split()), entry


@pytest.mark.parametrize("base", EXACT)
def test_convert_pth_to_ai00_and_back(base, tmp_path):
    ai00 = tmp_path / f"{base}.st"
    assert convert_checkpoint(FIXTURES / f"{base}.fp16.pth", ai00) == "ai00"
    # the same bytes as web-rwkv's converter made with torch (tests/make_fixtures.py)
    assert same_tensors(read_safetensors(ai00), read_safetensors(FIXTURES / f"{base}.ai00.st")) == []
    back = tmp_path / f"{base}.safetensors"
    convert_checkpoint(ai00, back, "pytorch")
    assert same_tensors(read_safetensors(back), read_pth(FIXTURES / f"{base}.fp16.pth")) == []


def test_convert_ungated_v5_keeps_its_bonus_to_fp16_precision(tmp_path):
    base = "tiny-rwkv-5v1-730K"
    convert_checkpoint(FIXTURES / f"{base}.fp16.pth", tmp_path / "a.st")
    assert same_tensors(read_safetensors(tmp_path / "a.st"), read_safetensors(FIXTURES / f"{base}.ai00.st")) == []
    convert_checkpoint(tmp_path / "a.st", tmp_path / "b.safetensors")  # auto: AI00 input goes back
    back, original = read_safetensors(tmp_path / "b.safetensors"), read_pth(FIXTURES / f"{base}.fp16.pth")
    bonus = [name for name in original if name.endswith("time_first")]
    assert bonus and same_tensors({k: v for k, v in back.items() if k not in bonus},
                                  {k: v for k, v in original.items() if k not in bonus}) == []
    for name in bonus:  # exp(bonus) went through fp16 once
        np.testing.assert_allclose(np.exp(back[name]), np.exp(original[name].astype(np.float32)), rtol=1e-3)


def test_convert_command_line(tmp_path):
    out = tmp_path / "model.st"
    result = cli("convert", str(FIXTURES / "tiny-rwkv-7v0-834K.fp16.pth"), str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out} (AI00 .st layout" in result.stdout
    assert same_tensors(read_safetensors(out), read_safetensors(FIXTURES / "tiny-rwkv-7v0-834K.ai00.st")) == []
    missing = cli("convert", str(tmp_path / "nope.pth"), str(tmp_path / "x.st"))
    assert missing.returncode == 2 and "no such file" in missing.stderr and not (tmp_path / "x.st").exists()
    itself = cli("convert", str(out), str(out))
    assert itself.returncode == 2 and "would overwrite the input" in itself.stderr
    not_a_model = cli("convert", str(ROOT / "README.md"), str(tmp_path / "y.st"))
    assert not_a_model.returncode == 2 and "error:" in not_a_model.stderr and not (tmp_path / "y.st").exists()


def test_serve_with_a_missing_model_file_is_a_clear_error():
    result = cli("serve", "--model", "no/such/model.st")
    assert result.returncode == 2 and result.stderr.strip() == "error: --model no/such/model.st: no such file"


@pytest.mark.gpu
def test_serve_model_serves_that_file(tmp_path):
    """A model converted by `convert`, served by `--model` from a folder no config names."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(FIXTURES / "tiny-rwkv-7v0-834K.fp16.pth", folder / "mine.pth")
    assert cli("convert", str(folder / "mine.pth"), str(folder / "mine.st")).returncode == 0
    with running_server(tmp_path, args=("--model", str(folder / "mine.st"))) as base:
        status, body = http("GET", base + "/v1/models")
        assert status == 200 and body["data"][0]["id"] == "mine"
        status, info = http("GET", base + "/api/models/info")
        assert status == 200 and info["reload"]["model_path"] == "mine.st" and info["model"]["version"] == "V7"
        status, listing = http("GET", base + "/api/models/list")
        assert status == 200 and [f["name"] for f in listing] == ["mine.pth", "mine.st"]
        status, reply = http("POST", base + "/v1/completions", {"prompt": "The", "max_tokens": 4})
        assert status == 200 and 1 <= reply["usage"]["completion_tokens"] <= 4
