"""Schemathesis against a live server's own OpenAPI document: every documented route, bounded
examples each (the coverage phase's edge values, then generated ones, inside the documented
ranges and outside them). No answer may be a 5xx, every answer must be what the document says
(status, content type, schema), and no request may stall (the per-request timeout fails it)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server_helpers import ROOT, running_server

pytestmark = pytest.mark.gpu

KEY = "fuzz-key"  # both an API key and an admin key, so one header opens every route
MAX_EXAMPLES = 10  # per operation in the fuzzing phase: about a minute here for every route
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# these change the deployment (a reload, or no model at all): fuzzed last, on their own
DEPLOYMENT = ("/admin/models/load", "/admin/models/unload")
# a stall never answers; a request that is only slow (the first use of a kernel variant compiles it,
# seconds on lavapipe, more on a busy 2-core machine: a full-suite run once took over 30 s) does
REQUEST_TIMEOUT_S = 120


def schemathesis(base: str, cwd: Path, *selection: str) -> subprocess.CompletedProcess:
    command = shutil.which("st", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("schemathesis (the test extra) is not installed")
    return subprocess.run(
        [command, "run", base + "/api-docs/openapi.json", "--url", base, "--checks", CHECKS,
         "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
         "--header", f"Authorization: Bearer {KEY}", "--workers", "2", "--request-timeout", str(REQUEST_TIMEOUT_S),
         "--suppress-health-check", "all", "--seed", "1", "--no-color", *selection],
        capture_output=True, text=True, timeout=400, cwd=cwd)


def test_every_documented_route_survives_fuzzing(tmp_path):
    models = tmp_path / "models"  # /admin/models/save writes here, never into the repository
    models.mkdir()
    shutil.copy(ROOT / "assets" / "models" / "tiny-rwkv-7v0-834K.st", models)
    # small limits (the document states them), so the valid requests reach generation and stay cheap
    options = {"path": str(models), "max_tokens_cap": 4, "max_prompt_tokens": 256, "queue_timeout": 20,
               "max_embed_inputs": 4, "max_embed_tokens": 256, "grammar_compile_seconds": 2}
    with running_server(tmp_path, options, extra_sections=f'[admin]\nkeys = ["{KEY}"]\n',
                        listen_options={"api_keys": [KEY]}) as base:
        exclude = [arg for path in DEPLOYMENT for arg in ("--exclude-path", path)]
        # /api/models/state is an event stream that never ends (test_admin tests it)
        served = schemathesis(base, tmp_path, "--exclude-path", "/api/models/state", *exclude)
        deployment = schemathesis(base, tmp_path, *[arg for path in DEPLOYMENT for arg in ("--include-path", path)])
        log = (tmp_path / f"server-{base.rsplit(':', 1)[1]}.log").read_text()
    for run in (served, deployment):
        assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert "Tested: 29" in served.stdout and "Tested: 2" in deployment.stdout
    assert "Traceback" not in log, log[-6000:]
    generated = sum(log.count(f"POST /v1/{route} 200") for route in ("completions", "chat/completions"))
    assert generated >= 20, "the fuzzer's requests never reached generation"
