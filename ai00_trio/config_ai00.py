"""AI00's `Config.toml`, read as it is: its keys mapped onto ours, the ones that mean nothing
here named (once) as ignored.

A file is AI00's when it has a key only AI00's format has (`AI00_ONLY`); any other file is
ours, where an unknown key is an error. In AI00's format, as in AI00, keys neither format
knows are ignored, and named with the rest.
"""
from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import msgspec

# AI00's keys with no counterpart here (its switch that turns admin auth off, TLS by domain and
# ACME, BNF engine options, fastembed models, and where its embedding matrix lives): accepted,
# without effect. force_pass in particular never opens the admin routes.
AI00_ONLY = {
    "": {"bnf", "embed"},
    "model": {"embed_device"},
    "listen": {"force_pass", "acme", "domain"},
}
RENAMED = {("model", "model_path"): "path", ("model", "model_name"): "name"}  # AI00's aliases
# AI00's admin auth lives in [listen]; ours in [admin]
MOVED = {("listen", "app_keys"): ("admin", "app_keys"), ("listen", "slot"): ("admin", "jwt_secret"),
         ("listen", "expire_sec"): ("admin", "expire_sec")}
# the secrets AI00's shipped Config.toml holds: public, so never taken as credentials here
PUBLISHED_SLOT, PUBLISHED_SECRET = "permisionkey", "ai00_is_good"
AI00_WEB_BUNDLE = ".zip"  # AI00's web UI ships as a zip; ours is a folder


def is_ai00_config(raw: dict[str, Any]) -> bool:
    if AI00_ONLY[""] & raw.keys():
        return True
    markers = {(section, key) for section, keys in AI00_ONLY.items() if section for key in keys} \
        | RENAMED.keys() | MOVED.keys()
    return any(isinstance(raw.get(section), dict) and key in raw[section] for section, key in markers)


def from_ai00(raw: dict[str, Any], sections: dict[str, type[msgspec.Struct]],
              bundled_vocab: Path) -> tuple[dict[str, Any], list[str]]:
    """Our config (as a dict for msgspec) from AI00's, and what was ignored or replaced, one
    note per key. `sections`: our section Structs by name ([[state]], [[lora]] are lists)."""
    notes: list[str] = []
    ignored: list[str] = []
    raw = _admin_from_listen(raw, notes)
    ours: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in sections:
            ignored.append(f"[{name}]")
            continue
        fields = set(sections[name].__struct_fields__)
        items = value if isinstance(value, list) else [value]
        kept = []
        for item in items:
            if not isinstance(item, dict):  # a wrong type: msgspec names it
                kept.append(item)
                continue
            entry = {}
            for key, field_value in item.items():
                key = RENAMED.get((name, key), key)
                if key in fields:
                    entry[key] = field_value
                elif f"{name}.{key}" not in ignored:
                    ignored.append(f"{name}.{key}")
            kept.append(entry)
        ours[name] = kept if isinstance(value, list) else kept[0]
    _paths_inside_model_folder(ours)
    web = ours.get("web")
    if web is None:
        ours["web"] = None  # AI00 serves no web UI without [web]
    elif isinstance(web, dict) and str(web.get("path", "")).endswith(AI00_WEB_BUNDLE):
        notes.append(f"web.path {web.pop('path')!r} is AI00's web UI bundle: serving this server's web UI")
    tokenizer = ours.get("tokenizer")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("path"), str):
        named = Path(tokenizer["path"])
        if not named.exists() and named.stem == bundled_vocab.stem and bundled_vocab.exists():
            tokenizer["path"] = str(bundled_vocab)
            notes.append(f"tokenizer.path {str(named)!r} is missing: using the bundled {bundled_vocab.name}")
    if ignored:
        notes.insert(0, "ignored (no effect here): " + ", ".join(ignored))
    return ours, notes


def _admin_from_listen(raw: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """AI00's [listen] slot (its JWT secret), expire_sec and app_keys moved to our [admin],
    where [admin] does not set them itself; AI00's published default secrets are dropped."""
    listen = raw.get("listen")
    if not isinstance(listen, dict) or not any(key in listen for _, key in MOVED):
        return raw
    listen = dict(listen)
    admin = dict(raw["admin"]) if isinstance(raw.get("admin"), dict) else {}
    for (_, key), (_, ours) in MOVED.items():
        if key not in listen:
            continue
        value = listen.pop(key)
        if ours in admin:
            notes.append(f"listen.{key} is ignored: [admin] {ours} is given")
            continue
        if key == "slot" and value == PUBLISHED_SLOT:
            notes.append(f"listen.slot {value!r} is AI00's published default: exchanged tokens are signed with a "
                         "random secret instead")
            continue
        if key == "app_keys" and isinstance(value, list):
            published = [k for k in value if isinstance(k, dict) and k.get("secret_key") == PUBLISHED_SECRET]
            if published:
                notes.append("listen.app_keys: " + ", ".join(repr(k.get("app_id")) for k in published)
                             + " with AI00's published default secret_key not accepted")
                value = [k for k in value if k not in published]
        admin[ours] = value
    return {**raw, "listen": listen, "admin": admin}


def _paths_inside_model_folder(ours: dict[str, Any]) -> None:
    """AI00 takes a model, state or LoRA path that already starts with model.path as it is;
    here they are all joined to model.path, so such a prefix is dropped."""
    model = ours.get("model")
    folder = PurePath(model["path"]) if isinstance(model, dict) and isinstance(model.get("path"), str) \
        else PurePath("assets/models")

    def inside(path):
        if isinstance(path, str) and not PurePath(path).is_absolute() and PurePath(path).is_relative_to(folder):
            return str(PurePath(path).relative_to(folder))
        return path

    if isinstance(model, dict) and "name" in model:
        model["name"] = inside(model["name"])
    for section in ("state", "lora"):
        for entry in ours.get(section) or []:
            if isinstance(entry, dict) and "path" in entry:
                entry["path"] = inside(entry["path"])
