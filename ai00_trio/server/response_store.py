"""The stored answers of /v1/responses: a bounded in-memory store, oldest dropped first."""
from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass

from .response_schemas import ResponseObject
from .schemas import StateChoice


@dataclass(frozen=True)
class StoredResponse:
    response: ResponseObject
    tokens: array               # the conversation's token ids through this answer ('i': 4 bytes each)
    model_text: tuple[str, ...]  # the conversation's assistant turns (they seed the repetition penalties)
    state_id: StateChoice       # the initial state the conversation started from
    ends_turn: bool             # the tokens end with the turn separator (the answer stopped at it)
    tool_prompt: str | None = None  # the tool list the conversation's prompt holds last


class ResponseStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, stored: StoredResponse) -> None:
        self._entries[stored.response.id] = stored
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        return self._entries.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._entries)
