"""Starting a real server (a subprocess, as a user runs it) for the HTTP tests."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: dict | bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict | str]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = dict(headers or {})
    if data is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"  # the server refuses other bodies (415)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


class ServerURL(str):
    """The server's base URL, with its process (for tests that signal it)."""

    def __new__(cls, url: str, process: subprocess.Popen) -> "ServerURL":
        self = super().__new__(cls, url)
        self.process = process
        return self


@contextmanager
def running_server(tmp_path: Path, model_options: dict | None = None, extra_sections: str = "",
                   wait_ready: bool = True, listen_options: dict | None = None, scheme: str = "http",
                   args: tuple[str, ...] = (), config_text: str | None = None):
    """A server on a free port; `model_options` override keys of its [model] section.
    `config_text`: the whole config file instead, its address given on the command line."""
    port = free_port()
    options = {"path": str(ROOT / "assets" / "models"), "name": "tiny-rwkv-7v0-834K.st",
               "max_batch": 8, "token_chunk_size": 64, **(model_options or {})}
    model_section = "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    listen_section = "\n".join(f"{key} = {json.dumps(value)}" for key, value in (listen_options or {}).items())
    config = tmp_path / f"config-{port}.toml"
    config.write_text(f"""
[model]
{model_section}
{extra_sections}
[listen]
ip = "127.0.0.1"
port = {port}
{listen_section}
[web]
path = "{ROOT / 'webui'}"
""")
    if config_text is not None:
        config.write_text(config_text)
        args = ("--ip", "127.0.0.1", "--port", str(port), *args)
    log = open(tmp_path / f"server-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "ai00_trio", "--config", str(config), *args], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(tmp_path / f'server-{port}.log').read_text()}")
            try:
                if scheme == "https":
                    with socket.create_connection(("127.0.0.1", port), timeout=2):
                        break
                keys = (listen_options or {}).get("api_keys")
                status, _ = http("GET", base + ("/ready" if wait_ready else "/health"), timeout=2,
                                 headers={"Authorization": f"Bearer {keys[0]}"} if keys else None)
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.2)
        yield ServerURL(base, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
