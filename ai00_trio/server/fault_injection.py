"""Faults injected on purpose, to test recovery on a real device: read once at startup from the
AI00_TRIO_FAULT_INJECTION environment variable (never from a request or the config file), e.g.

    AI00_TRIO_FAULT_INJECTION=device_lost_after_steps:20,failed_rebuilds:1

- device_lost_after_steps:N: the first model's device is destroyed for real before its batch
  step N + 1, so wgpu fails that step as it does for a lost device.
- failed_rebuilds:K: the first K rebuilds after a device loss fail (the retries' backoff)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Mapping

from ..engine.batch import BatchRuntime

ENVIRONMENT_VARIABLE = "AI00_TRIO_FAULT_INJECTION"
_KINDS = ("device_lost_after_steps", "failed_rebuilds")


class InjectedFault(RuntimeError):
    """A fault the plan asked for."""


class LosesDevice:
    """A batch runtime whose device is destroyed before step `after + 1`; otherwise the runtime itself."""

    def __init__(self, batch: BatchRuntime, after: int) -> None:
        self._batch = batch
        self._after = after
        self._steps = 0

    def __getattr__(self, name: str):
        return getattr(self._batch, name)

    def step(self):
        self._steps += 1
        if self._steps == self._after + 1:
            print(f"[ai00-trio] fault injection: destroying the GPU device before step {self._steps}", file=sys.stderr,
                  flush=True)
            self._batch.model.ctx.device.destroy()
        return self._batch.step()


@dataclass
class FaultPlan:
    device_lost_after_steps: int | None = None
    failed_rebuilds: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> FaultPlan:
        """The plan the environment asks for (none: no faults); ValueError says what is wrong."""
        plan = cls()
        text = environ.get(ENVIRONMENT_VARIABLE, "").strip()
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, _, value = item.partition(":")
            if kind not in _KINDS or not value.isdigit():
                raise ValueError(f"{ENVIRONMENT_VARIABLE}: expected items like {_KINDS[0]}:N or {_KINDS[1]}:K "
                                 f"(N, K whole numbers), got {item!r}")
            setattr(plan, kind, int(value))
        return plan

    def batch_wrapper(self) -> Callable[[BatchRuntime], BatchRuntime] | None:
        """For the next model's batch runtime: the device loss, once (the rebuilt model keeps its device)."""
        after, self.device_lost_after_steps = self.device_lost_after_steps, None
        if after is None:
            return None
        return lambda batch: LosesDevice(batch, after)

    def before_rebuild(self) -> None:
        """Called as a rebuild after a device loss starts: raises while failed rebuilds are due."""
        if self.failed_rebuilds > 0:
            self.failed_rebuilds -= 1
            raise InjectedFault(f"fault injection: this rebuild fails ({self.failed_rebuilds} more will)")
