"""What the GPU executor's steps look like inside a running server: wraps `Runtime.launch`
and `land` and, every two seconds, rewrites a summary of the steps since the last reset — how
many, their shapes (slots and tokens), how many ran ahead on the GPU's own choices, how many
needed a step graph not seen before, and where the step thread's time went (launching, waiting
for results, and the gaps between steps, which are waits for samplers and messages).
Creating REPORT.reset starts afresh; REPORT.freeze stops counting (as bench/sample_stacks.py).

    python bench/trace_steps.py REPORT.txt -- -m ai00_trio --config C.toml
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from pathlib import Path

from wrapped_module import module_to_run, run_module


class Trace:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frozen = False
        self.reset()

    def reset(self) -> None:
        self.steps: list[dict] = []
        self.last_land_end: float | None = None
        self.first: float | None = None

    def add(self, step: dict) -> None:
        with self.lock:
            if not self.frozen:
                self.first = self.first or step["start"]
                self.steps.append(step)

    def summary(self) -> str:
        with self.lock:
            steps = list(self.steps)
        if not steps:
            return "no steps\n"
        wall = steps[-1]["end"] - steps[0]["start"]
        launch = sum(s["launch_ms"] for s in steps)
        land = sum(s.get("land_ms", 0.0) for s in steps)
        gaps = sum(s["gap_ms"] for s in steps if s["gap_ms"] is not None)
        ahead = sum(s["gpu_fed"] for s in steps)
        new = sum(s["new_graph"] for s in steps)
        tokens = sum(s["picks"] + s["full_rows"] for s in steps)
        shapes = collections.Counter((s["runs"], s["tokens"]) for s in steps)
        runs = collections.Counter(s["runs"] for s in steps)
        lines = [
            f"steps {len(steps)} over {wall:.3f} s; output rows {tokens} ({tokens / max(wall, 1e-9):.1f}/s)",
            f"ran ahead (gpu_fed) {ahead}; new step graphs {new}; full-logits rows {sum(s['full_rows'] for s in steps)}",
            f"step thread ms: launch {launch:.1f}, land wait {land:.1f}, gaps between steps {gaps:.1f}",
            "slots per step (count): " + ", ".join(f"{k}:{v}" for k, v in sorted(runs.items())),
            "commonest (slots, tokens): " + ", ".join(f"{k}:{v}" for k, v in shapes.most_common(12)),
            "largest gaps ms: " + ", ".join(f"{g:.1f}" for g in sorted(
                (s["gap_ms"] for s in steps if s["gap_ms"] is not None), reverse=True)[:12]),
            "slowest launches ms: " + ", ".join(f"{s['launch_ms']:.1f}{'*' if s['new_graph'] else ''}" for s in sorted(
                steps, key=lambda s: -s["launch_ms"])[:12]) + "  (* new step graph)",
        ]
        return "\n".join(lines) + "\n"


def install(trace: Trace) -> None:
    from ai00_trio.engine.runtime import Runtime  # the checkout the server runs from (cwd)

    launch, land = Runtime.launch, Runtime.land
    flights: dict[int, dict] = {}  # id(flight) -> its step, until it lands

    def traced_launch(self, runs, out_rows, picks=(), gpu_fed=False):
        t = sum(len(r.tokens) for r in runs)
        known = (t, len(runs), len(out_rows)) in self._graphs
        start = time.perf_counter()
        flight = launch(self, runs, out_rows, picks, gpu_fed)
        end = time.perf_counter()
        previous = trace.last_land_end
        flights[id(flight)] = dict(start=start, end=end, launch_ms=1e3 * (end - start), runs=len(runs), tokens=t,
                            picks=len(picks), full_rows=len(out_rows) - len(picks), gpu_fed=gpu_fed,
                            new_graph=not known,
                            gap_ms=None if previous is None or gpu_fed else 1e3 * max(0.0, start - previous))
        return flight

    def traced_land(self, flight):
        start = time.perf_counter()
        result = land(self, flight)
        end = time.perf_counter()
        step = flights.pop(id(flight), None)
        if step is not None:
            step["land_ms"] = 1e3 * (end - start)
            step["end"] = end
            trace.add(step)
        trace.last_land_end = end
        return result

    Runtime.launch, Runtime.land = traced_launch, traced_land


def writer(trace: Trace, report: str) -> None:
    polls = 0
    while True:
        time.sleep(0.02)  # often: a reset must come before the wave's first step
        polls += 1
        if os.path.exists(report + ".freeze"):
            os.remove(report + ".freeze")
            with trace.lock:
                trace.frozen = True
            Path(report).write_text(trace.summary())
        if os.path.exists(report + ".reset"):
            os.remove(report + ".reset")
            with trace.lock:
                trace.reset()
                trace.frozen = False
        if not trace.frozen and polls % 100 == 0:
            Path(report).write_text(trace.summary())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("report")
    parser.add_argument("--switch-ms", type=float, default=None, help="the interpreter's GIL switch interval")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = module_to_run(parser, args.rest)
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    trace = Trace()
    install(trace)
    threading.Thread(target=writer, args=(trace, args.report), daemon=True).start()
    run_module(rest)


if __name__ == "__main__":
    main()
