"""The browser policy: CORS only for configured origins, JSON bodies only. No model is loaded
(these run on the app in process, no GPU): a request the policy lets through gets the 503
of a model still loading, one it stops gets its own status."""
from __future__ import annotations

import json

import pytest
import trio

from ai00_trio.config import ConfigError, parse_config
from ai00_trio.server.app import ServerState, create_app

KEY = "browser-test-key"
APP = "https://app.example"


def make_client(listen: str = ""):
    config = parse_config(f"[listen]\n{listen}\n[web]\npath = \"webui\"\n")
    return create_app(ServerState(config)).test_client()


async def call(client, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    response = await client.open(path, method=method, headers=headers or {}, data=body)
    raw = await response.get_data()
    return response.status_code, response.headers, json.loads(raw) if raw.startswith(b"{") else raw


def preflight(origin: str, method: str = "POST", asked: str = "authorization, content-type") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": asked}


def test_by_default_no_origin_is_let_in_and_bodies_must_be_json():
    async def main():
        client = make_client()
        evil = "https://evil.example"
        # a "simple" cross-site request (no preflight in a browser): refused before any work
        status, headers, body = await call(client, "POST", "/v1/completions",
                                           {"Origin": evil, "Content-Type": "text/plain"}, b'{"prompt": "x"}')
        assert status == 415 and body["error"]["code"] == "unsupported_media_type"
        assert set(body["error"]) == {"message", "type", "param", "code"} and "application/json" in body["error"]["message"]
        assert "Access-Control-Allow-Origin" not in headers
        status, headers, _ = await call(client, "OPTIONS", "/v1/completions", preflight(evil))
        assert "Access-Control-Allow-Origin" not in headers and "Access-Control-Allow-Methods" not in headers
        status, headers, _ = await call(client, "GET", "/health", {"Origin": evil})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
                             "application/json; charset=latin-1"):
            headers = {"Content-Type": content_type} if content_type else {}
            for path in ("/v1/chat/completions", "/api/oai/chooses", "/tokenize", "/admin/files/dir"):
                status, _, body = await call(client, "POST", path, headers, b"{}")
                assert status == 415, (content_type, path, body)
        for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON; charset=UTF-8"):
            status, _, body = await call(client, "POST", "/v1/completions", {"Content-Type": content_type},
                                         b'{"prompt": "x"}')
            assert status == 503 and body["error"]["code"] == "model_not_loaded", content_type  # let through
        status, _, _ = await call(client, "POST", "/v1/no/such/route", {"Content-Type": "text/plain"}, b"x")
        assert status == 404  # an unknown route is unknown, whatever its body
    trio.run(main)


def test_configured_origins_pass_preflight_without_a_key():
    async def main():
        client = make_client(f'cors_origins = ["{APP}"]\napi_keys = ["{KEY}"]')
        status, headers, _ = await call(client, "OPTIONS", "/v1/chat/completions",
                                        preflight(APP, asked="authorization, content-type, x-stainless-os"))
        assert status == 204 and headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "x-stainless-os"} <= allowed
        status, headers, _ = await call(client, "OPTIONS", "/v1/chat/completions", preflight("https://other.example"))
        assert "Access-Control-Allow-Origin" not in headers
        # the answers themselves, errors too, so the page can read them
        auth = {"Origin": APP, "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        status, headers, body = await call(client, "POST", "/v1/completions", auth, b'{"prompt": "x"}')
        assert status == 503 and headers["Access-Control-Allow-Origin"] == APP and "Origin" in headers["Vary"]
        assert "Retry-After" in headers["Access-Control-Expose-Headers"]
        status, headers, _ = await call(client, "GET", "/v1/models", {"Origin": APP})
        assert status == 401 and headers["Access-Control-Allow-Origin"] == APP
        status, headers, _ = await call(client, "GET", "/health", {"Origin": "https://other.example"})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers and "Origin" in headers["Vary"]
    trio.run(main)


def test_any_origin():
    async def main():
        client = make_client('cors_origins = "*"')
        status, headers, _ = await call(client, "OPTIONS", "/v1/embeddings", preflight("http://localhost:3000"))
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
        status, headers, _ = await call(client, "GET", "/health", {"Origin": "null"})
        assert headers["Access-Control-Allow-Origin"] == "*"
    trio.run(main)


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "https://*.example", "ftp://x"])
def test_an_origin_that_is_not_one_is_a_config_error(origin):
    with pytest.raises(ConfigError, match="cors_origins"):
        parse_config(f'[listen]\ncors_origins = ["{origin}"]\n')
