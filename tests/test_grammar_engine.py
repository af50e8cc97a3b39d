"""The byte-level recognizer and token masks: masks equal a brute-force check of
every token, EOS exactly at completion, recursion (left, mutual, ambiguous,
nullable), rejection, and the trie."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai00_trio.grammar import (
    GrammarRejected,
    VocabTrie,
    compile_grammar,
    grammar_from_response_format,
)
from test_grammar_support import (
    ARITH_KBNF,
    SEED_BNF,
    SEED_KBNF,
    arith_ok,
    brute_force_mask,
    sample,
    small_trie,
    small_vocab,
    structural_bias,
)

RECURSIVE = {
    "arith": ARITH_KBNF,
    "json_object": None,
    "mutual_left": "start ::= a; a ::= b 'x' | 'y'; b ::= a 'z' | 'w';",
    "ambiguous": "start ::= s; s ::= s s | 'a' | '(' s ')' | '()';",
    "nullable": "start ::= a b 'c'; a ::= 'x'?; b ::= (a 'y')*;",
    "middle": "start ::= p; p ::= '[' p ']' | '[' p ',' p ']' | #'[0-9]';",
}


def grammar(name):
    text = RECURSIVE[name]
    if text is None:
        return grammar_from_response_format({"type": "json_object"})
    return compile_grammar(text)


@pytest.mark.parametrize("name", ["seed_kbnf", "seed_bnf", *RECURSIVE])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_masks_equal_brute_force(name, seed):
    """At every step of a random masked walk, the trie-walk mask equals testing
    every token of the vocabulary separately."""
    g = compile_grammar({"seed_kbnf": SEED_KBNF, "seed_bnf": SEED_BNF}[name]) \
        if name.startswith("seed") else grammar(name)
    vocab = small_vocab()
    trie = small_trie()
    rng = np.random.default_rng(seed)
    bias = structural_bias(vocab)
    state = g.start()
    for _ in range(25):
        mask = state.allowed(trie)
        expected = brute_force_mask(state, vocab)
        diff = np.flatnonzero(mask != expected)
        assert not len(diff), [(vocab[i], mask[i]) for i in diff[:5]]
        ids = np.flatnonzero(mask[1:]) + 1
        if not len(ids):
            break
        token = int(ids[np.argmax(rng.normal(size=len(ids)) + bias[ids])])
        state = state.advance(vocab[token])


def _all_strings(alphabet, max_len):
    for n in range(max_len + 1):
        for t in itertools.product(alphabet, repeat=n):
            yield "".join(t)


def _ambiguous_ok(s: str) -> bool:
    # s ::= s s | 'a' | '(' s ')' | '()'  ==  non-empty sequence of units
    # unit ::= 'a' | '(' seq? ')'
    pos = 0

    def unit() -> bool:
        nonlocal pos
        if s.startswith("a", pos):
            pos += 1
            return True
        if s.startswith("(", pos):
            pos += 1
            while pos < len(s) and s[pos] != ")":
                if not unit():
                    return False
            if s.startswith(")", pos):
                pos += 1
                return True
        return False

    if not s:
        return False
    while pos < len(s):
        if not unit():
            return False
    return True


REFERENCE = {
    "arith": (arith_ok, "1+*()0", 6),
    "mutual_left": (lambda s: bool(re.fullmatch(r"(y|wx)(zx)*", s)), "xyzw", 7),
    "ambiguous": (_ambiguous_ok, "a()", 8),
    "nullable": (lambda s: bool(re.fullmatch(r"x?(x?y)*c", s)), "xyc", 6),
    "middle": (None, None, 0),
}


@pytest.mark.parametrize("name", ["arith", "mutual_left", "ambiguous", "nullable"])
def test_recursive_grammars_match_reference_exhaustively(name):
    g = grammar(name)
    ok, alphabet, n = REFERENCE[name]
    for s in _all_strings(alphabet, n):
        assert g.matches(s) == ok(s), s
        # is_prefix agrees with "some extension within two more symbols matches"
    for s in _all_strings(alphabet, 3):
        extendable = any(ok(s + t) for t in _all_strings(alphabet, 3))
        if extendable:
            assert g.is_prefix(s), s


def test_eos_exactly_when_complete_and_finished():
    g = compile_grammar("start ::= 'ab' | 'abc';")
    trie = VocabTrie([b"", b"a", b"b", b"c", b"ab", b"bc", b"abc", b"x"])
    s0 = g.start()
    m0 = s0.allowed(trie)
    assert list(np.flatnonzero(m0)) == [1, 4, 6]  # a, ab, abc
    s1 = s0.advance(b"ab")
    m1 = s1.allowed(trie)
    assert m1[0] and s1.is_complete() and not s1.is_finished()
    assert list(np.flatnonzero(m1)) == [0, 3]
    s2 = s1.advance(b"c")
    assert s2.is_finished() and list(np.flatnonzero(s2.allowed(trie))) == [0]
    assert s0.advance(b"") is s0
    with pytest.raises(GrammarRejected):
        s0.advance(b"x")
    with pytest.raises(GrammarRejected):
        s2.advance(b"c")
    # states are immutable and shared: advancing does not change the original
    assert not s0.is_complete() and s0.advance(b"a").advance(b"b") is s1


def test_trie_without_eos_and_with_duplicates():
    trie = VocabTrie([b"a", b"b", b"a", b"ab", b""], eos_id=None)
    g = compile_grammar("start ::= 'a' 'b'?;")
    m = g.start().allowed(trie)
    assert list(m) == [True, False, True, True, False]
    assert trie.eos_id is None
    assert VocabTrie([b"", b"x"]).eos_id == 0
    assert VocabTrie([b"y", b"x"]).eos_id is None


def test_shortest_completion():
    g = grammar("arith")
    st_ = g.start().advance(b"((1+2*(3")
    rest = st_.shortest_completion()
    assert rest == b")))"
    assert g.matches(b"((1+2*(3" + rest)
    g = grammar_from_response_format({"type": "json_object"})
    prefix = b'{"a":[{"b":[1,{"c":"x'
    rest = g.start().advance(prefix).shortest_completion()
    assert rest == b'"}]}]}'


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_deep_json_is_handled_by_the_stack(seed):
    """Random deeply nested JSON: masks stay exact (brute force) at each step."""
    import json

    g = grammar_from_response_format({"type": "json_object"})
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 12))
    doc, inside = "{", "{"
    for i in range(depth):
        opener = "[" if rng.random() < 0.5 else "{"
        doc += (f'"k{i}":' if inside == "{" else "") + opener
        inside = opener
    state = g.start().advance(doc.encode())
    rest = state.shortest_completion()
    json.loads(doc + rest.decode())
    vocab = small_vocab()
    mask = state.allowed(small_trie())
    assert (mask == brute_force_mask(state, vocab)).all()


def test_sampling_small_vocab_yields_sentences():
    for name in ("arith", "mutual_left", "middle"):
        g = grammar(name)
        for seed in range(5):
            out = sample(g, small_trie(), small_vocab(), seed, max_steps=30)
            assert g.matches(out)
            if name == "arith":
                assert arith_ok(out.decode())


# ------------------------------------------------------------------ random grammars

_RULES = ("start", "r1", "r2")


def _exprs():
    leaf = st.one_of(
        st.sampled_from(["'a'", "'b'", "'ab'", "''"]),
        st.sampled_from(_RULES),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: ("seq", xs)),
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: ("alt", xs)),
            st.tuples(st.sampled_from("?*+"), inner).map(lambda t: ("rep", t[0], t[1])),
        ),
        max_leaves=int(__import__("os").environ.get("GRAMMAR_FUZZ_LEAVES", "5")),
    )


def _render(e) -> str:
    if isinstance(e, str):
        return e
    if e[0] == "seq":
        return "(" + " ".join(_render(x) for x in e[1]) + ")"
    if e[0] == "alt":
        return "(" + " | ".join(_render(x) for x in e[1]) + ")"
    return "(" + _render(e[2]) + ")" + e[1]


def _spans(e, s, env):
    """Set of (i, j) with s[i:j] in L(e), given rule spans `env` (independent of the
    package: plain set algebra)."""
    n = len(s)
    if isinstance(e, str):
        if e in _RULES:
            return env[e]
        lit = e[1:-1]
        return {(i, i + len(lit)) for i in range(n + 1) if s.startswith(lit, i)}
    if e[0] == "alt":
        out = set()
        for x in e[1]:
            out |= _spans(x, s, env)
        return out
    if e[0] == "seq":
        cur = {(i, i) for i in range(n + 1)}
        for x in e[1]:
            nxt = _spans(x, s, env)
            cur = {(i, k) for i, j in cur for j2, k in nxt if j == j2}
        return cur
    op, inner = e[1], _spans(e[2], s, env)
    ident = {(i, i) for i in range(n + 1)}
    if op == "?":
        return ident | inner
    closure = set(inner)
    while True:
        more = {(i, k) for i, j in closure for j2, k in inner if j == j2} - closure
        if not more:
            break
        closure |= more
    return closure | ident if op == "*" else closure


def _reference_matches(rules, s) -> bool:
    env = {r: set() for r in _RULES}
    while True:
        new = {r: _spans(rules[r], s, env) for r in _RULES}
        if new == env:
            return (0, len(s)) in env["start"]
        env = new


@settings(max_examples=int(__import__("os").environ.get("GRAMMAR_FUZZ", "150")), deadline=None)
@given(st.fixed_dictionaries({r: _exprs() for r in _RULES}))
def test_random_grammars_match_a_set_based_reference(rules):
    """Random (often recursive, ambiguous, nullable) KBNF grammars accept exactly the
    strings a least-fixpoint span computation accepts; masks match brute force."""
    from ai00_trio.grammar import GrammarError

    text = "\n".join(f"{r} ::= {_render(rules[r])};" for r in _RULES)
    strings = list(_all_strings("ab", 5))
    expected = [_reference_matches(rules, s) for s in strings]
    try:
        g = compile_grammar(text)
    except GrammarError as exc:
        assert "matches no finite text" in exc.message, (text, exc)
        assert not any(expected), text
        return
    got = [g.matches(s) for s in strings]
    assert got == expected, (text, [s for s, a, b in zip(strings, got, expected) if a != b])
    vocab = [b""] + [x.encode() for x in _all_strings("ab", 3) if x]
    trie = VocabTrie(vocab)
    for prefix in ("", "a", "ab", "ba"):
        if g.is_prefix(prefix):
            state = g.start().advance(prefix.encode())
            assert (state.allowed(trie) == brute_force_mask(state, vocab)).all(), (text, prefix)


def test_a_mask_past_its_deadline_stops_and_frees_the_lock():
    """A mask that runs past its deadline ends its own walk (so the worker thread computing it
    ends and releases the grammar's lock, shared by every request with that grammar)."""
    import time

    from ai00_trio.grammar.errors import MaskDeadline

    state = compile_grammar(ARITH_KBNF).start()
    trie = small_trie()
    with pytest.raises(MaskDeadline):
        state.allowed(trie, deadline=time.monotonic() - 1)
    assert state.grammar._lock.acquire(blocking=False)
    state.grammar._lock.release()
    assert state.allowed(trie).any()  # nothing half-made was kept
