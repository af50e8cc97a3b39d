"""Request fields this server does not know: accepted, since clients written for other servers
send them, and each named once in the log (as vLLM names the fields it ignores), so a user can
see which of a client's settings have no effect here. Fields that carry no instruction about
the output (`user`, `store`, `metadata`, ...) are accepted silently."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import msgspec

# OpenAI's bookkeeping fields: they change nothing in any server's answer
SILENT_FIELDS = frozenset({"user", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier",
                           "stream_options", "seed"})
MAX_NAMED = 256  # names remembered; past that (a client inventing names) they are no longer logged
API_PREFIXES = ("/api/oai/v1", "/api/oai", "/v1")  # longest first


def route_key(path: str) -> str:
    """A route's path without its API prefix, so the three prefixes of a route share one key."""
    for prefix in API_PREFIXES:
        if path.startswith(prefix + "/"):
            return path[len(prefix):]
    return path


@dataclass
class UnknownFields:
    """The unknown field names already logged by this server process."""
    named: set[str] = field(default_factory=set)
    full: bool = False

    def check(self, path: str, body: bytes, kind: type[msgspec.Struct]) -> list[str]:
        """Logs the top-level fields of a JSON object `body` that `kind` does not have and that
        were not named before; returns them. A body that is not a JSON object is left to the
        route's own decoding (and its 400)."""
        if self.full:
            return []
        try:
            keys = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return []
        known = kind.__struct_encode_fields__
        new = sorted(k for k in keys if k not in known and k not in SILENT_FIELDS and k not in self.named)
        if not new:
            return []
        new = new[:MAX_NAMED - len(self.named)]
        self.named.update(new)
        names = ", ".join(repr(name) for name in new)
        print(f"[ai00-trio] {path}: ignoring request field{'s' if len(new) > 1 else ''} {names}: not used by "
              "this server (each unknown field is named once)", file=sys.stderr, flush=True)
        if len(self.named) >= MAX_NAMED:
            self.full = True
            print(f"[ai00-trio] {MAX_NAMED} unknown request fields named; further ones are ignored without a word",
                  file=sys.stderr, flush=True)
        return new
