"""Stopping a grammar's compilation from outside it: at a deadline, or when whoever asked for
it is gone. The compiler calls `check_stop()` between units of work (rules, AST nodes, DFA
states); `CompileStop.run` makes a stop the current one for the call it runs (a context
variable, so concurrent compilations in other threads each see their own)."""
from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from typing import Callable, TypeVar

T = TypeVar("T")


class CompileStopped(Exception):
    """The compilation was stopped (not a GrammarError: the grammar may be fine, and nothing is cached)."""

    def __init__(self, message: str, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class CompileStop:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise CompileStopped("the grammar's compilation was cancelled", timed_out=False)
        if time.monotonic() > self.deadline:
            raise CompileStopped(f"the grammar took longer than {self.seconds:g} s to compile", timed_out=True)

    def run(self, compile: Callable[..., T], *args) -> T:
        token = _CURRENT.set(self)
        try:
            return compile(*args)
        finally:
            _CURRENT.reset(token)


_CURRENT: ContextVar[CompileStop | None] = ContextVar("grammar_compile_stop", default=None)


def check_stop() -> None:
    stop = _CURRENT.get()
    if stop is not None:
        stop.check()
