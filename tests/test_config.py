"""Config.toml parsing: the shipped file loads, unknown keys and bad values are named."""
from __future__ import annotations

from pathlib import Path

import pytest

from ai00_trio.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_loads():
    config = load_config(ROOT / "assets" / "configs" / "Config.toml")
    assert config.model.name == "tiny-rwkv-7v0-834K.st" and config.model.precision == "fp16"
    assert config.listen.port == 65530 and config.adapter.choice is None
    assert (ROOT / config.model.file).exists()


def test_ai00_spellings_are_accepted():
    config = parse_config('[model]\nprecision = "Fp32"\nquant = 0\nquant_type = "Int8"\n[adapter]\nManual = 1\n'
                          '[[state]]\npath = "s.st"\nname = "chat"\ndefault = true\n[[lora]]\npath = "l.st"\nalpha = 0.5\n')
    assert config.model.precision == "fp32" and config.adapter.choice == 1
    assert config.state[0].default and config.lora[0].alpha == 0.5


@pytest.mark.parametrize("text, expected", [
    ("[model]\nmax_bach = 8\n", "max_bach"),
    ("[listen]\nport = \"x\"\n", "port"),
    ("[model]\nprecision = \"int3\"\n", "precision"),
    ("[nonsense]\n", "nonsense"),
    ("[model\n", "config"),
    ("[responses]\nmax_stored = 0\n", "max_stored"),
])
def test_bad_config_names_the_problem(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config(text)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_weight_upload_progress_in_a_log_file_is_a_line_per_quarter(capsys):
    from ai00_trio.server.engine_service import ProgressBar
    bar = ProgressBar(width=4, terminal=False)
    for i in range(101):
        bar(i / 100)
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["0%", "25%", "50%", "75%", "100%"]
    assert "\r" not in "".join(lines) and lines[-1].endswith("[####] 100%")
    terminal = ProgressBar(width=4, terminal=True)
    for i in range(101):
        terminal(i / 100)
    drawn = capsys.readouterr().err
    assert drawn.count("\r") == 101 and drawn.endswith("100%\n")
