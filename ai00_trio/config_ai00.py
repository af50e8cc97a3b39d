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

# AI00's keys with no counterpart here (its JWT admin auth, TLS by domain and ACME, BNF engine
# options, fastembed models, and where its embedding matrix lives): accepted, without effect.
AI00_ONLY = {
    "": {"bnf", "embed"},
    "model": {"embed_device"},
    "listen": {"slot", "force_pass", "expire_sec", "app_keys", "acme", "domain"},
}
RENAMED = {("model", "model_path"): "path", ("model", "model_name"): "name"}  # AI00's aliases
AI00_WEB_BUNDLE = ".zip"  # AI00's web UI ships as a zip; ours is a folder


def is_ai00_config(raw: dict[str, Any]) -> bool:
    if AI00_ONLY[""] & raw.keys():
        return True
    markers = {(section, key) for section, keys in AI00_ONLY.items() if section for key in keys} | RENAMED.keys()
    return any(isinstance(raw.get(section), dict) and key in raw[section] for section, key in markers)


def from_ai00(raw: dict[str, Any], sections: dict[str, type[msgspec.Struct]],
              bundled_vocab: Path) -> tuple[dict[str, Any], list[str]]:
    """Our config (as a dict for msgspec) from AI00's, and what was ignored or replaced, one
    note per key. `sections`: our section Structs by name ([[state]], [[lora]] are lists)."""
    notes: list[str] = []
    ignored: list[str] = []
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
