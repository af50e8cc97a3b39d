"""Device losses as /api/status and /metrics show them, and the pace of rebuild attempts."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

FIRST_RETRY_S = 1.0   # after a failed rebuild, the wait before the next; doubled each time
LAST_RETRY_S = 30.0   # up to this


def retry_delays() -> Iterator[float]:
    delay = FIRST_RETRY_S
    while True:
        yield delay
        delay = min(delay * 2, LAST_RETRY_S)


@dataclass
class DeviceRecovery:
    losses: int = 0
    recoveries: int = 0
    failed_rebuilds: int = 0
    last_reason: str | None = None
    lost_at: float | None = None                  # time.monotonic() of the loss, while recovering
    last_recovery_seconds: float | None = None    # from the loss to serving again

    @property
    def recovering(self) -> bool:
        return self.lost_at is not None

    def lost(self, reason: str) -> None:
        self.losses += 1
        self.last_reason = reason
        self.lost_at = time.monotonic()

    def rebuild_failed(self) -> None:
        self.failed_rebuilds += 1

    def recovered(self) -> float:
        """The seconds from the loss to now, when the rebuilt model serves."""
        seconds = time.monotonic() - (self.lost_at or time.monotonic())
        self.recoveries += 1
        self.last_recovery_seconds = seconds
        self.lost_at = None
        return seconds

    def abandoned(self) -> None:
        """An admin loaded another model or unloaded it while the rebuild was pending."""
        self.lost_at = None

    def figures(self) -> dict[str, Any]:
        return {"losses": self.losses, "recoveries": self.recoveries, "failed_rebuilds": self.failed_rebuilds,
                "recovering": self.recovering, "last_reason": self.last_reason,
                "last_recovery_seconds": None if self.last_recovery_seconds is None
                else round(self.last_recovery_seconds, 3)}
