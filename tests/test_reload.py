"""The model's runtime lifecycle end to end through HTTP: reload while a stream runs, a failed
reload, unload, states attached and chosen per request, and the prefix cache per initial state."""
from __future__ import annotations

import concurrent.futures
import http.client as http_client
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ai00_trio.server.engine_service import read_state_file
from server_helpers import http, running_server
from test_admin import sse_events

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
V7 = ROOT / "assets" / "models" / "tiny-rwkv-7v0-834K.st"
V5 = ROOT / "tests" / "data" / "tiny-rwkv-5v2-730K.st"
V6 = ROOT / "tests" / "data" / "tiny-rwkv-6v0-3m-Q5_1-dequant.st"
ADMIN_KEY = "reload-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_SECTION = f'[admin]\nkeys = ["{ADMIN_KEY}"]\n'


def greedy(model, prompt: str, max_tokens: int, initial: np.ndarray | None = None) -> str:
    """What one request gives with greedy sampling, straight from the engine (bytes tokenizer)."""
    state = model.new_state() if initial is None else model.state_from_host(initial)
    logits = model.forward(list(prompt.encode()), state)
    out = bytearray()
    for _ in range(max_tokens):
        token = int(np.argmax(logits))
        out.append(token)
        logits = model.forward([token], state)
    return out.decode("utf-8", errors="replace")


def complete(base: str, prompt: str, max_tokens: int, **fields) -> tuple[int, dict]:
    return http("POST", base + "/v1/completions",
                {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **fields}, timeout=120)


def text_of(answer: dict) -> str:
    return answer["choices"][0]["text"]


def write_state(path: Path, model, text: str) -> None:
    """A state-tuning file for `model` (v5-v7) holding the wkv state after `text` (as a tuned
    state would hold what tuning taught it): `time_state` [H, N, N] per layer."""
    info, state = model.info, model.new_state()
    model.forward(list(text.encode()), state)
    shape = (info.n_head, info.head_size, info.head_size)
    save_file({f"blocks.{i}.att.time_state": model.arch.wkv_from_time_state(wkv.reshape(shape)).astype(np.float32)
               for i, wkv in enumerate(state.to_numpy()[1::3])}, str(path))


@pytest.fixture
def models(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for model in (V7, V5):
        shutil.copy(model, folder / model.name)
    (folder / "notes.txt").write_text("not a model\n")
    return folder


def read_stream(response) -> tuple[str, str]:
    """The text and finish reason of an SSE completion stream."""
    parts, finish = [], None
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        choice = json.loads(line[6:])["choices"][0]
        parts.append(choice["text"])
        finish = choice["finish_reason"] or finish
    return "".join(parts), finish


def test_reload_while_streaming_then_failed_reload_then_unload(tmp_path, models, load_tiny):
    v7, v5 = load_tiny("v7", "fp16"), load_tiny("v5.2", "fp16")
    long_tokens = 1500
    with running_server(tmp_path, {"path": str(models), "name": V7.name}, ADMIN_SECTION) as base:
        host, port = base.removeprefix("http://").split(":")
        stream = http_client.HTTPConnection(host, int(port), timeout=120)
        stream.request("POST", "/v1/completions", json.dumps(
            {"prompt": "Once upon a time", "max_tokens": long_tokens, "stream": True, "temperature": 0}),
            {"Content-Type": "application/json"})
        response = stream.getresponse()
        assert response.status == 200

        # the switch: built while the stream runs on the old model, which finishes it; the SSE
        # feed shows the old model, then it again with status "loading", then the new one
        feed = concurrent.futures.ThreadPoolExecutor(1).submit(sse_events, base + "/api/models/state", 3)
        time.sleep(0.5)
        status, info = http("POST", base + "/admin/models/load", {"model_path": V5.name, "max_batch": 4},
                            headers=ADMIN, timeout=120)
        assert status == 200, info
        assert info["reload"]["model_path"] == V5.name and info["reload"]["max_batch"] == 4
        assert info["model"]["version"] == "V5" and info["status"] == "loaded"
        retiring = http("GET", base + "/api/status")[1]["retiring"]
        assert retiring and retiring[0]["model"] == V7.stem and retiring[0]["active"] == 1, retiring

        # a request sent mid-switch (the old model still streaming) is answered by the new one
        status, answer = complete(base, "The cat", 24)
        assert status == 200 and text_of(answer) == greedy(v5, "The cat", 24)
        assert answer["model"] == V5.stem
        assert [m["id"] for m in http("GET", base + "/v1/models")[1]["data"]] == [V5.stem]

        events = [json.loads(data) for _, data in feed.result(timeout=60)]
        assert [(e["reload"]["model_path"], e["status"]) for e in events] == \
            [(V7.name, "loaded"), (V7.name, "loading"), (V5.name, "loaded")]

        text, finish = read_stream(response)
        stream.close()
        # retired as soon as its last request is done (no request still holds it)
        deadline = time.monotonic() + 10
        while http("GET", base + "/api/status")[1]["retiring"]:
            assert time.monotonic() < deadline, "the old model was not retired after its last request"
            time.sleep(0.1)
        assert finish == "length" and text == greedy(v7, "Once upon a time", long_tokens)

        # failed reloads: the model keeps serving
        for path, code, words in (("notes.txt", 400, "failed to load"), ("missing.st", 403, "does not exist"),
                                  ("../x.st", 403, "'..'")):
            status, body = http("POST", base + "/admin/models/load", {"model_path": path}, headers=ADMIN)
            assert status == code and words in body["error"]["message"], body
        status, body = http("POST", base + "/admin/models/load", {"model_path": V7.name, "precision": "fp8"},
                            headers=ADMIN)
        assert status == 400 and body["error"]["param"] == "precision"
        status, answer = complete(base, "The cat", 24)
        assert status == 200 and text_of(answer) == greedy(v5, "The cat", 24)
        assert http("GET", base + "/api/models/info")[1]["reload"]["model_path"] == V5.name

        # unload: 503 until the next load
        status, body = http("GET", base + "/admin/models/unload", headers=ADMIN)
        assert status == 200 and body == {"status": "unloaded"}
        status, body = complete(base, "The cat", 4)
        assert status == 503 and body["error"]["code"] == "model_not_loaded"
        assert "unloaded" in body["error"]["message"]
        assert http("GET", base + "/api/models/info")[0] == 503
        status, info = http("POST", base + "/admin/models/load", {"model_path": V7.name}, headers=ADMIN)
        assert status == 200 and info["model"]["version"] == "V7"
        status, answer = complete(base, "The cat", 24)
        assert status == 200 and text_of(answer) == greedy(v7, "The cat", 24)

        # admin routes refused without the key, or with a wrong one
        for method, path, body in (("POST", "/admin/models/load", {"model_path": V5.name}),
                                   ("GET", "/admin/models/unload", None), ("POST", "/admin/models/unload", None),
                                   ("POST", "/admin/states/load", {"path": "s.st"}),
                                   ("POST", "/admin/states/unload", {"name": "s"})):
            for headers in (None, {"Authorization": "Bearer wrong"}):
                status, answer = http(method, base + path, body, headers=headers)
                assert status == 401 and answer["error"]["code"] == "invalid_admin_key", (path, answer)
        assert [m["id"] for m in http("GET", base + "/v1/models")[1]["data"]] == [V7.stem]


def test_states_attach_choose_detach_and_cache_per_state(tmp_path, models, load_tiny):
    v6 = load_tiny("v6", "fp16")  # the tiny model whose answers depend most on their initial state
    shutil.copy(V6, models / V6.name)
    write_state(models / "default.st", v6, "Alice and Bob went to the market to buy apples and pears. ")
    write_state(models / "tuned.st", v6, "def main():\n    print('hello world')\n\n")
    default = read_state_file(v6, models / "default.st")
    tuned = read_state_file(v6, models / "tuned.st")
    prompt = "Once upon a time"  # over the cache's minimum of 8 tokens
    expected_default, expected_tuned = greedy(v6, prompt, 16, default), greedy(v6, prompt, 16, tuned)
    assert len({expected_default, expected_tuned, greedy(v6, prompt, 16)}) == 3
    states = '[[state]]\npath = "default.st"\nname = "base"\ndefault = true\n'
    with running_server(tmp_path, {"path": str(models), "name": V6.name}, ADMIN_SECTION + states) as base:
        def cache() -> dict:
            return http("GET", base + "/api/status")[1]["prefix_cache"]

        # the default state keeps the prefix cache working: the second request is a hit
        status, answer = complete(base, prompt, 16)
        assert status == 200 and text_of(answer) == expected_default
        before = cache()
        status, answer = complete(base, prompt, 16, state="00000000-0000-0000-0000-000000000000")
        assert status == 200 and text_of(answer) == expected_default
        after = cache()
        assert after["hits"] == before["hits"] + 1 and after["hit_tokens"] >= before["hit_tokens"] + len(prompt)

        # attach, choose by name, id and AI00's object forms; the default's cache never serves it
        status, card = http("POST", base + "/admin/states/load", {"path": "tuned.st", "name": "tuned"}, headers=ADMIN)
        assert status == 200 and card["name"] == "tuned"
        info = http("GET", base + "/api/models/info")[1]
        assert {s["name"] for s in info["states"]} == {"base", "tuned"}
        assert {s["path"] for s in info["reload"]["state"]} == {"default.st", "tuned.st"}
        for choice in ("tuned", card["id"], {"name": "tuned"}, {"id": card["id"]}, {"path": "tuned.st"}):
            status, answer = complete(base, prompt, 16, state=choice)
            assert status == 200 and text_of(answer) == expected_tuned, choice
        status, answer = complete(base, prompt, 16)
        assert status == 200 and text_of(answer) == expected_default
        assert cache()["hits"] >= after["hits"] + 5  # the tuned state's own cache served its repeats

        # an inline state tensor (as /api/oai/states gives it) continues where that state was
        status, snapshot = http("POST", base + "/api/oai/states", {"input": prompt[:10], "state": "tuned"})
        assert status == 200
        inline = {"data": snapshot["data"][0]["data"], "shape": snapshot["data"][0]["shape"]}
        status, answer = complete(base, prompt[10:], 16, state=inline)
        assert status == 200 and text_of(answer) == expected_tuned

        # detach: then the name is unknown (400), the default still serves
        status, _ = http("POST", base + "/admin/states/unload", {"name": "tuned"}, headers=ADMIN)
        assert status == 200
        status, body = complete(base, prompt, 4, state="tuned")
        assert status == 400 and body["error"]["code"] == "unknown_state" and "tuned" in body["error"]["message"]
        status, body = http("POST", base + "/admin/states/unload", {"name": "tuned"}, headers=ADMIN)
        assert status == 400 and body["error"]["code"] == "unknown_state"

        # refused state files and paths
        status, body = http("POST", base + "/admin/states/load", {"path": "../outside.st"}, headers=ADMIN)
        assert status == 403 and body["error"]["code"] == "path_refused"
        status, body = http("POST", base + "/admin/states/load", {"path": V5.name}, headers=ADMIN)
        assert status == 400 and body["error"]["code"] == "invalid_state_file"
        status, body = complete(base, prompt, 4, state={"path": "../tuned.st"})
        assert status == 403 and body["error"]["code"] == "path_refused"
        status, answer = complete(base, prompt, 16)
        assert status == 200 and text_of(answer) == expected_default
