"""Parsers (parsimonious PEGs) for the two grammar dialects AI00 has accepted:

* BNF, as in bnf_sampler (AI00 < 0.5): `<name> ::= <a> "x" | 'y'`, one rule per
  line(s), start rule `<start>`, `<except!([name])>` / `<except!('text')>`.
* KBNF, as in kbnf (AI00 >= 0.5): `name ::= a "x" | ('y' z)* ;`, start rule
  `start`, `#"regex"`, `#e"regex"`, `#ex"regex"`, `except!(...)`, `(* comments *)`.

Both produce {rule name: AST}; see docs/grammar.md for the exact syntax.
"""

from __future__ import annotations

import re

from parsimonious.exceptions import IncompleteParseError, ParseError
from parsimonious.expressions import Literal
from parsimonious.grammar import Grammar as PEG
from parsimonious.nodes import Node

from .errors import GrammarError, error_at
from .expr import (
    EMPTY,
    EarlyEnd,
    Except,
    Expr,
    Lit,
    Ref,
    Repeat,
    alt,
    seq,
)
from .regex import RegexSyntaxError, parse_regex
from .stop import check_stop

START_RULE = "start"

_COMMON = r"""
    alternation = sequence (ws bar ws sequence)*
    sequence    = item (ws item)*
    item        = primary quantifier?
    quantifier  = "?" / "*" / "+"
    bar         = "|"
    string      = dq_string / sq_string / bad_string
    dq_string   = ~'"(?:[^"\\\\\\n]|\\\\.)*"'
    sq_string   = ~"'(?:[^'\\\\\\n]|\\\\.)*'"
    bad_string  = ~"[\"'][^\\n]*"
    integer     = ~"[0-9]+"
    close_paren = ")"
"""

KBNF_PEG = PEG(r"""
    grammar     = ws rule*
    rule        = rule_name ws defined_as ws alternation ws semicolon ws
    rule_name   = ~"[A-Za-z_][A-Za-z0-9_.\\-]*"
    defined_as  = "::="
    semicolon   = ";"
    primary     = group / optional / repetition / except / regex / string / ref
    group       = "(" ws alternation ws close_paren
    optional    = "[" ws alternation ws "]"
    repetition  = "{" ws alternation ws "}"
    except      = "except!" ws "(" ws except_arg ws except_limit? close_paren
    except_arg  = ("[" ws ref ws "]") / alternation
    except_limit = "," ws integer ws
    regex       = "#" regex_kind string
    regex_kind  = ~"(ex|e)?"
    ref         = name !(ws "::=")
    name        = ~"[A-Za-z_][A-Za-z0-9_.\\-]*"
    ws          = ~"(?:\\s+|\\(\\*[\\s\\S]*?\\*\\))*"
""" + _COMMON)

BNF_PEG = PEG(r"""
    grammar     = ws rule*
    rule        = rule_name ws defined_as ws alternation ws semicolon? ws
    rule_name   = "<" name ">"
    defined_as  = "::="
    semicolon   = ";"
    primary     = group / except / string / ref
    group       = "(" ws alternation ws close_paren
    except      = "<except!(" ws except_arg ws except_limit? ")>"
    except_arg  = ("[" ws name ws "]") / string
    except_limit = "," ws integer ws
    ref         = "<" name ">" !(ws "::=")
    name        = ~"[^<>\\s()\\[\\]!|\"']+"
    ws          = ~"\\s*"
""" + _COMMON)

_FRIENDLY = {
    "rule": "a rule",
    "rule_name": "a rule name",
    "defined_as": "'::='",
    "semicolon": "';'",
    "alternation": "a terminal, a rule name or a group",
    "sequence": "a terminal, a rule name or a group",
    "item": "a terminal, a rule name or a group",
    "primary": "a terminal, a rule name or a group",
    "close_paren": "')'",
    "except_arg": "a string or [rule] inside except!(...)",
    "integer": "a number",
    "string": "a quoted string",
    "name": "a name",
}


# ------------------------------------------------------------------ strings


def _unescape(text: str, body_start: int, body: str) -> bytes:
    r"""Decode a quoted terminal body: \n \r \t \0 \" \' \\ \/ \xNN (a raw byte),
    \uNNNN, \u{N..}, \UNNNNNNNN; other characters are UTF-8 encoded."""
    out = bytearray()
    i = 0
    n = len(body)
    simple = {"n": 10, "r": 13, "t": 9, "0": 0, "f": 12, "v": 11, "b": 8, "a": 7, "e": 27,
              '"': 34, "'": 39, "\\": 92, "/": 47}
    while i < n:
        c = body[i]
        if c != "\\":
            j = body.find("\\", i)
            j = n if j < 0 else j
            out += body[i:j].encode("utf-8")
            i = j
            continue
        if i + 1 >= n:
            raise error_at(text, body_start + i, "string ends with a lone backslash")
        e = body[i + 1]
        if e in simple:
            out.append(simple[e])
            i += 2
            continue
        if e in "xuU":
            if body.startswith("{", i + 2):
                end = body.find("}", i + 2)
                digits = body[i + 3:end] if end > 0 else ""
                width = (end + 1 - i) if end > 0 else 0
            else:
                k = {"x": 2, "u": 4, "U": 8}[e]
                digits = body[i + 2:i + 2 + k]
                width = 2 + k
                if len(digits) != k:
                    digits = ""
            if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
                raise error_at(text, body_start + i, f"bad \\{e} escape in string")
            v = int(digits, 16)
            if e == "x" and not body.startswith("{", i + 2):
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise error_at(text, body_start + i, f"\\{e} escape is not a Unicode scalar value")
                out += chr(v).encode("utf-8")
            i += width
            continue
        raise error_at(text, body_start + i, f"unknown escape \\{e} in string")
    return bytes(out)


def _regex_source(body: str) -> tuple[str, list[int]]:
    r"""KBNF-level unescape of a regex literal: \\ -> \, \" -> ", \' -> '; every
    other escape is left for the regex parser. Returns (pattern, source offset of
    each pattern character relative to the body)."""
    out = []
    where = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in "\\\"'":
            out.append(body[i + 1])
            where.append(i)
            i += 2
            continue
        out.append(c)
        where.append(i)
        i += 1
    return "".join(out), where


# ------------------------------------------------------------------ tree helpers


def _find(node: Node, name: str) -> list[Node]:
    """Descendants named `name`, not descending into matches."""
    out = []
    stack = list(reversed(node.children))
    while stack:
        n = stack.pop()
        if n.expr_name == name:
            out.append(n)
        else:
            stack.extend(reversed(n.children))
    return out


class _Builder:
    def __init__(self, text: str, dialect: str) -> None:
        self.text = text
        self.dialect = dialect

    def fail(self, offset: int, message: str) -> GrammarError:
        return error_at(self.text, offset, message)

    def rules(self, tree: Node) -> dict[str, Expr]:
        rules: dict[str, Expr] = {}
        first_at: dict[str, int] = {}
        for rule in _find(tree, "rule"):
            name_node = _find(rule, "rule_name")[0]
            name = _find(name_node, "name")[0].text if self.dialect == "bnf" else name_node.text
            if name in rules:
                line = self.text.count("\n", 0, first_at[name]) + 1
                raise self.fail(name_node.start, f"rule '{name}' is defined twice (first on line {line})")
            first_at[name] = name_node.start
            rules[name] = self.alternation(_find(rule, "alternation")[0])
        self.offsets = first_at
        return rules

    def alternation(self, node: Node) -> Expr:
        check_stop()
        return alt(*(self.sequence(s) for s in _find(node, "sequence")))

    def sequence(self, node: Node) -> Expr:
        return seq(*(self.item(i) for i in _find(node, "item")))

    def item(self, node: Node) -> Expr:
        # item = primary quantifier?  (direct children only: groups nest items)
        primary_node, optional = node.children
        primary = self.primary(primary_node)
        if optional.text:
            lo, hi = {"?": (0, 1), "*": (0, None), "+": (1, None)}[optional.text]
            return Repeat(primary, lo, hi)
        return primary

    def primary(self, node: Node) -> Expr:
        inner = node.children[0]
        kind = inner.expr_name
        if kind == "group":
            return self.alternation(_find(inner, "alternation")[0])
        if kind == "optional":
            return Repeat(self.alternation(_find(inner, "alternation")[0]), 0, 1)
        if kind == "repetition":
            return Repeat(self.alternation(_find(inner, "alternation")[0]), 0, None)
        if kind == "string":
            return Lit(self.string(inner))
        if kind == "ref":
            return Ref(_find(inner, "name")[0].text, inner.start)
        if kind == "regex":
            return self.regex(inner)
        if kind == "except":
            return self.except_(inner)
        raise self.fail(inner.start, f"unexpected {inner.text!r}")  # pragma: no cover

    def string(self, node: Node) -> bytes:
        real = node.children[0]
        if real.expr_name == "bad_string":
            raise self.fail(real.start, "unterminated string literal (use \\n for a newline)")
        return _unescape(self.text, real.start + 1, real.text[1:-1])

    def regex(self, node: Node) -> Expr:
        kind = _find(node, "regex_kind")[0].text
        s = _find(node, "string")[0].children[0]
        if s.expr_name == "bad_string":
            raise self.fail(s.start, "unterminated regex literal")
        pattern, where = _regex_source(s.text[1:-1])
        try:
            expr = parse_regex(pattern)
        except RegexSyntaxError as exc:
            k = min(exc.offset, len(where) - 1) if where else 0
            off = s.start + 1 + (where[k] if where else 0)
            if exc.offset >= len(where):
                off = s.end - 1
            raise self.fail(off, f"bad regex: {exc.message}") from None
        if kind == "e":
            return EarlyEnd(expr, node.start)
        if kind == "ex":
            return Except(expr, None, node.start)
        return expr

    def except_(self, node: Node) -> Expr:
        arg = _find(node, "except_arg")[0]
        if self.dialect == "bnf":
            names = _find(arg, "name")
            if names:
                inner: Expr = Ref(names[0].text, names[0].start)
            else:
                inner = Lit(self.string(_find(arg, "string")[0]))
        else:
            choice = arg.children[0]
            refs = _find(choice, "ref") if choice.expr_name != "alternation" else []
            if refs:
                inner = Ref(_find(refs[0], "name")[0].text, refs[0].start)
            else:
                inner = self.alternation(_find(arg, "alternation")[0])
        if inner == EMPTY:
            raise self.fail(arg.start, "except! needs a non-empty string or a rule")
        limit = None
        lim = _find(node, "except_limit")
        if lim:
            limit = int(_find(lim[0], "integer")[0].text)
        return Except(inner, limit, node.start)


_STRING_START = re.compile(r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")


def _first_bad_string(text: str, pos: int, end: int) -> int | None:
    """Offset of the first quote in text[pos:end+1] that opens no valid string."""
    i = pos
    while i <= end and i < len(text):
        c = text[i]
        if c in "\"'":
            m = _STRING_START.match(text, i)
            if not m:
                return i
            i = m.end()
        elif text.startswith("(*", i):
            j = text.find("*)", i + 2)
            if j < 0:
                return None
            i = j + 2
        else:
            i += 1
    return None


def _describe_failure(text: str, peg: PEG, pos: int, dialect: str) -> GrammarError:
    """Turn a failed parse (the first unparsable rule starts at `pos`) into an error
    located at the furthest point the parser reached."""
    try:
        peg["rule"].match(text, pos)
    except ParseError as exc:
        where = exc.pos
        expr = exc.expr
    else:  # pragma: no cover - the rule matched, so rule* stopped for another reason
        where, expr = pos, None
    name = getattr(expr, "name", "") or ""
    rest = text[where:]
    if isinstance(expr, Literal) and not name:
        expected = repr(expr.literal)
    else:
        expected = _FRIENDLY.get(name, "a rule")
    token = re.match(r"\S+", rest)
    shown = token.group(0)[:20] if token else rest[:1]
    if rest.startswith("(*"):
        return error_at(text, where, "unterminated comment")
    if rest.startswith(("<any!>", "any!")):
        return error_at(text, where, "any! is not supported (it matches single vocabulary "
                                     "tokens, which a byte-level grammar cannot express)")
    bad = _first_bad_string(text, pos, where)
    if bad is not None:
        return error_at(text, bad, "unterminated string literal (use \\n for a newline)")
    if rest.startswith("|") and where == pos:
        return error_at(text, where, "'|' must be followed by an alternative")
    starts_rule = (
        re.match(r"\s*<[^<>\s]+>\s*::=", rest) if dialect == "bnf"
        else re.match(r"\s*[A-Za-z_][A-Za-z0-9_.\-]*\s*::=", rest)
    )
    if name == "semicolon" or (starts_rule and where > pos and dialect == "kbnf"):
        if starts_rule or not rest.strip():
            back = where
            while back > 0 and text[back - 1].isspace():
                back -= 1
            return error_at(text, back, "missing ';' at the end of the rule")
        return error_at(text, where, f"unexpected {shown!r}, expected a terminal, a rule name, "
                                     "a group, '|' or ';'")
    if not rest.strip():
        return error_at(text, where, f"unexpected end of grammar, expected {expected}")
    return error_at(text, where, f"unexpected {shown!r}, expected {expected}")


def _parse_with(text: str, peg: PEG, dialect: str) -> tuple[dict[str, Expr], dict[str, int]]:
    try:
        tree = peg.parse(text)
    except IncompleteParseError as exc:
        raise _describe_failure(text, peg, exc.pos, dialect) from None
    except ParseError as exc:  # pragma: no cover - grammar = ws rule* always matches
        raise error_at(text, exc.pos, "syntax error") from None
    builder = _Builder(text, dialect)
    rules = builder.rules(tree)
    if not rules:
        raise GrammarError("the grammar has no rules", 1, 1)
    if START_RULE not in rules:
        name = "<start>" if dialect == "bnf" else "start"
        raise GrammarError(f"the grammar has no '{name}' rule", 1, 1)
    return rules, builder.offsets


def parse_kbnf(text: str) -> tuple[dict[str, Expr], dict[str, int]]:
    """Parse KBNF text into ({rule name: AST}, {rule name: offset of its definition})."""
    return _parse_with(text, KBNF_PEG, "kbnf")


def parse_bnf(text: str) -> tuple[dict[str, Expr], dict[str, int]]:
    """Parse bnf_sampler-style BNF text; returns what parse_kbnf returns."""
    return _parse_with(text, BNF_PEG, "bnf")


def detect_dialect(text: str) -> str:
    """"bnf" when the first rule is written `<name> ::=`, else "kbnf"."""
    stripped = re.sub(r"\(\*[\s\S]*?\*\)", " ", text).lstrip()
    return "bnf" if stripped.startswith("<") else "kbnf"
