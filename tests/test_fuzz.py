"""Schemathesis against a live server's own OpenAPI document: every documented route, a few
generated requests each (values inside the documented ranges and outside them). No answer may
be a 5xx, and every answer must be what the document says (status, content type, schema)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server_helpers import ROOT, running_server

pytestmark = pytest.mark.gpu

KEY = "fuzz-key"  # both an API key and an admin key, so one header opens every route
MAX_EXAMPLES = 6         # per operation and phase: the whole run takes a few minutes on the software adapter
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.xfail(strict=False, reason="open: under the fuzzer's load small requests (405s among them) wait past "
                   "60 s, so some heavy request still stalls the event loop (see the report)")
def test_every_documented_route_survives_fuzzing(tmp_path):
    schemathesis = shutil.which("st", path=str(Path(sys.executable).parent))
    if schemathesis is None:
        pytest.skip("schemathesis (the test extra) is not installed")
    models = tmp_path / "models"  # /admin/models/save writes here, never into the repository
    models.mkdir()
    shutil.copy(ROOT / "assets" / "models" / "tiny-rwkv-7v0-834K.st", models)
    options = {"path": str(models), "max_tokens_cap": 64, "max_prompt_tokens": 512, "queue_timeout": 30}
    with running_server(tmp_path, options, extra_sections=f'[admin]\nkeys = ["{KEY}"]\n',
                        listen_options={"api_keys": [KEY]}) as base:
        run = subprocess.run(
            [schemathesis, "run", base + "/api-docs/openapi.json", "--url", base,
             "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
             "--header", f"Authorization: Bearer {KEY}", "--workers", "2", "--request-timeout", "60",
             "--suppress-health-check", "all", "--seed", "1", "--no-color",
             "--exclude-path", "/api/models/state"],  # an event stream that never ends (test_admin tests it)
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        log = (tmp_path / f"server-{base.rsplit(':', 1)[1]}.log").read_text()
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    assert "Traceback" not in log, log[-6000:]
