"""Grammar text parsing: the BNF (bnf_sampler) and KBNF dialects, escapes, regex
terminals, except!, and located errors."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai00_trio.grammar import GrammarError, compile_grammar
from ai00_trio.grammar.syntax import detect_dialect
from test_grammar_support import SEED_BNF, SEED_BNF_RE, SEED_KBNF, SEED_KBNF_RE


def accepts(grammar_text: str, dialect: str = "auto"):
    g = compile_grammar(grammar_text, dialect)
    return g.matches


# ------------------------------------------------------------------ KBNF


def test_kbnf_seed_grammar():
    m = accepts(SEED_KBNF)
    assert m('{"name":"Bob","age":42,"job":"dev"}')
    assert m('{"name":"B\\"o\\u00e9","age":-1,"job":""}')
    assert not m('{"name":"Bob","age":42,"job":"dev"')  # incomplete
    assert not m('{"name":"Bob","age":042,"job":"dev"}')
    assert not m('{"age":42,"name":"Bob","job":"dev"}')
    assert not m('{"name":"a\nb","age":1,"job":""}')  # raw control character


def test_kbnf_operators_groups_and_comments():
    m = accepts(r"""
        (* a comment (* not nested *)
        start ::= greeting (', ' name)+ '!'? ;   (* trailing comment *)
        greeting ::= "hi" | 'hello' ;
        name ::= ( "bob" | "al" )* "x" ;
    """)
    assert m("hi, x")
    assert m("hello, bobalx, x!")
    assert not m("hi")
    assert not m("hi, bob")
    assert not m("hey, x")


def test_quantifier_on_a_group_applies_to_the_group_only():
    m = accepts("start ::= 'a' ('b'+)? ('c' 'd'*)*;")
    assert m("a") and m("abbb") and m("acdcdd") and m("abcc")
    assert not m("ad") and not m("abd")


def test_kbnf_iso_ebnf_brackets():
    m = accepts("start ::= 'a' [ 'b' ] { 'c' } ;")
    assert m("a") and m("ab") and m("acc") and m("abccc")
    assert not m("abb")


def test_kbnf_regex_terminals_and_escapes():
    # kbnf-compatible: \\d and \d both reach the regex parser as \d
    m = accepts(r'start ::= #"\\d{2}" #"\d" "\t\x41\u00e9\\" ;')
    assert m("123\tAé\\")
    assert not m("12\tAé\\")
    m = accepts(r"""start ::= #'[^"\\\\]+' ;""")
    assert m("ab c") and not m('a"') and not m("a\\")


def test_kbnf_early_end_and_regex_complement():
    m = accepts('start ::= #e"a+b*" "!" ;')
    assert m("a!") and not m("aa!") and not m("ab!")
    m = accepts('start ::= #ex"[0-9]{2}" ;')
    assert m("1a2") and not m("a12b") and not m("")


def test_kbnf_except_forms():
    m = accepts("start ::= '<' except!('>' | '<') '>' ;")
    assert m("<a b>") and not m("<>") and not m("<a>b>")
    m = accepts("start ::= except!(stop) ; stop ::= 'ab' | 'cd' ;")
    assert m("acdb"[:2]) and not m("xcdx") and not m("abx")
    m = accepts("start ::= except!([stop], 3) ; stop ::= 'ab' ;")
    assert m("aaa") and not m("aaaa") and not m("xab")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abc>", max_size=7))
def test_except_matches_its_definition(text):
    """except!(X) = non-empty text containing no substring in L(X)."""
    assert accepts("start ::= except!('ab' | 'c>');")(text) == (
        text != "" and "ab" not in text and "c>" not in text)
    assert accepts("start ::= except!('ab', 3);")(text) == (
        0 < len(text) <= 3 and "ab" not in text)


REGEXES = [
    r"[0-9]{4}-(0[1-9]|1[0-2])",
    r"(ab|a)*b?",
    r"[^a-c]+x",
    r"a{2,3}|b{0,}",
    r"(\d\.)+\w?",
    r"[a\-c]*\s",
    r"x(y|z)?",
    r".[.]",
]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(REGEXES), st.text(alphabet="abcxyz019-.\\ \n\té", max_size=8))
def test_regex_terminal_matches_python_re(pattern, text):
    g = compile_grammar(f"start ::= #'{pattern}';".replace("\\", "\\\\"))
    assert g.matches(text) == bool(re.fullmatch(pattern, text, re.ASCII)), (pattern, text)


# ------------------------------------------------------------------ BNF


def test_bnf_seed_grammar():
    m = accepts(SEED_BNF)
    assert m('{"name":"Bob","age":42,"job":"dev"}')
    assert m('{"name":"B\\"ob","age":7,"job":""}')
    assert not m('{"name":"B"ob","age":7,"job":""}')
    assert not m('{"name":"Bob","age":,"job":"dev"}')
    for doc in ['{"name":"é\\"","age":0,"job":"x y"}', '{"name":"","age":12,"job":"\\"\\""}']:
        assert m(doc) == bool(SEED_BNF_RE.fullmatch(doc))


def test_bnf_escapes_and_raw_bytes():
    m = accepts('<start> ::= "a\\n" \'\\t\' "\\"\\\\" "\\u00e9" "\\x41"')
    assert m('a\n\t"\\éA')
    g = compile_grammar('<start> ::= "\\xff"')
    assert g.matches(b"\xff")  # \xNN is a raw byte in terminals


def test_bnf_except_string_and_rule():
    m = accepts("<start> ::= '<' <except!('>')> '>'")
    assert m("<abc>") and not m("<a>b>") and not m("<>")
    m = accepts("<start> ::= <except!([stop])>\n<stop> ::= 'x' | 'yz'")
    assert m("aby") and not m("ayz") and not m("x")


def test_bnf_multiline_alternatives_and_left_recursion():
    m = accepts("""<start> ::= <list>
<list> ::= <item>
         | <list> ',' <item>
<item> ::= 'a' | 'b'""")
    assert m("a") and m("a,b,a") and not m("a,") and not m(",a")


def test_dialect_detection_and_cache():
    assert detect_dialect(SEED_BNF) == "bnf"
    assert detect_dialect(SEED_KBNF) == "kbnf"
    assert compile_grammar(SEED_KBNF) is compile_grammar(SEED_KBNF)
    assert compile_grammar(SEED_KBNF, "kbnf") is compile_grammar(SEED_KBNF)
    with pytest.raises(ValueError):
        compile_grammar(SEED_KBNF, "gbnf")


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=6), st.integers(-10**6, 10**6), st.text(max_size=6))
def test_seed_grammars_agree_with_python_regex(name, age, job):
    import json
    doc = ('{"name":' + json.dumps(name, ensure_ascii=False) + ',"age":' + str(age)
           + ',"job":' + json.dumps(job, ensure_ascii=False) + "}")
    assert compile_grammar(SEED_KBNF).matches(doc) == bool(SEED_KBNF_RE.fullmatch(doc))
    assert compile_grammar(SEED_KBNF).matches(doc)
    assert compile_grammar(SEED_BNF).matches(doc) == bool(SEED_BNF_RE.fullmatch(doc))


# ------------------------------------------------------------------ errors

ERRORS = [
    ("kbnf", 'start ::= "a"\nfoo ::= "b";', 1, 14, "missing ';'"),
    ("kbnf", 'start ::= "a;', 1, 11, "unterminated string"),
    ("kbnf", "start ::= foo;", 1, 11, "undefined rule 'foo'"),
    ("kbnf", 'start ::= "a";\nstart ::= "b";', 2, 1, "defined twice"),
    ("kbnf", 'begin ::= "a";', 1, 1, "no 'start' rule"),
    ("kbnf", 'x ::= "a";\nstart ::= #"[a-";', 2, 13, "unterminated character class"),
    ("kbnf", 'start ::= "\\q";', 1, 12, "unknown escape"),
    ("kbnf", 'start ::= ("a" | "b";', 1, 21, "expected ')'"),
    ("kbnf", 'start "a";', 1, 7, "expected '::='"),
    ("kbnf", "start ::= except!(start);", 1, 19, "recursive"),
    ("kbnf", 'start ::= a;\na ::= a "x";', 1, 1, "matches no finite text"),
    ("kbnf", 'start ::= "a" @ "b";', 1, 15, "unexpected '@'"),
    ("kbnf", "start ::= ;", 1, 11, "unexpected ';'"),
    ("kbnf", 'start ::= "a"; (* open', 1, 16, "unterminated comment"),
    ("kbnf", '\n\nstart ::= #"a{3,1}";', 3, 14, "max below min"),
    ("kbnf", "start ::= except!('');", 1, 19, "non-empty"),
    ("kbnf", "start ::= 'a'\n  | 'b'\n  | #'(x';", 3, 7, "missing ')'"),
    ("bnf", '<start> ::= <a>\n<a> ::= "x" <b>', 2, 13, "undefined rule 'b'"),
    ("bnf", '<start> ::= "x\n<a> ::= "y"', 1, 13, "unterminated string"),
    ("bnf", '<start> ::= "x" |\n', 1, 17, "'|' must be followed"),
    ("bnf", '<start> := "x"', 1, 9, "expected '::='"),
    ("bnf", "<start> ::= <except!([start])>", 1, 23, "recursive"),
    ("bnf", "<a> ::= 'x'", 1, 1, "no '<start>' rule"),
]


@pytest.mark.parametrize(("dialect", "text", "line", "column", "message"), ERRORS)
def test_errors_have_line_and_column(dialect, text, line, column, message):
    with pytest.raises(GrammarError) as info:
        compile_grammar(text, dialect)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert message in err.message
    assert str(err).startswith(f"line {line}, column {column}: ")


def test_every_error_is_a_grammar_error():
    """Mangled grammars raise GrammarError (never another exception)."""
    base = SEED_KBNF
    for i, j in itertools.product(range(0, len(base), 7), range(3)):
        mutated = base[:i] + ["", ";", '"'][j] + base[i + 3:]
        try:
            compile_grammar(mutated, "kbnf")
        except GrammarError as exc:
            assert exc.line >= 1 or "start" in exc.message


def test_pathological_grammars_fail_cleanly():
    import time

    for text in ["start ::= " + "(" * 3000 + "'a'" + ")" * 3000 + ";",
                 'start ::= #"(a|b)*a(a|b){20}";',  # exponential DFA
                 'start ::= #"a{1000}{1000}";']:
        started = time.perf_counter()
        with pytest.raises(GrammarError):
            compile_grammar(text)
        assert time.perf_counter() - started < 5.0


def test_a_wide_alternative_compiles_in_linear_time():
    """20,000 alternatives (230 kB of grammar): duplicates are dropped by hashing, not by a scan
    of the alternatives so far (quadratic: half a minute here)."""
    started = time.perf_counter()
    compile_grammar("start ::= " + " | ".join(f'"w{i}x"' for i in range(20000)) + ' | "w7x";')
    assert time.perf_counter() - started < 10


def test_a_compilation_stops_at_its_deadline_or_when_cancelled():
    """The checks sit between rules, AST nodes and DFA states (the text's parse runs whole: its
    length is capped instead), so both stops end the compilation with CompileStopped."""
    import threading

    from ai00_trio.grammar import CompileStop, CompileStopped

    wide = "start ::= " + " | ".join(f'"q{i}z"' for i in range(20000)) + ";"
    with pytest.raises(CompileStopped) as stopped:
        CompileStop(0.05).run(compile_grammar, wide)
    assert stopped.value.timed_out

    stop, outcome = CompileStop(600), []
    thread = threading.Thread(target=lambda: outcome.append(_outcome(stop, wide + " ")))
    thread.start()
    time.sleep(0.05)
    stop.cancel()                     # the client left
    thread.join(timeout=60)
    assert outcome == ["cancelled"]
    assert compile_grammar(wide).start() is not None  # a stopped compilation caches nothing


def _outcome(stop, text: str) -> str:
    from ai00_trio.grammar import CompileStopped

    try:
        stop.run(compile_grammar, text)
    except CompileStopped as error:
        return "timed out" if error.timed_out else "cancelled"
    return "compiled"
