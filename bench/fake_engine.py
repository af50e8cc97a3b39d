"""The HTTP path alone: runs the server with its batch runtime replaced by a stand-in whose every
step sleeps a fixed time (as waiting for a GPU does: the GIL is free meanwhile) and then answers
every busy slot, with GPU choices for `want="pick"` (chains run on by themselves, as on the GPU)
and zero logits otherwise. The model file is still loaded (for its tokenizer and the cache's
state sizes) but never stepped. So what the server delivers here is what the event loop, the
scheduler and the HTTP stack can carry at that step time: with `--step-ms 7.9` and 64 clients the
engine's own rate on an H200 would be 64 / 7.9 ms = 8,100 tok/s.

    python bench/fake_engine.py [--step-ms 7.9] [--profile REPORT] -- -m ai00_trio --config C.toml

`bench_server.py --fake-step-ms MS` runs the server this way. `--profile` also samples the
threads' stacks (bench/sample_stacks.py). `--launch-ms MS --releases N` (through `bench_server.py
--fake-options`) makes each step first hold the GIL that long, letting it go N times, as
recording a step and its C calls do, and prints the launches' mean wall time at exit.
"""
from __future__ import annotations

import argparse
import atexit
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from wrapped_module import module_to_run, run_module


class FakeState:
    """What the prefix cache stores: only its size matters here."""

    def __init__(self, nbytes: int) -> None:
        self.buffer = type("Buffer", (), {"size": nbytes})()
        self.nbytes = nbytes

    def to_host(self) -> np.ndarray:
        return np.zeros(self.nbytes // 4, np.float32)


def hold_the_gil(seconds: float) -> None:
    """Python that keeps the GIL this long, as recording a step's dispatches does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def fake_batch_class(step_s: float, launch_s: float = 0.0, releases: int = 1, launches: list | None = None):
    from ai00_trio.engine.runtime import GREEDY, Pick

    class FakeBatch:
        def __init__(self, model, max_batch: int = 8, token_chunk_size: int = 256, keep_hidden: bool = False,
                     tuning=None, limits=None) -> None:
            self.model = model
            self.max_batch = max_batch
            self.keep_hidden = keep_hidden
            self.hidden: dict[int, np.ndarray] = {}
            self.fed: dict[int, list[int]] = {s: [] for s in range(max_batch)}
            self._work: dict[int, dict] = {}
            self._state_bytes = model.arch.slot_stride() * 4
            self._rng = np.random.default_rng(0)
            self._done_at = 0.0
            # printable bytes for byte-level models, ordinary ids for the World vocabulary
            self._tokens = np.arange(97, 123) if model.info.n_vocab <= 256 else np.arange(1000, 3000)

        @property
        def busy_slots(self) -> list[int]:
            return sorted(self._work)

        def load(self, slot: int, state=None) -> None:
            self.fed[slot] = []

        def save(self, slot: int) -> FakeState:
            return FakeState(self._state_bytes)

        def submit(self, slot: int, tokens, want: str = "last", sampling=GREEDY, chain: int = 0,
                   end_tokens=frozenset()) -> None:
            self._work[slot] = dict(tokens=deque(tokens), want=want, chain=chain, ends=end_tokens)

        def cancel(self, slot: int) -> None:
            self._work.pop(slot, None)

        def drop(self, slots) -> None:
            for slot in slots:
                self.cancel(slot)

        def set_penalties(self, slot: int, penalties) -> None:
            pass

        def set_bias(self, slot: int, bias) -> None:
            pass

        def step(self) -> dict:
            if not self._work:
                return {}
            # like a GPU with the next step queued (chains run one ahead): steps end at a steady
            # cadence while the host keeps up, and a late host delays only the steps after it
            if launch_s > 0:  # recording the step: Python under the GIL, let go `releases` times (C calls)
                started = time.perf_counter()
                for _ in range(releases):
                    hold_the_gil(launch_s / releases)
                    time.sleep(0)
                launches.append(time.perf_counter() - started)
            now = time.perf_counter()
            self._done_at = max(now, self._done_at) + step_s
            time.sleep(max(0.0, self._done_at - now))
            out: dict = {}
            vocab = self.model.info.n_vocab
            for slot, work in list(self._work.items()):
                self.fed[slot] += list(work["tokens"])
                work["tokens"].clear()
                if work["want"] == "pick":
                    token = int(self._rng.choice(self._tokens))
                    out[slot] = Pick(token, -0.5)
                    if work["chain"] > 0 and token not in work["ends"]:
                        work["chain"] -= 1
                        work["tokens"].append(token)
                        continue
                elif work["want"] == "all":
                    out[slot] = np.zeros((max(1, len(self.fed[slot])), vocab), np.float32)
                else:
                    out[slot] = np.zeros(vocab, np.float32)
                del self._work[slot]
            return out

    return FakeBatch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-ms", type=float, default=7.9)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--launch-ms", type=float, default=0.0,
                        help="each step first holds the GIL this long (recording it), printing the mean wall time at exit")
    parser.add_argument("--releases", type=int, default=1, help="times a launch lets the GIL go (its C calls)")
    parser.add_argument("--switch-ms", type=float, default=None, help="sys.setswitchinterval for the server")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = module_to_run(parser, args.rest)
    from ai00_trio.server import actors

    launches: list[float] = []
    actors.BatchRuntime = fake_batch_class(args.step_ms / 1000, args.launch_ms / 1000, args.releases, launches)
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000)
    if args.launch_ms:
        atexit.register(lambda: print(f"FAKE launches {len(launches)}, mean wall {1000 * np.mean(launches or [0]):.2f} ms "
                                      f"(holding the GIL {args.launch_ms} ms)", file=sys.stderr, flush=True))
    if args.profile:
        sys.path.insert(1, str(Path(__file__).resolve().parent))
        from sample_stacks import sampler

        threading.Thread(target=sampler, args=(args.profile, 0.001), daemon=True).start()
    run_module(rest)


if __name__ == "__main__":
    main()
