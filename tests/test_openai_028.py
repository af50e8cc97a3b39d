"""AI00's README way of calling it: the legacy openai 0.28 SDK (`openai.api_base` set to
`.../api/oai`, `openai.ChatCompletion.create`, `openai.Completion.create`), streamed and not,
run in a virtual environment of its own that this test makes from the package registry."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from server_helpers import running_server

pytestmark = pytest.mark.gpu

PIP_TIMEOUT_S = 300

# Written as AI00's README example is: module-level settings, AI00's extra fields (names,
# half_life) passed straight through, the legacy response objects read as that SDK reads them.
CLIENT = textwrap.dedent('''
    import json
    import sys

    import openai

    openai.api_base = sys.argv[1]
    openai.api_key = "JUSTSECRET_KEY"
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    greedy = dict(max_tokens=24, temperature=0, stop=["\\x00", "\\n\\n"])
    sampled = dict(max_tokens=24, top_p=0.6, temperature=1, presence_penalty=0.3, frequency_penalty=0.3,
                   half_life=400, stop=["\\x00", "\\n\\n"])
    messages = [{"role": "user", "content": "how are you?"}]
    out = {}

    reply = openai.ChatCompletion.create(model="model", messages=messages, names=names, **greedy)
    out["chat"] = reply.choices[0].message["content"]
    out["chat_finish"] = reply.choices[0].finish_reason
    out["chat_stream"] = "".join(chunk.choices[0].delta.get("content", "") for chunk in openai.ChatCompletion.create(
        model="model", messages=messages, names=names, stream=True, **greedy))

    reply = openai.Completion.create(model="model", prompt="i like", **greedy)
    out["completion"] = reply.choices[0].text
    out["completion_tokens"] = reply.usage["completion_tokens"]
    out["completion_stream"] = "".join(chunk.choices[0].text for chunk in openai.Completion.create(
        model="model", prompt="i like", stream=True, **greedy))

    out["sampled_chat"] = openai.ChatCompletion.create(
        model="model", messages=messages, names=names, **sampled).choices[0].message["content"]
    out["sampled_completion"] = openai.Completion.create(model="model", prompt="i like", **sampled).choices[0].text
    out["models"] = [m["id"] for m in openai.Model.list()["data"]]
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def openai_028(tmp_path_factory) -> str:
    """The python of a fresh venv with openai 0.28; the test is skipped if it cannot be installed
    (no route to the package registry)."""
    venv = tmp_path_factory.mktemp("openai028") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    try:
        installed = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                                    "openai==0.28"], capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"openai==0.28 could not be installed from the package registry within {PIP_TIMEOUT_S} s")
    if installed.returncode != 0:
        tail = (installed.stderr or installed.stdout).strip().splitlines()[-3:]
        pytest.skip("openai==0.28 could not be installed from the package registry (offline?): " + " | ".join(tail))
    return python


def greedy_text(model, prompt: bytes, n: int, stops: tuple[str, ...]) -> str:
    state, out = model.new_state(), bytearray()
    logits = model.forward(list(prompt), state)
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        text = out.decode("utf-8", errors="ignore")
        if any(stop in text for stop in stops):
            return text[:min(text.index(s) for s in stops if s in text)]
        logits = model.forward([out[-1]], state)
    return out.decode("utf-8", errors="replace")


def test_ai00_readme_client_with_openai_028(tmp_path, openai_028, load_tiny):
    script = tmp_path / "ai00_client.py"
    script.write_text(CLIENT)
    engine = load_tiny("v7", "fp16")
    stops = ("\x00", "\n\n")
    with running_server(tmp_path) as base:
        for api_base in (base + "/api/oai", base + "/api/oai/v1"):
            run = subprocess.run([openai_028, str(script), api_base], capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, run.stderr
            out = json.loads(run.stdout)
            assert out["chat"] == greedy_text(engine, b"User: how are you?\n\nAssistant:", 24, stops).strip()
            assert out["chat_stream"] == out["chat"] and out["chat_finish"] in ("stop", "length")
            assert out["completion"] == greedy_text(engine, b"i like", 24, stops)
            assert out["completion_stream"] == out["completion"] and 0 < out["completion_tokens"] <= 24
            assert isinstance(out["sampled_chat"], str) and isinstance(out["sampled_completion"], str)
            assert out["models"] == ["tiny-rwkv-7v0-834K"]
