"""A request's grammar compiled in a worker thread, under `[model] grammar_compile_seconds`:
past it the request gets a 400, and the thread stops at its next check; a client that leaves
stops it the same way, so a hostile grammar costs its sender a 4xx and the others nothing."""
from __future__ import annotations

from typing import Any, Callable

import trio

from ..grammar import CompileStop, CompileStopped, Grammar, GrammarError
from .errors import bad_request

SLACK_S = 0.25  # past the deadline, a thread still in an uninterruptible step is no longer waited for


async def compile_in_time(compile: Callable[[Any], Grammar | None], source: Any, param: str,
                          seconds: float) -> Grammar | None:
    stop = CompileStop(seconds)
    try:
        with trio.move_on_after(seconds + SLACK_S):
            return await trio.to_thread.run_sync(stop.run, compile, source, abandon_on_cancel=True)
    except GrammarError as error:
        raise bad_request(f"invalid grammar: {error}", param=param, code="invalid_grammar") from None
    except CompileStopped:
        pass
    finally:
        stop.cancel()  # the deadline passed or the client left: the thread stops at its next check
    raise bad_request(f"the grammar took longer than {seconds:g} s to compile ([model] grammar_compile_seconds); "
                      "simplify it", param=param, code="grammar_timeout")
