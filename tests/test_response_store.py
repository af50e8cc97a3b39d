"""The bounded store of /v1/responses: oldest dropped first, delete says whether it held the id."""
from __future__ import annotations

from array import array

from ai00_trio.server.response_schemas import ResponseObject
from ai00_trio.server.response_store import ResponseStore, StoredResponse


def stored(response_id: str) -> StoredResponse:
    response = ResponseObject(id=response_id, created_at=0, status="completed", model="m", output=[], usage=None)
    return StoredResponse(response, array("i", [1, 2]), (), None, False)


def test_the_oldest_go_first_and_delete_reports_what_it_removed():
    store = ResponseStore(2)
    for name in ("a", "b", "c"):
        store.put(stored(name))
    assert store.get("a") is None and [store.get(n).response.id for n in ("b", "c")] == ["b", "c"]
    assert len(store) == 2
    assert store.delete("b") and not store.delete("b") and store.get("b") is None
    store.put(stored("d"))
    assert store.get("c") is not None and len(store) == 2
