"""A change counter that tasks can wait on: the owner calls `notify()` after each change (a
model loaded, failed, unloaded, states attached, draining), and every waiter wakes once."""
from __future__ import annotations

import trio


class ChangeFeed:
    def __init__(self) -> None:
        self.version = 0
        self._changed = trio.Event()

    def notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_past(self, seen: int) -> int:
        """Returns the version once it differs from `seen` (at once if it already does);
        changes in between coalesce: a waiter sees the latest, not each one."""
        while self.version == seen:
            await self._changed.wait()
        return self.version
