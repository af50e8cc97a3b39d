"""Host cost of sampling one token per sequence for a batch (AI00's default Nucleus sampler,
World vocabulary size), one sequence after the other on one thread against a thread pool:
numpy releases the GIL in its array loops, so per-request samplers can run side by side.

    python bench/bench_sampling.py [--batches 1,16,64] [--threads 2,4,8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ai00_trio.sampling import make_sampler  # noqa: E402

VOCAB = 65536


def per_step_ms(run, repeat: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--threads", default="2,4,8")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(json.dumps({"cpus": os.cpu_count()}))
    for batch in [int(b) for b in args.batches.split(",")]:
        samplers = [make_sampler(None, seed=i, vocab_size=VOCAB) for i in range(batch)]
        logits = (rng.standard_normal((batch, VOCAB)) * 3).astype(np.float32)

        def sample(i: int) -> int:
            return samplers[i].step(logits[i], None).token

        row = {"batch": batch, "sequential_ms": round(per_step_ms(lambda: [sample(i) for i in range(batch)],
                                                                  args.repeat), 2)}
        for threads in [int(t) for t in args.threads.split(",")]:
            with ThreadPoolExecutor(threads) as pool:
                row[f"threads_{threads}_ms"] = round(
                    per_step_ms(lambda: list(pool.map(sample, range(batch))), args.repeat), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
