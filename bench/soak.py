"""A soak test against a running server: waves of concurrent clients for a while, a mix of
streams read to the end, streams dropped mid-way, plain completions and embeddings. Prints one
JSON line per wave (failures by kind, latency percentiles, the server's RSS when --pid is given,
its queue after the wave) and exits 1 if any request failed or a slot stayed busy.

    python bench/soak.py http://127.0.0.1:65530 [--minutes 30] [--clients 64] [--tokens 64]
                         [--key API_KEY] [--pid SERVER_PID]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import random
import sys
import time
from urllib.parse import urlsplit


def request(base: str, key: str | None, method: str, path: str, body: dict | None = None,
            timeout: float = 600) -> http.client.HTTPResponse:
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    return connection.getresponse()


def one_client(base: str, key: str | None, tokens: int, kind: str) -> tuple[str, bool, float]:
    started = time.perf_counter()
    prompt = f"Request {random.randrange(10**6)}: once upon a time"
    try:
        if kind == "embed":
            response = request(base, key, "POST", "/v1/embeddings", {"input": [prompt] * 4})
            ok = response.status == 200 and len(json.loads(response.read())["data"]) == 4
        else:
            stream = kind != "plain"
            response = request(base, key, "POST", "/v1/completions",
                               {"prompt": prompt, "max_tokens": tokens, "stream": stream})
            if kind == "drop":
                ok = response.status == 200 and response.read1(4096).startswith(b"data: ")
                response.close()
            else:
                body = response.read()
                ok = response.status == 200 and (not stream or body.endswith(b"data: [DONE]\n\n"))
    except (OSError, http.client.HTTPException, ValueError):
        ok = False
    return kind, ok, time.perf_counter() - started


def rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--key")
    parser.add_argument("--pid", type=int)
    args = parser.parse_args()
    kinds = ["stream"] * 5 + ["drop"] * 2 + ["plain"] * 2 + ["embed"]
    end, wave, healthy = time.time() + args.minutes * 60, 0, True
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        while time.time() < end:
            wave += 1
            started = time.time()
            results = list(pool.map(lambda _: one_client(args.base, args.key, args.tokens, random.choice(kinds)),
                                    range(args.clients)))
            latencies = sorted(seconds for _, _, seconds in results)
            failures: dict[str, int] = {}
            for kind, ok, _ in results:
                if not ok:
                    failures[kind] = failures.get(kind, 0) + 1
            time.sleep(1)  # dropped streams free their slots within a step
            status = request(args.base, args.key, "GET", "/api/status", timeout=30)
            queue = json.loads(status.read())["queue"]
            healthy &= not failures and queue["active"] == 0
            print(json.dumps({"wave": wave, "seconds": round(time.time() - started, 1), "failures": failures,
                              "p50_s": round(latencies[len(latencies) // 2], 3),
                              "p99_s": round(latencies[int(len(latencies) * 0.99)], 3),
                              "rss_bytes": rss(args.pid), "queue": queue}), flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
