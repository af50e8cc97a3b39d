"""Masked sampling with the RWKV World vocabulary (65,536 ids) and a 256-token byte
vocabulary: (1) whatever masked sampling produces is accepted by an independent
check; (2) every sentence is reachable: its greedy World tokenization and its
bytes are allowed token by token, with EOS exactly at completion."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai00_trio.grammar import compile_grammar, grammar_from_response_format
from test_grammar_support import (
    ARITH_KBNF,
    BYTE_VOCAB,
    DATE_KBNF,
    DATE_RE,
    SEED_BNF,
    SEED_BNF_RE,
    SEED_KBNF,
    SEED_KBNF_RE,
    arith_expressions,
    arith_ok,
    byte_trie,
    check_reachable,
    compact,
    instances,
    sample,
    schemas,
    structural_bias,
    world_tokenizer,
    world_trie,
)

SLOW = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def world():
    tok = world_tokenizer()
    return tok, world_trie(), tok.all_token_bytes


_BIAS = {}


def world_bias():
    if "w" not in _BIAS:
        _BIAS["w"] = structural_bias(world_tokenizer().all_token_bytes)
    return _BIAS["w"]


def rf(schema):
    return grammar_from_response_format(
        {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})


# ------------------------------------------------------------------ soundness


@SLOW
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_seed_documents_are_valid(seed):
    _, trie, tb = world()
    for text, pattern in ((SEED_KBNF, SEED_KBNF_RE), (SEED_BNF, SEED_BNF_RE)):
        out = sample(compile_grammar(text), trie, tb, seed, bias=world_bias())
        doc = out.decode("utf-8")
        assert pattern.fullmatch(doc), doc
        value = json.loads(doc)
        assert list(value) == ["name", "age", "job"]
        assert isinstance(value["name"], str) and isinstance(value["age"], int)


@SLOW
@given(schema=schemas(), seed=st.integers(0, 2**32 - 1))
def test_sampled_json_validates_against_the_schema(schema, seed):
    _, trie, tb = world()
    out = sample(rf(schema), trie, tb, seed, bias=world_bias(), max_steps=80)
    jsonschema.validate(json.loads(out.decode("utf-8")), schema)


@SLOW
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_json_object_is_an_object(seed):
    _, trie, tb = world()
    g = grammar_from_response_format({"type": "json_object"})
    out = sample(g, trie, tb, seed, bias=world_bias(), max_steps=80)
    assert isinstance(json.loads(out.decode("utf-8")), dict)


@SLOW
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_small_grammars_are_valid(seed):
    _, trie, tb = world()
    out = sample(compile_grammar(DATE_KBNF), trie, tb, seed)
    assert DATE_RE.fullmatch(out.decode())
    out = sample(compile_grammar(ARITH_KBNF), trie, tb, seed, max_steps=40)
    assert arith_ok(out.decode()), out
    # byte vocabulary (no EOS id): stops at a random complete point
    out = sample(compile_grammar(ARITH_KBNF), byte_trie(), BYTE_VOCAB, seed, max_steps=60)
    assert arith_ok(out.decode()), out


# ------------------------------------------------------------------ completeness


def _reachable_both_ways(grammar, text: str, complete_prefix=None) -> None:
    tok, trie, tb = world()
    ids = tok.encode(text)
    assert tok.decode(ids) == text.encode()
    check_reachable(grammar, trie, ids, tb, complete_prefix)
    data = text.encode()
    check_reachable(grammar, byte_trie(), list(data), BYTE_VOCAB, complete_prefix)


def _json_complete(schema):
    def complete(prefix: bytes) -> bool:
        try:
            value = json.loads(prefix.decode("utf-8"))
        except ValueError:
            return False
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError:
            return False
        return True
    return complete


@SLOW
@given(name=st.text(max_size=12), age=st.integers(-10**9, 10**9), job=st.text(max_size=12))
def test_seed_documents_are_reachable(name, age, job):
    doc = compact({"name": name, "age": age, "job": job})
    _reachable_both_ways(compile_grammar(SEED_KBNF), doc, lambda p: p == doc.encode())


_BNF_TEXT = st.text(st.characters(exclude_characters="\\" + "".join(map(chr, range(0x20))), exclude_categories=("Cs",)),
                    max_size=10).map(lambda t: t.replace('"', '\\"'))


@SLOW
@given(name=_BNF_TEXT, age=st.integers(0, 10**9), job=_BNF_TEXT)
def test_bnf_seed_documents_are_reachable(name, age, job):
    doc = '{"name":"' + name + '","age":' + str(age) + ',"job":"' + job + '"}'
    assert SEED_BNF_RE.fullmatch(doc)
    _reachable_both_ways(compile_grammar(SEED_BNF), doc, lambda p: p == doc.encode())


@SLOW
@given(st.data())
def test_schema_instances_are_reachable(data):
    schema = data.draw(schemas())
    value = data.draw(instances(schema))
    doc = compact(value)
    _reachable_both_ways(rf(schema), doc, _json_complete(schema))


@SLOW
@given(expr=arith_expressions())
def test_arithmetic_sentences_are_reachable(expr):
    _reachable_both_ways(compile_grammar(ARITH_KBNF), expr, lambda p: arith_ok(p.decode()))


@SLOW
@given(date=st.dates())
def test_dates_are_reachable(date):
    _reachable_both_ways(compile_grammar(DATE_KBNF), date.isoformat(),
                         lambda p: bool(DATE_RE.fullmatch(p.decode())))


def test_world_mask_shapes():
    tok, trie, tb = world()
    g = compile_grammar(SEED_KBNF)
    state = g.start()
    mask = state.allowed(trie)
    assert mask.shape == (65536,) and mask.dtype == np.bool_
    assert {tb[i] for i in np.flatnonzero(mask)} == {b"{", b'{"'}
    state = state.advance(b'{"name":"')
    mask = state.allowed(trie)
    assert mask[tok.encode("hello")[0]] and not mask[0]
    assert not mask[tok.encode("\n")[0]]  # raw newline is not allowed in a JSON string
    assert mask.sum() > 60000  # nearly everything fits in a string
