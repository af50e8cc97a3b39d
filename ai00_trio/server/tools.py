"""OpenAI tool calling: a request's `tools` / `tool_choice` checked and turned into the system
turn's tool list and a grammar under which every call the model writes is well formed and its
arguments match the function's parameters schema; the answer parsed back into tool calls.

tool_choice "auto" lets the model write text, then optionally calls; "required" and a named
function make the answer calls only; "none" (and no tools) leaves tools out of the prompt and
the output free. The syntax is tool_syntax.py's.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import trio

from ..grammar import Grammar, GrammarError, json_schema_rules
from ..grammar.compiler import compile_rules
from ..grammar.expr import Except, Ref, alt, lit, opt, seq, star
from . import schemas as s
from .errors import bad_request
from .text import ChatTrim
from .tool_syntax import ARGUMENTS_KEY, CALL_OPEN, NAME_KEY, call_head, call_tail, render_tool_list

MAX_TOOLS = 128  # OpenAI's limit
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
NO_PARAMETERS = {"type": "object", "properties": {}}
TURN_END = "\n\n"  # RWKV World's end of a turn, which may follow the last of several calls


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools change: the system turn's text and the output grammar."""
    prompt: str
    grammar: Grammar


class _SchemaError(Exception):
    def __init__(self, index: int, name: str, reason: str) -> None:
        super().__init__(reason)
        self.index, self.name, self.reason = index, name, reason


async def tool_plan(body: s.ChatCompletionRequest) -> ToolPlan | None:
    """A chat request's tool plan, or None when the model is not offered tools (none given, or
    tool_choice "none"). Bad tools or tool_choice are 400s naming them."""
    tools = body.tools or []
    if len(tools) > MAX_TOOLS:
        raise bad_request(f"at most {MAX_TOOLS} tools", param="tools")
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise bad_request(f"tools[{i}].type must be \"function\", not {tool.type!r}", param=f"tools[{i}].type")
    choice = body.tool_choice
    named = None
    if isinstance(choice, s.NamedToolChoice):
        if choice.type != "function":
            raise bad_request(f"tool_choice.type must be \"function\", not {choice.type!r}", param="tool_choice")
        named = choice.function.name
    return await plan_tools([tool.function for tool in tools], choice if named is None else None, named,
                            body.parallel_tool_calls, _grammar_field(body), lambda i: f"tools[{i}].function")


async def plan_tools(functions: list[s.FunctionDefinition], choice: str | None, named: str | None,
                     parallel: bool, grammar_field: str | None, where: Callable[[int], str]) -> ToolPlan | None:
    """The plan for `functions` under tool_choice `choice` ("none", "auto", "required") or the
    function `named`; `grammar_field` names another output grammar the request gives (which
    tools exclude), `where(i)` the request's path to function i (for errors)."""
    _check_functions(functions, where)
    if not functions:
        if named is not None or choice not in (None, "none", "auto"):
            raise bad_request("tool_choice needs tools to choose from", param="tool_choice")
        return None
    if choice == "none":
        return None
    if named is not None:
        names = [f.name for f in functions]
        if named not in names:
            raise bad_request(f"tool_choice names the function {named!r}, which is not in tools "
                              f"({', '.join(names)})", param="tool_choice")
    if grammar_field is not None:
        raise bad_request(f"{grammar_field} cannot be combined with tools the model may call (tool_choice \"none\" "
                          "allows it)", param=grammar_field)
    forced = choice == "required" or named is not None
    callable_ = [(i, f) for i, f in enumerate(functions) if named in (None, f.name)]
    key = json.dumps({"tools": [[i, f.name, _arguments_schema(_parameters(f))] for i, f in callable_],
                      "auto": not forced, "parallel": parallel})
    try:
        grammar = await trio.to_thread.run_sync(_tool_grammar, key)
    except _SchemaError as error:
        raise bad_request(f"tools[{error.index}] ({error.name}): the grammar engine cannot compile its parameters "
                          f"schema: {error.reason}", param=f"{where(error.index)}.parameters",
                          code="invalid_grammar") from None
    except GrammarError as error:
        raise bad_request(f"tools: the grammar engine cannot compile them: {error}", param="tools",
                          code="invalid_grammar") from None
    prompt = render_tool_list([(f.name, f.description, _parameters(f)) for f in functions], named, forced)
    return ToolPlan(prompt, grammar)


def _grammar_field(body: s.SamplingFields) -> str | None:
    if body.bnf_schema is not None:
        return "bnf_schema"
    return "response_format" if body.response_format not in (None, {"type": "text"}) else None


def _check_functions(functions: list[s.FunctionDefinition], where: Callable[[int], str]) -> None:
    if len(functions) > MAX_TOOLS:
        raise bad_request(f"at most {MAX_TOOLS} tools", param="tools")
    seen: set[str] = set()
    for i, function in enumerate(functions):
        name = function.name
        if not NAME_PATTERN.fullmatch(name):
            raise bad_request(f"{where(i)}.name {name!r} must be 1 to 64 letters, digits, _ or -",
                              param=f"{where(i)}.name")
        if name in seen:
            raise bad_request(f"{where(i)}.name {name!r} is given twice", param=f"{where(i)}.name")
        seen.add(name)
        kind = (function.parameters or {}).get("type", "object")
        if kind != "object":
            raise bad_request(f"{where(i)}.parameters must be an object schema (type \"object\"), "
                              f"not {kind!r}", param=f"{where(i)}.parameters")


def _parameters(function: s.FunctionDefinition) -> dict:
    return function.parameters if function.parameters is not None else NO_PARAMETERS


def _arguments_schema(parameters: dict) -> dict:
    """The schema the grammar follows: arguments are an object even where `type` is left out."""
    return {"type": "object", **parameters}


@lru_cache(maxsize=64)
def _tool_grammar(key: str) -> Grammar:
    """Calls of the given functions: text then calls ("auto") or calls only; several calls one
    a line, or exactly one when not parallel. Cached by the request's tools."""
    spec = json.loads(key)
    rules = {}
    calls = []
    for index, name, parameters in spec["tools"]:
        prefix = f"tool{index}_"
        try:
            rules.update(json_schema_rules(parameters, "none", start=prefix + "arguments", prefix=prefix))
        except GrammarError as error:
            raise _SchemaError(index, name, str(error)) from None
        except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as error:
            raise _SchemaError(index, name, f"malformed or unsupported ({type(error).__name__}: {error})") from None
        calls.append(seq(lit(call_head(name)), Ref(prefix + "arguments"), lit(call_tail())))
    rules["call"] = alt(*calls)
    if spec["parallel"]:
        answer = seq(Ref("call"), star(seq(lit("\n"), Ref("call"))), opt(lit(TURN_END)))
    else:
        answer = Ref("call")  # complete, and nothing may follow: generation ends at the call's end
    if spec["auto"]:
        rules["start"] = seq(opt(Except(lit(CALL_OPEN))), opt(answer))  # text never holds the tag but as a call
    else:
        rules["start"] = seq(opt(lit(" ")), answer)  # RWKV World's "Assistant:" is followed by a space
    return Grammar(compile_rules(rules, "start"), source=None, dialect="tools")


@dataclass
class _Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ReplyParser:
    """A chat answer split into its content and its tool calls, piece by piece as it streams:
    `feed` returns the deltas to send (content, a call's start, pieces of its arguments),
    `close` what was held back at the end. Text that may begin the call tag is held back
    until it can't; the content is trimmed as ChatTrim does."""

    def __init__(self, continued: bool = False) -> None:
        self._trim = ChatTrim(leading=not continued)
        self._mode = "content"  # then "head" (the name), "arguments", "tail" (the closing tag), "between"
        self._pending = ""      # text not consumed yet
        self._depth, self._in_string, self._escaped = 0, False, False
        self.content: list[str] = []
        self.calls: list[_Call] = []

    def feed(self, text: str) -> list[s.Delta]:
        self._pending += text
        deltas: list[s.Delta] = []
        while self._pending:
            before = (self._mode, len(self._pending))
            getattr(self, "_" + self._mode)(deltas)
            if (self._mode, len(self._pending)) == before:
                break  # waiting for more text
        return deltas

    def close(self) -> list[s.Delta]:
        deltas: list[s.Delta] = []
        if self._mode == "content":
            self._emit_content(self._pending, deltas)
            self._pending = ""
        return deltas

    @property
    def complete(self) -> bool:
        """Not stopped inside a call."""
        return self._mode in ("content", "between")

    def message(self, finish: str | None) -> tuple[s.AssistantMessage, str | None]:
        """The whole answer (after `close`) as a message, and its finish reason."""
        content = "".join(self.content)
        calls = [s.ToolCall(c.id, s.FunctionCall(c.name, "".join(c.arguments))) for c in self.calls]
        if not calls:
            return s.AssistantMessage("assistant", content), finish
        return s.AssistantMessage("assistant", content or None, calls), self.finish_reason(finish)

    def finish_reason(self, finish: str | None) -> str | None:
        return "tool_calls" if self.calls and self.complete and finish == "stop" else finish

    def _emit_content(self, text: str, deltas: list[s.Delta]) -> None:
        text = self._trim.feed(text)
        if text:
            self.content.append(text)
            deltas.append(s.Delta(content=text))

    def _content(self, deltas: list[s.Delta]) -> None:
        at = self._pending.find(CALL_OPEN)
        if at >= 0:
            self._emit_content(self._pending[:at], deltas)
            self._pending = self._pending[at:]
            self._mode = "head"
            return
        hold = _partial_tag(self._pending)
        self._emit_content(self._pending[:len(self._pending) - hold], deltas)
        self._pending = self._pending[len(self._pending) - hold:]

    def _head(self, deltas: list[s.Delta]) -> None:
        end = self._pending.find(ARGUMENTS_KEY)
        if end < 0:
            return
        name = json.loads(self._pending[len(CALL_OPEN) + len(NAME_KEY):end])
        call = _Call("call_" + secrets.token_hex(12), name)
        self.calls.append(call)
        deltas.append(s.Delta(tool_calls=[s.ToolCallDelta(len(self.calls) - 1, call.id, "function",
                                                          s.FunctionDelta(name, ""))]))
        self._pending = self._pending[end + len(ARGUMENTS_KEY):]
        self._mode = "arguments"

    def _arguments(self, deltas: list[s.Delta]) -> None:
        """Up to the call's closing brace: the first "}" outside strings and nested values."""
        end = None
        for i, char in enumerate(self._pending):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                if self._depth == 0:
                    end = i
                    break
                self._depth -= 1
        piece = self._pending if end is None else self._pending[:end]
        if piece:
            self.calls[-1].arguments.append(piece)
            deltas.append(s.Delta(tool_calls=[s.ToolCallDelta(len(self.calls) - 1,
                                                              function=s.FunctionDelta(arguments=piece))]))
        self._pending = "" if end is None else self._pending[end:]
        if end is not None:
            self._mode = "tail"

    def _tail(self, deltas: list[s.Delta]) -> None:
        tail = call_tail()
        if len(self._pending) >= len(tail):
            self._pending = self._pending[len(tail):]
            self._mode = "between"

    def _between(self, deltas: list[s.Delta]) -> None:
        """The newlines between calls and after the last."""
        at = self._pending.find(CALL_OPEN)
        if at >= 0:
            self._pending = self._pending[at:]
            self._mode = "head"
            self._depth, self._in_string, self._escaped = 0, False, False
        else:
            self._pending = self._pending[len(self._pending) - _partial_tag(self._pending):]


def _partial_tag(text: str) -> int:
    """The length of the longest end of `text` that begins the call tag."""
    for length in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(CALL_OPEN[:length]):
            return length
    return 0
