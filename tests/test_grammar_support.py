"""Shared helpers for the grammar tests (imported by tests/test_grammar_*.py).

Holds the World tokenizer / trie (built once per session), a masked sampler, a
brute-force mask check, independent recognizers and hypothesis strategies.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from ai00_trio.grammar import VocabTrie
from ai00_trio.tokenizer import WorldTokenizer

ROOT = Path(__file__).resolve().parents[1]
WORLD_VOCAB = ROOT / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"

# The AI00 README example (a JSON object with name, age and job), in both dialects.
SEED_KBNF = (ROOT / "assets" / "grammars" / "name_age_job.kbnf").read_text()
SEED_BNF = (ROOT / "assets" / "grammars" / "name_age_job.bnf").read_text()

# Python regexes over str equivalent to the seed grammars (independent check)
SEED_KBNF_RE = re.compile(
    r'\{"name":"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*",'
    r'"age":-?(?:0|[1-9][0-9]*),'
    r'"job":"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"\}', re.S)
SEED_BNF_RE = re.compile(
    r'\{"name":"(?:[^"\\\x00-\x1f]|\\")*","age":(?:0|[1-9][0-9]*),"job":"(?:[^"\\\x00-\x1f]|\\")*"\}',
    re.S)

DATE_KBNF = r'start ::= #"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])";'
DATE_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")

ARITH_KBNF = r"""
start  ::= expr;
expr   ::= term (('+' | '-') term)*;
term   ::= factor (('*' | '/') factor)*;
factor ::= #"0|[1-9][0-9]*" | '(' expr ')';
"""


# ------------------------------------------------------------------ vocabularies


@lru_cache(maxsize=None)
def world_tokenizer() -> WorldTokenizer:
    return WorldTokenizer(WORLD_VOCAB)


@lru_cache(maxsize=None)
def world_trie() -> VocabTrie:
    return VocabTrie.from_tokenizer(world_tokenizer())


BYTE_VOCAB = tuple(bytes([b]) for b in range(256))


@lru_cache(maxsize=None)
def byte_trie() -> VocabTrie:
    return VocabTrie(BYTE_VOCAB, eos_id=None)


@lru_cache(maxsize=None)
def small_vocab() -> tuple[bytes, ...]:
    """Id 0 = EOS (empty), all 256 single bytes, 3000 random World tokens and every
    World token made only of JSON/arithmetic punctuation and digits (the tokens
    that cross rule boundaries)."""
    tb = world_tokenizer().all_token_bytes
    rng = np.random.default_rng(1234)
    picks = rng.choice(np.arange(257, 65530), 3000, replace=False)
    punct = set(b'{}[]":,()+-*/0123456789xyzw')
    structural = {b for b in tb if len(b) > 1 and set(b) <= punct}
    extra = sorted({tb[i] for i in picks if tb[i] and len(tb[i]) > 1} | structural)
    singles = [bytes([b]) for b in range(256)]
    return (b"",) + tuple(singles) + tuple(extra)


@lru_cache(maxsize=None)
def small_trie() -> VocabTrie:
    return VocabTrie(small_vocab())


# ------------------------------------------------------------------ sampling


def structural_bias(token_bytes) -> np.ndarray:
    """Favour tokens that close things, so sampled documents stay short."""
    bias = np.array([3.0 if any(c in b for c in b'",}])') else 0.0 for b in token_bytes])
    if len(token_bytes) and not token_bytes[0]:
        bias[0] = 3.0
    return bias


def sample(grammar, trie: VocabTrie, token_bytes, seed: int, max_steps: int = 120,
           bias: np.ndarray | None = None, check_eos: bool = True) -> bytes:
    """Sample with random logits under the mask until end-of-text (or, without an
    EOS id, until complete and a coin says stop). After max_steps the document is
    closed with the grammar's shortest completion, one allowed byte token at a
    time. Asserts the mask invariants at every step."""
    rng = np.random.default_rng(seed)
    state = grammar.start()
    out = bytearray()
    eos = trie.eos_id
    single = {b[0]: i for i, b in enumerate(token_bytes) if len(b) == 1}
    for step in range(max_steps + 10_000):
        mask = state.allowed(trie)
        if eos is not None and check_eos:
            assert mask[eos] == state.is_complete()
        if state.is_finished():
            assert mask.sum() == (1 if eos is not None else 0)
            break
        ids = np.flatnonzero(mask)
        assert len(ids), f"no token allowed after {bytes(out)!r}"
        if eos is None and state.is_complete() and rng.random() < 0.3:
            break
        if step >= max_steps:
            rest = state.shortest_completion()
            if rest == b"":
                if eos is not None:
                    assert mask[eos]
                break
            token = single[rest[0]]
            assert mask[token], (bytes(out), rest)
        else:
            logits = rng.normal(size=len(ids)) * 2.0
            if bias is not None:
                logits += bias[ids]
            token = int(ids[np.argmax(logits)])
        if token == eos:
            break
        out += token_bytes[token]
        state = state.advance(token_bytes[token])
    assert state.is_complete(), bytes(out)
    return bytes(out)


def check_reachable(grammar, trie: VocabTrie, token_ids, token_bytes, complete_prefix=None) -> None:
    """Every token of `token_ids` is allowed in turn; EOS only when complete (and,
    with `complete_prefix(bytes) -> bool`, exactly at independently complete prefixes)."""
    state = grammar.start()
    prefix = b""
    for tid in token_ids:
        mask = state.allowed(trie)
        assert mask[tid], f"token {token_bytes[tid]!r} refused after {prefix!r}"
        if trie.eos_id is not None:
            assert mask[trie.eos_id] == state.is_complete()
        if complete_prefix is not None:
            assert state.is_complete() == complete_prefix(prefix), prefix
        state = state.advance(token_bytes[tid])
        prefix += token_bytes[tid]
    assert state.is_complete(), prefix
    if trie.eos_id is not None:
        assert state.allowed(trie)[trie.eos_id]


def brute_force_mask(state, vocab) -> np.ndarray:
    """The mask by testing every token separately (the slow, obvious way)."""
    return np.array([state.accepts(b) if b else state.is_complete() for b in vocab])


# ------------------------------------------------------------------ recognizers


def arith_ok(s: str) -> bool:
    """Recursive-descent recognizer for ARITH_KBNF, written independently."""
    pos = 0

    def number() -> bool:
        nonlocal pos
        m = re.match(r"0|[1-9][0-9]*", s[pos:])
        if not m:
            return False
        pos += m.end()
        return True

    def factor() -> bool:
        nonlocal pos
        if s.startswith("(", pos):
            pos += 1
            if not expr() or not s.startswith(")", pos):
                return False
            pos += 1
            return True
        return number()

    def term() -> bool:
        nonlocal pos
        if not factor():
            return False
        while pos < len(s) and s[pos] in "*/":
            pos += 1
            if not factor():
                return False
        return True

    def expr() -> bool:
        nonlocal pos
        if not term():
            return False
        while pos < len(s) and s[pos] in "+-":
            pos += 1
            if not term():
                return False
        return True

    return expr() and pos == len(s)


def arith_expressions():
    """Hypothesis strategy for sentences of ARITH_KBNF."""
    number = st.one_of(st.just("0"), st.integers(1, 10**6).map(str))
    return st.recursive(
        number,
        lambda inner: st.one_of(
            inner.map(lambda e: f"({e})"),
            st.tuples(inner, st.sampled_from("+-*/"), inner).map(lambda t: "".join(t)),
        ),
        max_leaves=12,
    )


# ------------------------------------------------------------------ JSON schemas


def compact(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_KEYS = st.text(alphabet="abcxyz_é\"\\ 1", min_size=1, max_size=5)
_LEAVES = st.sampled_from([
    {"type": "string"},
    {"type": "string", "maxLength": 3},
    {"type": "string", "minLength": 2, "maxLength": 4},
    {"type": "integer"},
    {"type": "integer", "minimum": 0},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"enum": ["red", "green", 7, None, "a \"q\""]},
    {"const": {"k": [1, "x"]}},
    {"type": "string", "format": "date"},
    {"type": "string", "pattern": "^[A-Z][a-z]{1,3}$"},
    {"type": ["string", "null"]},
])


@st.composite
def _objects(draw, children):
    props = draw(st.dictionaries(_KEYS, children, max_size=4))
    required = [k for k in props if draw(st.booleans())]
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


@st.composite
def _arrays(draw, children):
    schema = {"type": "array", "items": draw(children)}
    lo = draw(st.integers(0, 2))
    if draw(st.booleans()):
        schema["minItems"] = lo
    if draw(st.booleans()):
        schema["maxItems"] = lo + draw(st.integers(0, 3))
    return schema


def schemas():
    """Hypothesis strategy for schemas in the supported subset."""
    return st.recursive(
        _LEAVES,
        lambda children: st.one_of(
            _objects(children),
            _arrays(children),
            st.lists(children, min_size=1, max_size=3).map(lambda bs: {"anyOf": bs}),
        ),
        max_leaves=8,
    )


def _text(lo: int = 0, hi: int | None = 8):
    return st.text(min_size=lo, max_size=hi if hi is not None else 8)


def instances(schema):
    """Hypothesis strategy for JSON values valid under `schema` (supported subset),
    as Python objects whose dict key order follows the schema's property order."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([instances(s) for s in schema["anyOf"]])
    t = schema.get("type")
    if isinstance(t, list):
        return st.one_of([instances({**schema, "type": x}) for x in t])
    if t == "string":
        if schema.get("format") == "date":
            return st.dates().map(lambda d: d.isoformat())
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return _text(schema.get("minLength", 0), schema.get("maxLength"))
    if t == "integer":
        return st.integers(schema.get("minimum", -10**9), 10**9)
    if t == "number":
        return st.one_of(st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False))
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array":
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems", lo + 3)
        return st.lists(instances(schema["items"]), min_size=lo, max_size=hi)
    if t == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {k: instances(v) for k, v in props.items() if k in required}
        optional = {k: instances(v) for k, v in props.items() if k not in required}
        order = list(props)
        return st.fixed_dictionaries(fixed, optional=optional).map(
            lambda d: {k: d[k] for k in order if k in d})
    raise AssertionError(f"unsupported schema in test strategy: {schema}")
