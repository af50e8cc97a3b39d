"""Where a Python process spends its time, by sampling every thread's stack (a small py-spy):
runs a module as `python -m` would, and every few seconds rewrites a report of the functions
seen most often, per thread, as the innermost Python frame ("self") and anywhere on the stack.
Creating the file REPORT.reset starts the counts afresh (e.g. once a server is warm), and
REPORT.freeze stops counting (the report then holds what happened in between).

    python bench/sample_stacks.py REPORT.txt [--every-ms 1] -- -m ai00_trio --config C.toml

A thread waiting in C (epoll, a lock, the GPU) shows the Python line that called it.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time

from wrapped_module import module_to_run, run_module


def where(frame) -> str:
    code = frame.f_code
    return f"{code.co_name} ({code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})"


def sampler(report: str, every: float) -> None:
    me = threading.get_ident()
    own: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    anywhere: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    samples: collections.Counter = collections.Counter()
    last_write = time.monotonic()
    frozen = False
    while True:
        time.sleep(every)
        if os.path.exists(report + ".freeze"):  # before a reset that may follow at once
            os.remove(report + ".freeze")
            frozen = True
        if os.path.exists(report + ".reset"):
            os.remove(report + ".reset")
            own.clear()
            anywhere.clear()
            samples.clear()
            frozen = False
        for ident, frame in [] if frozen else sys._current_frames().items():
            if ident == me:
                continue
            samples[ident] += 1
            own[ident][where(frame)] += 1
            seen = set()
            while frame is not None:
                name = f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 2)[-1]})"
                if name not in seen:
                    anywhere[ident][name] += 1
                    seen.add(name)
                frame = frame.f_back
        if time.monotonic() - last_write > 2.0:
            last_write = time.monotonic()
            names = {t.ident: t.name for t in threading.enumerate()}
            lines = []
            for ident, total in samples.most_common():
                lines.append(f"=== thread {names.get(ident, ident)}: {total} samples")
                lines.append("--- self")
                lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in own[ident].most_common(25)]
                lines.append("--- anywhere on the stack")
                lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in anywhere[ident].most_common(40)]
            with open(report, "w") as out:
                out.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("report")
    parser.add_argument("--every-ms", type=float, default=1.0)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = module_to_run(parser, args.rest)
    threading.Thread(target=sampler, args=(args.report, args.every_ms / 1000), daemon=True).start()
    run_module(rest)


if __name__ == "__main__":
    main()
