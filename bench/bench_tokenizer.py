"""Benchmark the World tokenizer: construction and encoding of ~100 KB of mixed text.

Run: .venv/bin/python bench/bench_tokenizer.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ai00_trio.tokenizer import WorldTokenizer  # noqa: E402

VOCAB_PATH = REPO_ROOT / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"
VECTORS_PATH = REPO_ROOT / "tests" / "data" / "tokenizer-vectors.json"
TARGET_BYTES = 100_000
REPEATS = 5

ENGLISH_WORDS = (
    "the model reads each token once and keeps a small state instead of a cache "
    "so memory stays flat while the context grows server request stream answer"
).split()
CODE_SNIPPET = '''def moving_average(values: list[float], window: int = 3) -> list[float]:
    """Average over a sliding window."""
    out = []
    for i in range(len(values) - window + 1):
        out.append(sum(values[i : i + window]) / window)
    return out

'''


def mixed_text(target_bytes: int, seed: int = 0) -> str:
    """About `target_bytes` of English, CJK, emoji and code (vector texts + generated)."""
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    vector_texts = [case["text"] for case in vectors["cases"] if case.get("text")]
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < target_bytes:
        choice = rng.random()
        if choice < 0.4:
            part = rng.choice(vector_texts)
        elif choice < 0.75:
            part = " ".join(rng.choice(ENGLISH_WORDS) for _ in range(rng.randint(8, 30))) + ".\n"
        else:
            part = CODE_SNIPPET
        parts.append(part)
        size += len(part.encode("utf-8"))
    return "".join(parts)


def best_time(action: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of `repeats` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Print construction, encode, decode and streaming-decode timings."""
    construct_s = best_time(lambda: WorldTokenizer(VOCAB_PATH), REPEATS)
    tokenizer = WorldTokenizer(VOCAB_PATH)
    text = mixed_text(TARGET_BYTES)
    data = text.encode("utf-8")
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == data

    encode_s = best_time(lambda: tokenizer.encode(text), REPEATS)
    decode_s = best_time(lambda: tokenizer.decode(ids), REPEATS)

    def stream_one_by_one() -> str:
        decoder = tokenizer.incremental_decoder()
        pieces = [decoder.feed([token_id]) for token_id in ids]
        pieces.append(decoder.flush())
        return "".join(pieces)

    assert stream_one_by_one() == text
    stream_s = best_time(stream_one_by_one, REPEATS)

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"input: {len(data):,} bytes, {len(text):,} chars -> {len(ids):,} tokens")
    print(f"construct WorldTokenizer: {construct_s * 1000:8.1f} ms (best of {REPEATS})")
    print(
        f"encode:                   {encode_s * 1000:8.1f} ms (best of {REPEATS}), "
        f"{len(data) / encode_s / 1e6:.2f} MB/s, {len(ids) / encode_s / 1e3:.0f}k tokens/s"
    )
    print(f"decode:                   {decode_s * 1000:8.1f} ms (best of {REPEATS})")
    print(
        f"incremental, 1 id/feed:   {stream_s * 1000:8.1f} ms (best of {REPEATS}), "
        f"{stream_s / len(ids) * 1e6:.2f} us/token"
    )


if __name__ == "__main__":
    main()
