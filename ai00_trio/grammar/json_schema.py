"""OpenAI `response_format` to grammar: `{"type": "json_object"}` and
`{"type": "json_schema", "json_schema": {"schema": ...}}`.

Output JSON is compact by default (no whitespace at all; `whitespace="space"`
gives json.dumps' default separators ", " and ": "). Object properties come in the
order the schema lists them; required ones always, optional ones may be left out;
no other properties are generated. See docs/grammar.md for the supported keywords.
"""

from __future__ import annotations

import json
from functools import lru_cache

from .compiler import compile_rules
from .errors import GrammarError
from .expr import (
    Chars,
    Expr,
    Lit,
    Members,
    Ref,
    Repeat,
    SepBy,
    alt,
    chars,
    lit,
    negate_ranges,
    normalize_ranges,
    opt,
    seq,
    star,
)
from .grammar import Grammar
from .regex import RegexSyntaxError, parse_regex
from .stop import check_stop

WHITESPACE = ("none", "space")
MAX_DEPTH = 64  # nesting of subschemas
MAX_COUNT = 1000  # largest minItems/maxItems/minLength/maxLength expanded into the grammar

_HEX = chars((0x30, 0x39), (0x41, 0x46), (0x61, 0x66))
_DIGIT = chars((0x30, 0x39))
_DIGIT19 = chars((0x31, 0x39))
_STRING_PLAIN = Chars(negate_ranges([(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]))
_STRING_ESCAPE = seq(lit("\\"), alt(chars('"\\/bfnrt'), seq(lit("u"), Repeat(_HEX, 4, 4))))
STRING_CHAR = alt(_STRING_PLAIN, _STRING_ESCAPE)
JSON_STRING = seq(lit('"'), star(STRING_CHAR), lit('"'))
_UNSIGNED_INT = alt(lit("0"), seq(_DIGIT19, star(_DIGIT)))
_FRACTION = seq(lit("."), Repeat(_DIGIT, 1, None))
_EXPONENT = seq(chars("eE"), opt(chars("+-")), Repeat(_DIGIT, 1, None))

_FORMATS = {
    "date": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    "date-time": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:"
                 r"([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}

_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$schema", "$id",
                "deprecated", "readOnly", "writeOnly", "strict", "name", "$defs", "definitions"}


def _count(s: dict, key: str, path: str, default: int | None = None) -> int | None:
    """A non-negative integer keyword (minItems, maxLength, ...)."""
    value = s.get(key, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GrammarError(f"{key} at {path} must be a non-negative integer")
    if value > MAX_COUNT:
        raise GrammarError(f"{key} at {path} is above the supported {MAX_COUNT}")
    return value


def _dump(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Translator:
    def __init__(self, root: dict | bool, whitespace: str, prefix: str = "") -> None:
        if whitespace not in WHITESPACE:
            raise GrammarError(f"unknown whitespace policy {whitespace!r}; use one of {WHITESPACE}")
        self.root = root
        self.comma = lit(", " if whitespace == "space" else ",")
        self.colon = lit(": " if whitespace == "space" else ":")
        self.rules: dict[str, Expr] = {}
        self.ref_names: dict[str, str] = {}
        self.prefix = prefix  # of every rule name, so several schemas' rules can share one grammar
        self.depth = 0

    # -- generic JSON ------------------------------------------------------
    def any_value(self) -> Expr:
        name = self.prefix + "json_value"
        if name not in self.rules:
            self.rules[name] = lit("")  # placeholder against re-entry
            value = Ref(name)
            member = seq(JSON_STRING, self.colon, value)
            obj = seq(lit("{"), opt(SepBy(member, self.comma)), lit("}"))
            arr = seq(lit("["), opt(SepBy(value, self.comma)), lit("]"))
            self.rules[name] = alt(obj, arr, JSON_STRING, self.number(False, {}),
                                   lit("true"), lit("false"), lit("null"))
        return Ref(name)

    def any_object(self) -> Expr:
        value = self.any_value()
        member = seq(JSON_STRING, self.colon, value)
        return seq(lit("{"), opt(SepBy(member, self.comma)), lit("}"))

    def number(self, integer: bool, schema: dict) -> Expr:
        minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
        sign = lit("") if isinstance(minimum, (int, float)) and minimum >= 0 else opt(lit("-"))
        if integer:
            return seq(sign, _UNSIGNED_INT)
        return seq(sign, _UNSIGNED_INT, opt(_FRACTION), opt(_EXPONENT))

    # -- schemas -----------------------------------------------------------
    def schema(self, s, path: str) -> Expr:
        check_stop()
        if s is True or s == {}:
            return self.any_value()
        if s is False:
            raise GrammarError(f"schema at {path} is false: nothing can match it")
        if not isinstance(s, dict):
            raise GrammarError(f"schema at {path} must be an object or a boolean")
        self.depth += 1
        try:
            return self._schema(s, path)
        finally:
            self.depth -= 1

    def _schema(self, s: dict, path: str) -> Expr:
        if self.depth > MAX_DEPTH:
            raise GrammarError(f"schema nested deeper than {MAX_DEPTH} levels at {path}")
        if "$ref" in s:
            return self.ref(s["$ref"], path)
        if "const" in s:
            return Lit(_dump(s["const"]))
        if "enum" in s:
            values = s["enum"]
            if not isinstance(values, list) or not values:
                raise GrammarError(f"enum at {path} must be a non-empty array")
            return alt(*(Lit(_dump(v)) for v in values))
        for key in ("anyOf", "oneOf"):
            if key in s:
                branches = s[key]
                if not isinstance(branches, list) or not branches:
                    raise GrammarError(f"{key} at {path} must be a non-empty array")
                return alt(*(self.schema(b, f"{path}/{key}/{i}") for i, b in enumerate(branches)))
        if "allOf" in s:
            parts = s["allOf"]
            if not isinstance(parts, list) or len(parts) != 1:
                raise GrammarError(f"allOf at {path}: only a single subschema is supported")
            return self.schema(parts[0], f"{path}/allOf/0")
        types = s.get("type")
        if types is None:
            if "properties" in s or "required" in s:
                types = "object"
            elif "items" in s or "prefixItems" in s:
                types = "array"
            else:
                return self.any_value()
        if isinstance(types, list):
            if not types:
                raise GrammarError(f"type at {path} is an empty list")
            return alt(*(self.typed(t, s, path) for t in types))
        return self.typed(types, s, path)

    def typed(self, t: str, s: dict, path: str) -> Expr:
        if t == "null":
            return lit("null")
        if t == "boolean":
            return alt(lit("true"), lit("false"))
        if t == "integer":
            return self.number(True, s)
        if t == "number":
            return self.number(False, s)
        if t == "string":
            return self.string(s, path)
        if t == "array":
            return self.array(s, path)
        if t == "object":
            return self.object(s, path)
        raise GrammarError(f"unknown type {t!r} at {path}")

    def string(self, s: dict, path: str) -> Expr:
        pattern = s.get("pattern")
        fmt = s.get("format")
        if pattern is None and fmt in _FORMATS:
            pattern = "^" + _FORMATS[fmt] + "$"
        if pattern is not None:
            return seq(lit('"'), self.pattern(pattern, path), lit('"'))
        lo = _count(s, "minLength", path, 0)
        hi = _count(s, "maxLength", path)
        if hi is not None and hi < lo:
            raise GrammarError(f"maxLength below minLength at {path}")
        return seq(lit('"'), Repeat(STRING_CHAR, lo, hi), lit('"'))

    def pattern(self, pattern: str, path: str) -> Expr:
        if not isinstance(pattern, str):
            raise GrammarError(f"pattern at {path} must be a string")
        body = pattern
        anchored_start = body.startswith("^")
        anchored_end = body.endswith("$") and not body.endswith("\\$")
        try:
            expr = _json_encode_regex(parse_regex(body))
        except RegexSyntaxError as exc:
            raise GrammarError(f"bad pattern at {path}: {exc.message} (offset {exc.offset})") from None
        anything = star(STRING_CHAR)
        return seq(lit("") if anchored_start else anything, expr,
                   lit("") if anchored_end else anything)

    def array(self, s: dict, path: str) -> Expr:
        prefix = s.get("prefixItems") or []
        if not isinstance(prefix, list):
            raise GrammarError(f"prefixItems at {path} must be an array")
        items = s.get("items", True)
        lo = _count(s, "minItems", path, 0)
        hi = _count(s, "maxItems", path)
        if hi is not None and hi < lo:
            raise GrammarError(f"maxItems below minItems at {path}")
        slots: list[Expr] = [self.schema(p, f"{path}/prefixItems/{i}") for i, p in enumerate(prefix)]
        tail = None if items is False else self.schema(items, f"{path}/items")
        k_max = hi if tail is not None else (len(slots) if hi is None else min(hi, len(slots)))
        if k_max is not None and k_max < lo:
            raise GrammarError(f"array at {path} cannot have minItems={lo} elements")

        def elements(start: int) -> Expr | None:
            # elements from index `start` on, given that at least `lo` are needed in all
            if hi is not None and start >= hi:
                return None
            if start < len(slots):
                rest = elements(start + 1)
                if rest is None:
                    return slots[start]
                after = seq(self.comma, rest)
                return seq(slots[start], after if start + 1 < lo else opt(after))
            if tail is None:
                return None
            more_max = None if hi is None else hi - start
            return SepBy(tail, self.comma, max(lo - start, 1), more_max)

        body = elements(0)
        if body is None:
            return lit("[]")
        return seq(lit("["), body if lo >= 1 else opt(body), lit("]"))

    def object(self, s: dict, path: str) -> Expr:
        props = s.get("properties")
        required_list = s.get("required") or []
        if not isinstance(required_list, list) or not all(isinstance(r, str) for r in required_list):
            raise GrammarError(f"required at {path} must be an array of strings")
        required = set(required_list)
        if props is None:
            if required:
                raise GrammarError(f"required at {path} needs the properties to be listed "
                                   "in properties")
            if s.get("additionalProperties") is False:
                return lit("{}")
            return self.any_object()
        if not isinstance(props, dict):
            raise GrammarError(f"properties at {path} must be an object")
        unknown = required - set(props)
        if unknown:
            raise GrammarError(f"required properties {sorted(unknown)} at {path} are not in properties")
        members = []
        for name, sub in props.items():
            key = Lit(_dump(name))
            value = self.schema(sub, f"{path}/properties/{name}")
            members.append((seq(key, self.colon, value), name in required))
        if not members:
            return lit("{}")
        return seq(lit("{"), Members(tuple(members), self.comma), lit("}"))

    def ref(self, ref: str, path: str) -> Expr:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise GrammarError(f"$ref {ref!r} at {path}: only local references (#/...) are supported")
        name = self.ref_names.get(ref)
        if name is None:
            name = f"{self.prefix}ref{len(self.ref_names)}"
            self.ref_names[ref] = name
            target = self.resolve_pointer(ref, path)
            self.rules[name] = lit("")  # placeholder for recursive references
            self.rules[name] = self.schema(target, ref)
        return Ref(name)

    def resolve_pointer(self, ref: str, path: str):
        node = self.root
        for raw in ref[1:].split("/"):
            if raw == "":
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise GrammarError(f"$ref {ref!r} at {path} does not resolve")
        return node


_JSON_SHORT = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n",
               0x0D: b"\\r", 0x09: b"\\t"}


def _json_char(cp: int) -> bytes:
    if cp in _JSON_SHORT:
        return _JSON_SHORT[cp]
    if cp < 0x20:
        return b"\\u%04x" % cp
    return chr(cp).encode("utf-8")


def _json_encode_regex(expr: Expr) -> Expr:
    """Map a regex over decoded characters to one over their JSON string encoding."""
    from .expr import Alt, Seq

    if isinstance(expr, Lit):
        text = expr.data.decode("utf-8")
        return Lit(b"".join(_json_char(ord(c)) for c in text))
    if isinstance(expr, Chars):
        special = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
        plain = []
        escaped = []
        for lo, hi in expr.ranges:
            plain.append((lo, hi))
            for a, b in special:
                for cp in range(max(lo, a), min(hi, b) + 1):
                    escaped.append(Lit(_json_char(cp)))
        plain_ranges = _subtract(normalize_ranges(plain), special)
        parts = ([Chars(plain_ranges)] if plain_ranges else []) + escaped
        return alt(*parts)
    if isinstance(expr, Seq):
        return seq(*(_json_encode_regex(i) for i in expr.items))
    if isinstance(expr, Alt):
        return alt(*(_json_encode_regex(i) for i in expr.items))
    if isinstance(expr, Repeat):
        return Repeat(_json_encode_regex(expr.item), expr.min, expr.max)
    raise GrammarError("unsupported construct in pattern")  # pragma: no cover


def _subtract(ranges, remove) -> tuple[tuple[int, int], ...]:
    keep = negate_ranges(remove)
    out = []
    for lo, hi in ranges:
        for a, b in keep:
            x, y = max(lo, a), min(hi, b)
            if x <= y:
                out.append((x, y))
    return normalize_ranges(out)


def json_schema_rules(schema, whitespace: str = "none", start: str = "start", prefix: str = "") -> dict[str, Expr]:
    """Rules (name -> AST) for documents matching `schema`; `start` is the entry, and every
    other rule's name begins with `prefix`."""
    tr = _Translator(schema, whitespace, prefix)
    tr.rules[start] = tr.schema(schema, "#")
    return tr.rules


def grammar_from_response_format(obj, *, whitespace: str = "none") -> Grammar | None:
    """Grammar for an OpenAI `response_format` (a dict or its JSON text).

    {"type": "text"} gives None (no constraint); {"type": "json_object"} any JSON
    object; {"type": "json_schema", "json_schema": {"schema": {...}}} documents
    matching the schema. Raises GrammarError for anything unsupported. Cached.
    """
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except ValueError as exc:
            raise GrammarError(f"response_format is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise GrammarError("response_format must be an object")
    try:
        key = json.dumps(obj)  # property order matters: it fixes the output order
    except (TypeError, ValueError, RecursionError):
        raise GrammarError("response_format must be JSON-serialisable (and not too deep)") from None
    try:
        return _from_response_format(key, whitespace)
    except GrammarError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:
        # a malformed keyword value we do not check explicitly
        raise GrammarError(f"malformed or unsupported schema ({type(exc).__name__}: {exc})") from None


@lru_cache(maxsize=64)
def _from_response_format(key: str, whitespace: str) -> Grammar | None:
    obj = json.loads(key)
    kind = obj.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        tr = _Translator(True, whitespace)
        tr.rules["start"] = tr.any_object()
        rules = tr.rules
    elif kind == "json_schema":
        spec = obj.get("json_schema")
        if not isinstance(spec, dict):
            raise GrammarError("response_format.json_schema must be an object")
        if "schema" not in spec:
            raise GrammarError("response_format.json_schema.schema is missing")
        rules = json_schema_rules(spec["schema"], whitespace)
    else:
        raise GrammarError(f"unsupported response_format type {kind!r} "
                           "(use text, json_object or json_schema)")
    return Grammar(compile_rules(rules, "start"), source=None, dialect="json_schema")
