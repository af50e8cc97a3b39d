"""How long a model reload takes through AI00's admin route, as an operator sees it: a server on
`MODEL`, `--clients` streams running, then `POST /admin/models/load` of the same file; timed
from the request to its answer (the new model built beside the old one and switched in), while
the streams finish on the old model.

    python bench/bench_reload.py MODEL.st [--clients 4] [--tokens 512] [--repeats 2]

Prints one `RESULT {json}` line per reload: its seconds, whether every stream running during it
got all its tokens, and the first token's time of a request sent right after the switch.
"""
from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path

from bench_server import ROOT, start_server, stream

ADMIN_KEY = "bench-admin"


def post(port: int, path: str, body: dict, timeout: float = 900) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                        "Authorization": f"Bearer {ADMIN_KEY}"})
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def reload_once(port: int, model: Path, clients: int, tokens: int, max_batch: int) -> dict:
    results = [dict() for _ in range(clients)]
    threads = [threading.Thread(target=stream, args=(port, {"prompt": f"Reload {i}: once upon a time",
                                                            "max_tokens": tokens, "stream": True,
                                                            "stream_options": {"include_usage": True},
                                                            "temperature": 0}, results[i]))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the streams are decoding when the reload starts
    started = time.perf_counter()
    status, answer = post(port, "/admin/models/load", {"model_path": model.name, "max_batch": max_batch,
                                                       "token_chunk_size": 256, "precision": "Fp16"})
    reload_s = time.perf_counter() - started
    after: dict = {}
    stream(port, {"prompt": "After the reload", "max_tokens": 16, "stream": True,
                  "stream_options": {"include_usage": True}, "temperature": 0}, after)
    for thread in threads:
        thread.join()
    return dict(status=status, reload_s=round(reload_s, 2), answer=answer if status != 200 else None,
                streams_complete=sum(r.get("tokens") == tokens for r in results), streams=clients,
                first_token_after_s=round(after["first"], 3) if after.get("first") else None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = args.model.resolve()
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_server(ROOT, model, args.max_batch, Path(folder),
                                     extra=f'[admin]\nkeys = ["{ADMIN_KEY}"]\n')
        try:
            for _ in range(args.repeats):
                print("RESULT", json.dumps(reload_once(port, model, args.clients, args.tokens, args.max_batch)),
                      flush=True)
        finally:
            process.terminate()
            process.wait(60)


if __name__ == "__main__":
    main()
