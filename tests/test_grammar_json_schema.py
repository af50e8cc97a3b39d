"""response_format -> grammar: the JSON schema translation, checked against
json.loads and jsonschema."""

from __future__ import annotations

import itertools
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai00_trio.grammar import GrammarError, grammar_from_response_format
from test_grammar_support import compact, instances, schemas


def rf(schema, **kw):
    return grammar_from_response_format(
        {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}, **kw)


def test_text_and_json_object():
    assert grammar_from_response_format({"type": "text"}) is None
    g = grammar_from_response_format({"type": "json_object"})
    for doc in ['{}', '{"a":1}', '{"a":[1,2.5e-3,{"b":null}],"c":"\\u00e9x"}', '{"":true}']:
        assert g.matches(doc), doc
    for doc in ['[]', '1', '{"a":1,}', '{"a" :1}', '{a:1}', '{"a":01}', '{"a":"\n"}']:
        assert not g.matches(doc), doc
    assert grammar_from_response_format('{"type": "json_object"}') is g


def test_required_and_optional_properties_in_schema_order():
    schema = {"type": "object",
              "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                             "c": {"type": "boolean"}, "d": {"type": "null"}},
              "required": ["b", "d"]}
    g = rf(schema)
    values = {"a": 1, "b": "x", "c": True, "d": None}
    for present in itertools.product([False, True], repeat=4):
        keys = [k for k, p in zip("abcd", present) if p]
        doc = compact({k: values[k] for k in keys})
        valid = "b" in keys and "d" in keys
        assert g.matches(doc) == valid, doc
    assert not g.matches('{"b":"x","a":1,"d":null}')  # order is fixed
    assert not g.matches('{"b":"x","d":null,"e":1}')  # no other properties


def test_scalars_enum_const_and_any_of():
    g = rf({"type": "array", "items": {"anyOf": [
        {"type": "integer", "minimum": 0}, {"enum": ["x", 2.5, None]},
        {"const": {"k": [True]}}, {"type": "string", "maxLength": 2}]}})
    assert g.matches('[0,12,"x",2.5,null,{"k":[true]},"ab",""]')
    for bad in ['[-1]', '[1.5]', '["abc"]', '[{"k":[false]}]', '[2.50]']:
        assert not g.matches(bad), bad


def test_arrays_min_max_items_and_prefix_items():
    g = rf({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3})
    assert [g.matches(compact(list(range(n)))) for n in range(5)] == [False, False, True, True,
                                                                     False]
    g = rf({"type": "array", "prefixItems": [{"type": "string"}, {"type": "null"}],
            "items": False})
    assert g.matches('[]') and g.matches('["a"]') and g.matches('["a",null]')
    assert not g.matches('["a",null,1]') and not g.matches('[null]')


def test_string_formats_and_patterns():
    g = rf({"type": "object", "properties": {
        "d": {"type": "string", "format": "date"},
        "u": {"type": "string", "format": "uuid"},
        "p": {"type": "string", "pattern": "^a\"b\\\\c+$"},
        "s": {"type": "string", "pattern": "x[0-9]"}}, "required": ["d", "u", "p", "s"]})
    doc = {"d": "2024-02-29", "u": "123e4567-e89b-12d3-a456-426614174000",
           "p": 'a"b\\ccc', "s": "zzx5yy"}
    assert g.matches(compact(doc))
    assert not g.matches(compact({**doc, "d": "2024-13-01"}))
    assert not g.matches(compact({**doc, "s": "xx"}))


def test_refs_and_recursion():
    schema = {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"]}}, "$ref": "#/$defs/node"}
    g = rf(schema)
    doc = {"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]}
    assert g.matches(compact(doc))
    assert not g.matches('{"v":1,"kids":[{"kids":[]}]}')
    assert len(g.machines) >= 2  # the recursive reference is a machine with a stack


def test_whitespace_policy():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {}}},
              "required": ["a"]}
    assert rf(schema).matches('{"a":[1,{"b":2}]}')
    g = rf(schema, whitespace="space")
    assert g.matches(json.dumps({"a": [1, {"b": 2}]}))
    assert not g.matches('{"a":[1,{"b":2}]}')


@pytest.mark.parametrize("bad", [
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"name": "x"}},
    {"type": "xml"},
    {"type": "json_schema", "json_schema": {"schema": {"type": "widget"}}},
    {"type": "json_schema", "json_schema": {"schema": {"$ref": "http://x/y"}}},
    {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/missing"}}},
    {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {},
                                                       "required": ["a"]}}},
    {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "(a"}}},
    {"type": "json_schema", "json_schema": {"schema": {"allOf": [{}, {}]}}},
    {"type": "json_schema", "json_schema": {"schema": False}},
    "not json",
    [1, 2],
])
def test_unsupported_response_formats_raise(bad):
    with pytest.raises(GrammarError):
        grammar_from_response_format(bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_schema_instances_are_accepted(data):
    """Every instance of a random schema (compact JSON, schema property order) is a
    sentence of the translated grammar; and sentences we can perturb stay valid
    exactly when jsonschema says so."""
    schema = data.draw(schemas())
    g = rf(schema)
    value = data.draw(instances(schema))
    jsonschema.validate(value, schema)
    doc = compact(value)
    assert g.matches(doc), (schema, doc)
    assert not g.matches(doc + " ")
    assert not g.matches(doc[:-1]) or _valid(doc[:-1], schema)


def _valid(text, schema) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_deep_nesting_compiles_in_linear_size():
    """Nested arrays / objects with optional members must not blow up (each member
    and array item is built once)."""
    import time

    arrays, objects = {}, {}
    a, o = arrays, objects
    for _ in range(40):
        a.update(type="array", items={})
        a = a["items"]
        o.update(type="object", properties={"x": {}, "n": {"type": "integer"}, "y": {}})
        o = o["properties"]["x"]
    started = time.perf_counter()
    ga, go = rf(arrays), rf(objects)
    assert time.perf_counter() - started < 2.0
    assert ga.n_states < 2_000 and go.n_states < 5_000
    assert ga.matches("[" * 40 + "1" + "]" * 40)
    assert ga.matches("[[],[[]]]")
    assert go.matches('{"x":{"n":1,"y":{"x":{}}},"y":[]}') and go.matches("{}")
    assert not go.matches('{"n":1,"x":{}}')


def test_too_deep_or_malformed_schemas_are_grammar_errors():
    deep: dict = {}
    cur = deep
    for _ in range(3000):
        cur["items"] = {}
        cur = cur["items"]
    for bad in (deep, {"type": "array", "minItems": {}}, {"type": "array", "maxItems": -1},
                {"type": "string", "maxLength": 10**9}, {"required": "a"},
                {"prefixItems": 2.5}):
        with pytest.raises(GrammarError):
            rf(bad)
