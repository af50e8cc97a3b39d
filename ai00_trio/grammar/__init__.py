"""Grammar-constrained sampling: BNF / KBNF / response_format grammars compiled
to byte-level automata, with token masks computed over a vocabulary byte trie.

    grammar = compile_grammar(text)               # or grammar_from_response_format(obj)
    trie = VocabTrie.from_tokenizer(tokenizer)    # once per tokenizer
    state = grammar.start()
    mask = state.allowed(trie)                    # numpy bool [vocab_size]
    state = state.advance(tokenizer.token_bytes(token_id))
    state.is_complete(), state.is_finished()

See docs/grammar.md.
"""

from __future__ import annotations

from functools import lru_cache

from .compiler import compile_rules
from .errors import GrammarError, GrammarRejected
from .grammar import Grammar, GrammarState
from .json_schema import grammar_from_response_format, json_schema_rules
from .stop import CompileStop, CompileStopped
from .syntax import START_RULE, detect_dialect, parse_bnf, parse_kbnf
from .trie import VocabTrie

DIALECTS = ("auto", "bnf", "kbnf")
GRAMMAR_CACHE_SIZE = 64


def compile_grammar(text: str, dialect: str = "auto") -> Grammar:
    """Compile BNF or KBNF text (cached: LRU keyed by (dialect, text)).

    dialect: "bnf" (`<name> ::= ...`, bnf_sampler style), "kbnf" (`name ::= ...;`)
    or "auto" (bnf when the first rule starts with `<`). Raises GrammarError.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown grammar dialect {dialect!r}; use one of {DIALECTS}")
    if not isinstance(text, str):
        raise GrammarError("the grammar must be a string")
    if dialect == "auto":
        dialect = detect_dialect(text)
    try:
        return _compile_cached(dialect, text)
    except RecursionError:
        raise GrammarError("the grammar is nested too deeply") from None


@lru_cache(maxsize=GRAMMAR_CACHE_SIZE)
def _compile_cached(dialect: str, text: str) -> Grammar:
    rules, offsets = parse_bnf(text) if dialect == "bnf" else parse_kbnf(text)
    return Grammar(compile_rules(rules, START_RULE, text, offsets), source=text, dialect=dialect)


__all__ = [
    "CompileStop",
    "CompileStopped",
    "Grammar",
    "GrammarError",
    "GrammarRejected",
    "GrammarState",
    "VocabTrie",
    "compile_grammar",
    "grammar_from_response_format",
    "json_schema_rules",
]
