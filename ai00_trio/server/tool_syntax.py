"""How tools, tool calls and tool results are written in an RWKV World chat prompt.

The model is told about its tools in the system turn, one compact JSON line per function, and
calls them with one line per call (Hermes/Qwen-style tags, compact JSON inside):

    <tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>

A tool's answer is an `Observation:` turn holding `<tool_response name="...">...</tool_response>`.
The grammar in tools.py makes the model's calls follow exactly this form.
"""
from __future__ import annotations

import json

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
NAME_KEY, ARGUMENTS_KEY = '{"name":', ',"arguments":'  # a call's JSON starts with these, in this order


def compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def call_head(name: str) -> str:
    """The text of a call up to its arguments."""
    return CALL_OPEN + NAME_KEY + compact_json(name) + ARGUMENTS_KEY


def call_tail() -> str:
    return "}" + CALL_CLOSE


def render_call(name: str, arguments: str) -> str:
    """An earlier call (its arguments as the client sent them: JSON text) as the model writes
    calls; arguments that are not JSON are kept as one JSON string."""
    try:
        value = json.loads(arguments)
    except ValueError:
        value = arguments
    return call_head(name) + compact_json(value) + call_tail()


def render_result(name: str | None, content: str) -> str:
    attribute = f" name={compact_json(name)}" if name else ""
    return f"<tool_response{attribute}>{content}</tool_response>"


def render_tool_list(functions: list[tuple[str, str | None, dict]], must_call: str | None, forced: bool) -> str:
    """The system turn's description of the tools: (name, description, parameters schema) each,
    how to call them, and whether the answer must be a call (`forced`), of `must_call` if named."""
    lines = ["You can call these tools (their arguments follow the JSON schema given):"]
    for name, description, parameters in functions:
        entry = {"name": name, **({"description": description} if description else {}), "parameters": parameters}
        lines.append(compact_json(entry))
    lines.append(f'To call tools, answer with one line per call: {CALL_OPEN}{{"name":"<tool name>",'
                 f'"arguments":<arguments as JSON>}}{CALL_CLOSE}')
    if must_call:
        lines.append(f"Answer now by calling {must_call}.")
    elif forced:
        lines.append("Answer now by calling tools.")
    return "\n".join(lines)
