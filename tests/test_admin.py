"""AI00's management API: path confinement, admin keys and exchanged tokens, the models folder
listing (sampled SHA-256, model info), /api/models/info and its SSE feed, adapters, save."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ai00_trio.config import AdminConfig, AppKey
from ai00_trio.engine.formats import read_checkpoint
from ai00_trio.engine.formats.ai00_layout import detect_layout
from ai00_trio.engine.formats.safetensors_file import read_safetensors
from ai00_trio.engine.info import detect_model
from ai00_trio.server import jwt_hs256
from ai00_trio.server.admin_auth import AdminGuard
from ai00_trio.server.errors import ApiError
from ai00_trio.server.model_files import header_model_info, sampled_sha256
from ai00_trio.server.paths import PathRefused, resolve_inside
from server_helpers import http, running_server

ROOT = Path(__file__).resolve().parents[1]
TINY = sorted((ROOT / "tests" / "data").glob("*.st")) + [ROOT / "assets" / "models" / "tiny-rwkv-7v0-834K.st"]
ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
APP_SECTION = f"""
[admin]
keys = ["{ADMIN_KEY}"]
[[admin.app_keys]]
app_id = "admin"
secret_key = "ai00_is_good"
"""


def independent_sha(path: Path) -> str:
    """AI00's hash from the whole file's bytes: all of them up to 10 MB, else 1 MB at every tenth."""
    data = path.read_bytes()
    if len(data) > 10_000_000:
        step = len(data) // 10
        data = b"".join(data[i * step:i * step + 1_000_000] for i in range(10))
    return hashlib.sha256(data).hexdigest()


def models_folder(tmp_path: Path) -> Path:
    """The tiny models, a text file, a sub-folder, a 12 MB file, and symlinks out of the folder."""
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    for model in TINY:
        shutil.copy(model, folder / model.name)
    (folder / "notes.txt").write_text("not a model\n")
    shutil.copy(TINY[0], folder / "sub" / "nested.st")
    rng = np.random.default_rng(0)
    (folder / "big.bin").write_bytes(rng.integers(0, 256, 12_345_678, dtype=np.uint8).tobytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.st").write_bytes(TINY[0].read_bytes())
    (folder / "link-out.st").symlink_to(outside / "secret.st")
    (folder / "dir-out").symlink_to(outside)
    (folder / "link-in.st").symlink_to(folder / "notes.txt")
    return folder


# --- confinement ------------------------------------------------------------------------------
def test_paths_inside_the_folder_resolve(tmp_path, monkeypatch):
    folder = models_folder(tmp_path)
    real = folder.resolve()
    assert resolve_inside(folder, "notes.txt") == real / "notes.txt"
    assert resolve_inside(folder, "sub/nested.st") == real / "sub" / "nested.st"
    assert resolve_inside(folder, "") == real and resolve_inside(folder, ".") == real
    assert resolve_inside(folder, "link-in.st") == real / "notes.txt"  # a symlink that stays inside
    assert resolve_inside(folder, "new.st", must_exist=False) == real / "new.st"
    monkeypatch.chdir(tmp_path)  # AI00's spelling repeats a relative root
    assert resolve_inside("models", "models/sub/nested.st") == real / "sub" / "nested.st"


@pytest.mark.parametrize("user_path, message", [
    ("..", "'..' is not accepted"),
    ("sub/../../outside/secret.st", "'..' is not accepted"),
    ("/etc/passwd", "absolute paths are not accepted"),
    ("link-out.st", "leads outside the models folder"),
    ("dir-out/secret.st", "leads outside the models folder"),
    ("missing.st", "does not exist"),
    ("a\x00b", "NUL"),
])
def test_paths_out_of_the_folder_are_refused(tmp_path, user_path, message):
    folder = models_folder(tmp_path)
    with pytest.raises(PathRefused, match=message):
        resolve_inside(folder, user_path, param="path")


def test_a_file_to_write_must_stay_inside(tmp_path):
    folder = models_folder(tmp_path)
    with pytest.raises(PathRefused, match="leads outside"):
        resolve_inside(folder, "dir-out/new.st", must_exist=False)
    with pytest.raises(PathRefused, match="its folder does not exist"):
        resolve_inside(folder, "nope/new.st", must_exist=False)
    with pytest.raises(PathRefused, match="models folder"):
        resolve_inside(tmp_path / "no-such-folder", "x.st")


# --- hashes and model info -------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1000, 10_000_000, 10_000_001, 12_345_678])
def test_sampled_sha256_agrees_with_an_independent_computation(tmp_path, size):
    path = tmp_path / "f.bin"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    assert sampled_sha256(path) == independent_sha(path)
    if size > 10_000_000:  # only the samples count: a byte between them changes nothing
        data = bytearray(path.read_bytes())
        data[size // 10 + 1_000_001] ^= 0xFF
        path.write_bytes(bytes(data))
        assert sampled_sha256(path) == independent_sha(path) != hashlib.sha256(bytes(data)).hexdigest()


@pytest.mark.parametrize("model", TINY + sorted((ROOT / "tests" / "data" / "fixtures").glob("*.ai00.st")),
                         ids=lambda p: p.name)
def test_model_info_from_the_header_matches_reading_the_weights(model):
    assert header_model_info(model) == detect_model(read_checkpoint(model))


def test_files_that_are_not_models_have_no_info():
    assert header_model_info(ROOT / "README.md") is None
    assert header_model_info(ROOT / "tests" / "data" / "vectors-7v0-834K.safetensors") is None


# --- admin keys and tokens -------------------------------------------------------------------
def test_jwt_matches_the_rfc_example_and_checks_everything():
    # jwt.io's HS256 example token, computed by an independent implementation
    token = jwt_hs256.encode({"sub": "1234567890", "name": "John Doe", "iat": 1516239022}, b"your-256-bit-secret")
    assert token == ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwia"
                     "WF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
    good = jwt_hs256.encode({"sid": "admin", "exp": 2000}, b"k")
    assert jwt_hs256.decode(good, b"k", now=1999) == {"sid": "admin", "exp": 2000}
    for bad, secret, message in [(good, b"other", "signature"), (good, b"k", "expired"),
                                 (token, b"your-256-bit-secret", "no expiry"), ("a.b", b"k", "not a JWT"),
                                 ("eyJhbGciOiJub25lIn0." + good.split(".")[1] + ".", b"k", "only HS256")]:
        with pytest.raises(jwt_hs256.JwtError, match=message):
            jwt_hs256.decode(bad, secret, now=2000 if message == "expired" else 1999)


def test_admin_guard():
    closed = AdminGuard(AdminConfig())
    with pytest.raises(ApiError) as refused:
        closed.check(f"Bearer {ADMIN_KEY}", None)
    assert refused.value.status == 403 and "[admin]" in str(refused.value)
    assert closed.exchange("admin", "") is None
    guard = AdminGuard(AdminConfig(keys=[ADMIN_KEY], app_keys=[AppKey(app_id="app", secret_key="s3")]))
    guard.check(f"Bearer {ADMIN_KEY}", None)
    for header, query in [("", None), ("Bearer wrong", None), (f"Basic {ADMIN_KEY}", None), ("", "wrong")]:
        with pytest.raises(ApiError) as refused:
            guard.check(header, query)
        assert refused.value.status == 401
    assert guard.exchange("app", "wrong") is None and guard.exchange("other", "s3") is None
    token = guard.exchange("app", "s3")
    guard.check(f"Bearer {token}", None)
    guard.check("", token)  # AI00's ?admin_token=
    with pytest.raises(ApiError, match="signature"):
        AdminGuard(AdminConfig(app_keys=[AppKey(app_id="app", secret_key="s3")])).check(f"Bearer {token}", None)


# --- the routes, on a server without a model (no GPU work) -------------------------------------
def sse_events(url: str, count: int, timeout: float = 30) -> list[tuple[str, str]]:
    """The first `count` (event name, data) pairs of an SSE stream, or fewer if it ends."""
    events, name, data = [], "message", []
    with urllib.request.urlopen(url, timeout=timeout) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and data:
                events.append((name, "\n".join(data)))
                name, data = "message", []
                if len(events) == count:
                    break
    return events


def test_admin_is_closed_by_default_and_no_model_is_503(tmp_path):
    with running_server(tmp_path, {"name": "missing.st"}, wait_ready=False, args=("--keep-serving",)) as base:
        status, body = http("POST", base + "/admin/files/dir", {"path": ""}, headers=ADMIN)
        assert status == 403 and body["error"]["code"] == "admin_disabled"
        assert "keys = " in body["error"]["message"] and "[admin]" in body["error"]["message"]
        status, body = http("POST", base + "/admin/models/save", {"path": "x.st"})
        assert status == 403 and body["error"]["code"] == "admin_disabled"
        status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin", "app_secret": "ai00_is_good"})
        assert status == 403 and body["token"] is None and body["code"] == 403
        assert "disabled" in body["message"] and body["error"]["code"] == "invalid_app_key"
        status, body = http("GET", base + "/api/models/info")
        assert status == 503 and "missing.st" in body["error"]["message"]
        [(name, data)] = sse_events(base + "/api/models/state", 1)
        assert name == "unavailable" and "missing.st" in json.loads(data)["error"]["message"]


def test_the_state_feed_says_when_the_server_drains(tmp_path):
    with running_server(tmp_path, {"name": "missing.st"}, wait_ready=False, args=("--keep-serving",)) as base:
        with urllib.request.urlopen(base + "/api/models/state", timeout=30) as stream:
            first = [stream.readline() for _ in range(3)]
            assert first[0] == b"event: unavailable\n" and b"failed to load" in first[1]
            base.process.send_signal(signal.SIGTERM)
            rest = stream.read().decode()  # the push, then the end of the stream
        assert rest.startswith("event: unavailable\n") and "shutting down" in rest
        assert base.process.wait(timeout=30) == 0


def test_the_exchange_needs_no_api_key_but_the_rest_of_api_does(tmp_path):
    with running_server(tmp_path, {"name": "missing.st"}, extra_sections=APP_SECTION, wait_ready=False,
                        listen_options={"api_keys": ["api-key"]}, args=("--keep-serving",)) as base:
        status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin", "app_secret": "ai00_is_good"})
        assert status == 200 and body["token"].count(".") == 2
        status, body = http("GET", base + "/api/models/list")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, files = http("GET", base + "/api/models/list", headers={"Authorization": "Bearer api-key"})
        assert status == 200 and "tiny-rwkv-7v0-834K.st" in [f["name"] for f in files]


@pytest.mark.parametrize("section, message", [
    ('[[lora]]\npath = "../outside/secret.st"\n', r"\[\[lora\]\] path: '../outside/secret.st': '..' is not accepted"),
    ('[[state]]\npath = "link-out.st"\n', r"\[\[state\]\] path: 'link-out.st' leads outside the models folder"),
])
def test_config_paths_out_of_the_models_folder_stop_the_server(tmp_path, section, message):
    folder = models_folder(tmp_path)
    with pytest.raises(RuntimeError, match=message):
        with running_server(tmp_path, {"path": str(folder), "name": "notes.txt"}, extra_sections=section):
            pass


# --- the routes, on a server with a model ------------------------------------------------------
@pytest.fixture(scope="module")
def admin_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("admin")
    folder = models_folder(tmp_path)
    with running_server(tmp_path, {"path": str(folder)}, extra_sections=APP_SECTION) as base:
        yield base, folder


@pytest.mark.gpu
def test_models_list_is_ai00s(admin_server):
    base, folder = admin_server
    status, files = http("GET", base + "/api/models/list")
    assert status == 200
    by_name = {f["name"]: f for f in files}
    # in name order; sub-folders and symlinks out of the folder are left out
    assert list(by_name) == sorted([m.name for m in TINY] + ["big.bin", "link-in.st", "notes.txt"])
    for name, entry in by_name.items():
        path = (folder / name).resolve()
        assert entry["path"] == name and entry["size"] == path.stat().st_size
        assert entry["sha"] == independent_sha(path)
    for model in TINY:
        info = detect_model(read_checkpoint(model))
        shown = by_name[model.name]["info"]
        assert shown["version"] == info.version.upper() and shown["num_layer"] == info.n_layer
        assert (shown["num_emb"], shown["num_hidden"], shown["num_vocab"]) == (info.n_embd, info.n_ffn, info.n_vocab)
    assert by_name["tiny-rwkv-7v0-834K.st"]["info"]["custom"] == {"V7": {"w": 32, "a": 32, "g": 32, "v": 32}}
    assert by_name["notes.txt"]["info"] is None and by_name["big.bin"]["info"] is None


@pytest.mark.gpu
def test_models_info_and_its_feed(admin_server):
    base, _ = admin_server
    status, info = http("GET", base + "/api/models/info")
    assert status == 200
    assert info["reload"]["model_path"] == "tiny-rwkv-7v0-834K.st" and info["reload"]["precision"] == "Fp16"
    assert info["reload"]["max_batch"] == 8 and info["reload"]["adapter"] == "Auto"
    assert info["model"]["version"] == "V7" and info["model"]["num_layer"] == 12 and info["states"] == []
    [(name, data)] = sse_events(base + "/api/models/state", 1)
    assert name == "message" and json.loads(data) == info


@pytest.mark.gpu
def test_adapters_are_listed_as_ai00_does(admin_server):
    base, _ = admin_server
    status, adapters = http("GET", base + "/api/adapters")
    assert status == 200 and adapters
    assert all(isinstance(a, str) and a.endswith((" (Vulkan)", " (Metal)", " (D3D12)")) for a in adapters)


@pytest.mark.gpu
def test_admin_routes_need_a_key(admin_server):
    base, _ = admin_server
    for headers in (None, {"Authorization": "Bearer wrong"}):
        status, body = http("POST", base + "/admin/files/dir", {"path": ""}, headers=headers)
        assert status == 401 and body["error"]["code"] == "invalid_admin_key"
    status, files = http("POST", base + "/admin/files/dir", {"path": "sub", "is_sha": True}, headers=ADMIN)
    assert status == 200 and [(f["path"], f["info"]["version"]) for f in files] == [("sub/nested.st", "V4")]
    assert files[0]["sha"] == independent_sha(TINY[0])
    status, same = http("POST", base + "/admin/files/ls", {"path": "sub", "is_sha": True}, headers=ADMIN)
    assert status == 200 and same == files
    status, plain = http("POST", base + "/admin/files/dir", {"path": ""}, headers=ADMIN)
    assert status == 200 and all(f["sha"] == "" for f in plain) and len(plain) == len(TINY) + 3


@pytest.mark.gpu
@pytest.mark.parametrize("path, message", [
    ("..", "'..' is not accepted"), ("sub/../..", "'..' is not accepted"), ("/etc", "absolute paths"),
    ("dir-out", "leads outside"), ("missing", "does not exist"),
])
def test_listing_out_of_the_folder_is_refused(admin_server, path, message):
    base, _ = admin_server
    status, body = http("POST", base + "/admin/files/dir", {"path": path}, headers=ADMIN)
    assert status == 403 and message in body["error"]["message"]
    assert body["error"]["code"] == "path_refused" and body["error"]["param"] == "path"


@pytest.mark.gpu
def test_ai00_token_exchange(admin_server):
    base, _ = admin_server
    status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin", "app_secret": "nope"})
    assert status == 403 and body["token"] is None and body["message"] == "NO-Match AppId and SecretKey"
    status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin"})
    assert status == 400 and "app_secret" in body["error"]["message"]
    status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin", "app_secret": "ai00_is_good"})
    assert status == 200 and body["code"] == 200 and body["message"] == "SUCCESS"
    token = body["token"]
    status, _ = http("POST", base + "/admin/files/dir", {"path": "sub"}, headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    status, _ = http("POST", base + f"/admin/files/dir?admin_token={token}", {"path": "sub"})
    assert status == 200
    status, body = http("POST", base + "/admin/files/dir", {"path": "sub"},
                        headers={"Authorization": f"Bearer {token[:-2]}xx"})
    assert status == 401 and "signature" in body["error"]["message"]


@pytest.mark.gpu
def test_save_writes_the_loaded_weights_as_ai00_st(admin_server):
    base, folder = admin_server
    for path, status_wanted in [("../saved.st", 403), ("dir-out/saved.st", 403), ("/tmp/saved.st", 403),
                                ("tiny-rwkv-7v0-834K.st", 400), ("sub", 400)]:
        status, body = http("POST", base + "/admin/models/save", {"path": path}, headers=ADMIN)
        assert status == status_wanted, (path, body)
    status, body = http("POST", base + "/admin/models/save", {"model_path": "sub/saved.st"}, headers=ADMIN)
    assert status == 200 and body == {"path": "sub/saved.st", "size": (folder / "sub" / "saved.st").stat().st_size}
    saved = read_checkpoint(folder / "sub" / "saved.st")
    source = read_checkpoint(folder / "tiny-rwkv-7v0-834K.st")
    assert sorted(saved) == sorted(source)
    for name, array in source.items():
        assert saved[name].dtype == np.float16 and np.array_equal(saved[name], array.astype(np.float16)), name
    assert detect_layout(read_safetensors(folder / "sub" / "saved.st")) == "ai00"
    status, files = http("POST", base + "/admin/files/dir", {"path": "sub"}, headers=ADMIN)
    assert [f["info"]["version"] if f["info"] else None for f in files] == ["V4", "V7"]
