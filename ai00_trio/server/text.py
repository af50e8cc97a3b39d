"""Prompt building and the stop-string matcher."""
from __future__ import annotations

import re

from .errors import bad_request
from .schemas import ChatMessage, ChatTemplate
from .tool_syntax import render_call, render_result

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Observation",
              "observation": "Observation", "developer": "System"}
_BLANK_LINES = re.compile(r"\n(\s*\n)+")


def message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise bad_request(f"messages[{index}].content: only text parts are supported, got {part.type!r}",
                              param=f"messages[{index}].content")
        parts.append(part.text)
    return "".join(parts)


class ChatTrim:
    """A chat answer's text without its leading and trailing whitespace, piece by piece, so a
    stream carries what the non-streamed answer does (RWKV's `Assistant:` is followed by a
    space). Whitespace is held back until text follows it; `feed` returns what to send."""

    def __init__(self, leading: bool = True) -> None:
        self._started = not leading  # False: keep leading whitespace (a continued message)
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self._started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self._started = True
        text = self._held + piece
        body = text.rstrip()
        self._held = text[len(body):]
        return body


def chat_prompt(messages: list[ChatMessage], names: dict[str, str] | None,
                template: ChatTemplate | None, tools: str | None = None) -> tuple[str, list[str], bool]:
    """The RWKV World chat prompt (`User: ...` then `Assistant:`), the earlier assistant turns
    (which seed the repetition penalties), and whether the last message is the assistant's own
    beginning, which the answer continues (the prompt then ends with it, not with a new turn).
    `tools` (the tool list the model may call) joins the leading system turn, or makes one."""
    template = template or ChatTemplate()
    names = {k.lower(): v for k, v in (names or {}).items()}
    turns, assistant_turns = [], []
    call_names: dict[str, str] = {}  # tool_call_id -> function, to name the tool results
    for i, message in enumerate(messages):
        role = message.role.lower()
        if role not in ROLE_NAMES:
            raise bad_request(f"messages[{i}].role: unknown role {message.role!r}", param=f"messages[{i}].role")
        content = _BLANK_LINES.sub("\n", message_text(message, i)).strip()
        if role == "assistant" and message.tool_calls:
            call_names.update((call.id, call.function.name) for call in message.tool_calls)
            calls = [render_call(call.function.name, call.function.arguments) for call in message.tool_calls]
            content = "\n".join([content, *calls] if content else calls)
        elif role == "tool":
            content = render_result(call_names.get(message.tool_call_id or "", message.name), content)
        if role == "assistant":
            assistant_turns.append(content)
        turns.append([role, content])
    if tools:
        if turns and turns[0][0] in ("system", "developer"):
            turns[0][1] = f"{turns[0][1]}\n{tools}" if turns[0][1] else tools
        else:
            turns.insert(0, ["system", tools])
    records = [template.record.replace("{role}", names.get(role, ROLE_NAMES[role])).replace("{content}", content)
               for role, content in turns]
    if messages and messages[-1].role.lower() == "assistant":
        if assistant_turns[-1] and not messages[-1].tool_calls:
            return template.sep.join(records), assistant_turns, True
        if not assistant_turns[-1]:
            records.pop()  # an empty last assistant message: answer anew
            assistant_turns.pop()
    prefix = template.prefix.replace("{assistant}", names.get("assistant", "Assistant")) \
                            .replace("{user}", names.get("user", "User"))
    return template.sep.join(records) + template.sep + prefix, assistant_turns, False


class StopMatcher:
    """Finds stop strings in streamed text, across token boundaries.

    `feed(text)` returns (safe_text, stopped): safe_text can be sent to the client; text that
    could still be the beginning of a stop string is held back until it can't."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buffer = self.pending + text
        first = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0 and (first is None or at < first):
                first = at
        if first is not None:
            self.pending = ""
            return buffer[:first], True
        hold = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:length]):
                    hold = max(hold, length)
                    break
        self.pending = buffer[len(buffer) - hold:] if hold else ""
        return buffer[:len(buffer) - hold], False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


def stop_list(value: str | list[str] | None, default: list[str]) -> list[str]:
    """A request's `stop` (or `default` when it gives none), within the limits."""
    if value is None:
        return list(default)
    stops = [value] if isinstance(value, str) else list(value)  # their number and length: schemas.py
    return [x for x in stops if x]
