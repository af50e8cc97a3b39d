"""AI00's Config.toml read as it is: keys mapped onto ours, AI00-only keys named once as ignored,
our own format still strict; and a server started on AI00's shipped file."""
from __future__ import annotations

from pathlib import Path

import pytest

from ai00_trio.config import AppKey, ConfigError, load_config, parse_config
from server_helpers import http, running_server

ROOT = Path(__file__).resolve().parents[1]
AI00_CONFIG = ROOT / "tests" / "data" / "ai00-Config.toml"
AI00_IGNORED = ["model.embed_device", "[bnf]", "listen.acme", "listen.domain", "listen.force_pass",
                "listen.slot", "listen.app_keys"]


def test_ai00_shipped_config_maps_onto_ours():
    notes: list[str] = []
    config = load_config(AI00_CONFIG, notes.append)
    model = config.model
    assert (model.path, model.name, model.precision, model.quant_layers) == ("assets/models", "tiny-rwkv-7v0-834K.st",
                                                                             "fp16", 0)
    assert (model.max_batch, model.token_chunk_size, model.stop) == (8, 256, ["\n\n"])
    assert (config.listen.ip, config.listen.port, config.listen.tls) == ("0.0.0.0", 65530, False)
    assert config.adapter.Auto == {} and config.adapter.choice is None
    assert config.web is not None and config.web.path == "webui"  # AI00's zip bundle: our web UI instead
    # AI00's JSON vocab is not shipped here: the bundled World vocab of the same name serves
    assert config.tokenizer.path == "assets/tokenizer/rwkv_vocab_v20230424.txt"
    assert len(notes) == 1 and "AI00's Config.toml" in notes[0]
    for key in AI00_IGNORED:
        assert notes[0].count(key) == 1, key
    assert "index.zip" in notes[0] and "rwkv_vocab_v20230424.json" in notes[0]


def test_ai00_aliases_paths_and_sections():
    notes: list[str] = []
    config = parse_config('[model]\nmodel_path = "models"\nmodel_name = "models/x.st"\nturbo = true\n'
                          '[[lora]]\npath = "models/a.lora"\nalpha = 192\n'
                          '[[state]]\nid = "fd7a60ed-7807-449f-8256-bccae3246222"\npath = "s.state"\n'
                          '[listen]\nslot = "k"\nexpire_sec = 60\n[[listen.app_keys]]\napp_id = "a"\nsecret_key = "b"\n'
                          '[embed]\nname = { MultilingualE5Small = {} }\n', "ai00.toml", notes.append)
    # AI00 takes paths already inside model.path as they are; here all are joined to it
    assert config.model.file == Path("models/x.st") and config.lora[0].path == "a.lora"
    assert config.lora[0].alpha == 192 and config.state[0].id == "fd7a60ed-7807-449f-8256-bccae3246222"
    assert config.web is None  # no [web]: AI00 serves no web UI
    (line,) = notes
    assert all(line.count(k) == 1 for k in ("model.turbo", "[embed]"))
    # AI00's admin auth, from [listen] to [admin]
    assert "listen.slot" not in line and "listen.expire_sec" not in line and "listen.app_keys" not in line
    admin = config.admin
    assert (admin.jwt_secret, admin.expire_sec, admin.app_keys, admin.keys) == ("k", 60, [AppKey("a", "b")], [])


def test_ai00_admin_keys_force_pass_and_published_secrets():
    notes: list[str] = []
    config = parse_config('[listen]\nforce_pass = true\nslot = "permisionkey"\nexpire_sec = 5\n'
                          '[[listen.app_keys]]\napp_id = "admin"\nsecret_key = "ai00_is_good"\n'
                          '[[listen.app_keys]]\napp_id = "ops"\nsecret_key = "s3cret"\n', "ai00.toml", notes.append)
    # force_pass opens nothing; AI00's shipped secrets are public, so they are not credentials here
    assert config.admin.app_keys == [AppKey("ops", "s3cret")] and config.admin.keys == []
    assert config.admin.jwt_secret == "" and config.admin.expire_sec == 5
    (line,) = notes
    assert line.count("listen.force_pass") == 1 and "AI00's published default" in line and "'admin'" in line
    # with its shipped file, the admin routes stay closed
    shipped = load_config(AI00_CONFIG, lambda _: None).admin
    assert (shipped.keys, shipped.app_keys, shipped.jwt_secret) == ([], [], "")
    # our [admin] wins over AI00's [listen] keys, and says so
    notes.clear()
    config = parse_config('[listen]\nslot = "a"\n[admin]\njwt_secret = "b"\nkeys = ["k"]\n', "ai00.toml", notes.append)
    assert config.admin.jwt_secret == "b" and config.admin.keys == ["k"]
    assert "listen.slot is ignored: [admin] jwt_secret is given" in notes[0]
    with pytest.raises(ConfigError, match="expire_sec"):
        parse_config('[listen]\nexpire_sec = "soon"\n', note=lambda _: None)


def test_ai00_format_keeps_our_keys_and_checks_their_values():
    config = parse_config('[model]\nembed_device = "Gpu"\nmax_queue = 3\n', note=lambda _: None)
    assert config.model.max_queue == 3
    with pytest.raises(ConfigError, match="max_batch"):
        parse_config('[bnf]\n[model]\nmax_batch = "eight"\n', note=lambda _: None)
    with pytest.raises(ConfigError, match="SF4"):
        parse_config('[bnf]\n[model]\nquant = 4\nquant_type = "SF4"\n', note=lambda _: None)


def test_our_format_stays_strict():
    """Without any AI00-only key a file is ours: an unknown key is an error, even one AI00 would
    ignore, and nothing is logged."""
    notes: list[str] = []
    for text, key in (('[model]\nmax_bach = 8\n', "max_bach"), ('[model]\nturbo = true\n', "turbo"),
                      ('[listen]\nport = 1\nipp = "x"\n', "ipp")):
        with pytest.raises(ConfigError, match=key):
            parse_config(text, note=notes.append)
    assert parse_config('[tokenizer]\npath = "v.json"\n', note=notes.append).tokenizer.path == "v.json"
    assert notes == []


@pytest.mark.gpu
def test_server_starts_and_serves_on_ai00s_config(tmp_path):
    with running_server(tmp_path, config_text=AI00_CONFIG.read_text()) as base:
        status, models = http("GET", base + "/api/oai/models")
        assert status == 200 and models["data"][0]["id"] == "tiny-rwkv-7v0-834K"
        status, answer = http("POST", base + "/api/oai/completions",
                              {"prompt": "The", "max_tokens": 4, "temperature": 0})
        assert status == 200 and answer["usage"]["completion_tokens"] == 4
        status, page = http("GET", base + "/")
        assert status == 200 and "<html" in page.lower()
        # force_pass = true and the shipped app key open no admin route
        assert http("POST", base + "/admin/files/dir", {"path": ""})[0] == 403
        status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin", "app_secret": "ai00_is_good"})
        assert status == 403 and body["token"] is None
        (log,) = tmp_path.glob("server-*.log")
        text = log.read_text()
    assert text.count("read as AI00's Config.toml") == 1
    for key in AI00_IGNORED:
        assert text.count(key) == 1, key


@pytest.mark.gpu
def test_ai00_app_keys_open_the_admin_routes_through_the_exchange(tmp_path):
    text = AI00_CONFIG.read_text().replace('slot = "permisionkey"', 'slot = "our-own-slot"') \
        .replace('secret_key = "ai00_is_good"', 'secret_key = "not-published"')
    with running_server(tmp_path, config_text=text) as base:
        assert http("POST", base + "/admin/files/dir", {"path": ""})[0] == 401
        status, body = http("POST", base + "/api/auth/exchange", {"app_id": "admin", "app_secret": "not-published"})
        assert status == 200 and body["token"]
        status, listing = http("POST", base + "/admin/files/dir", {"path": ""},
                               headers={"Authorization": f"Bearer {body['token']}"})
        assert status == 200 and any(f["name"] == "tiny-rwkv-7v0-834K.st" for f in listing)
