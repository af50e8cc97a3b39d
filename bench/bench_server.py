"""End-to-end throughput of the HTTP server, as its users see it: a server process on a model,
then N clients at once, each streaming one completion over plain HTTP, counting streamed tokens.

    python bench/bench_server.py MODEL.st [--clients 1,64] [--tokens 256] [--modes greedy,ai00,openai]
                                          [--root DIR]  (another checkout's server, for an A/B)

Modes: "greedy" (temperature 0), "ai00" (AI00's default Nucleus sampler with its penalties,
`sampler: {"type": "Nucleus"}`), "openai" (temperature 1, top_p 1: the OpenAI SDK's defaults).
Prints one JSON line per (clients, mode): aggregate tok/s over the wall time of the whole wave
(prompts are 16 tokens, so prefill is a small part), and the median time to the first token.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "greedy": {"temperature": 0},
    "ai00": {"sampler": {"type": "Nucleus"}},
    "openai": {"temperature": 1.0, "top_p": 1.0},
}


def start_server(root: Path, model: Path, max_batch: int, folder: Path,
                 wrapper: list[str] = (), extra: str = "", flush_ms: float | None = None) -> tuple[subprocess.Popen, int]:
    """The server on `model`, run by `wrapper` (a bench script that then runs the module) if given;
    `extra` is more of the config (TOML sections); `flush_ms`: [listen] stream_flush_ms."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = folder / "bench-server.toml"
    config.write_text(f"""
[model]
path = "{model.parent}"
name = "{model.name}"
max_batch = {max_batch}
token_chunk_size = 256
stop = []
[listen]
ip = "127.0.0.1"
port = {port}
{"" if flush_ms is None else f"stream_flush_ms = {flush_ms}"}
{extra}""")
    log = open(folder / "bench-server.log", "w")
    process = subprocess.Popen([sys.executable, *wrapper, "-m", "ai00_trio", "--config", str(config)], cwd=root,
                               stdout=log, stderr=subprocess.STDOUT)
    spawned = time.perf_counter()
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError((folder / "bench-server.log").read_text())
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ready")
            if connection.getresponse().status == 200:
                print("RESULT", json.dumps({"root": str(root), "ready_s": round(time.perf_counter() - spawned, 2)}),
                      flush=True)
                return process, port
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not become ready")


def stream(port: int, body: dict, out: dict) -> None:
    """One streaming completion: counts the tokens of its SSE chunks, and the first one's time."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if not body["stream"]:
        tokens = json.loads(response.read())["usage"]["completion_tokens"]
        out.update(tokens=tokens, first=time.perf_counter() - started)
        return
    tokens, first = 0, None
    for line in response:  # parse only the usage chunk: the client must not be what limits
        if not line.startswith(b"data: {"):
            continue
        if first is None:
            first = time.perf_counter() - started
        if b'"completion_tokens"' in line:
            tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    out.update(tokens=tokens, first=first)


def wave(port: int, clients: int, tokens: int, mode: str, streamed: bool = True) -> dict:
    results = [dict() for _ in range(clients)]
    threads = []
    for i in range(clients):
        body = {"prompt": f"Request {i}: the story of a cat who", "max_tokens": tokens, "stream": streamed,
                "seed": i, **MODES[mode]}
        if streamed:
            body["stream_options"] = {"include_usage": True}
        threads.append(threading.Thread(target=stream, args=(port, body, results[i])))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = sum(r.get("tokens", 0) for r in results)
    firsts = sorted(r["first"] for r in results if r.get("first") is not None)
    return dict(clients=clients, mode=mode, tokens=total, seconds=round(elapsed, 2),
                aggregate_tps=round(total / elapsed, 1),
                median_first_token_s=round(firsts[len(firsts) // 2], 3) if firsts else None)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--modes", default="greedy,ai00,openai")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose server runs")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the server's threads (bench/sample_stacks.py) into this report")
    parser.add_argument("--trace", action="store_true",
                        help="with --profile: summarize the executor's steps (bench/trace_steps.py) instead")
    parser.add_argument("--switch-ms", type=float, default=None, help="with --trace: the server's GIL switch interval")
    parser.add_argument("--no-stream", action="store_true",
                        help="each client waits for the whole answer (median_first_token_s is then its time)")
    parser.add_argument("--fake-step-ms", type=float, default=None,
                        help="no GPU work: every step sleeps this long (bench/fake_engine.py), to measure the "
                             "HTTP path alone")
    parser.add_argument("--fake-options", default="", help="more of fake_engine.py's options, e.g. '--launch-ms 0.6'")
    parser.add_argument("--flush-ms", type=float, default=None,
                        help="[listen] stream_flush_ms: a stream writes at most this often (default: the server's)")
    parser.add_argument("--gpus", default=None, help="several executors: [adapter] gpus, e.g. 0,1 or all")
    parser.add_argument("--count", type=int, default=1, help="[adapter] count: executors on each GPU")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    gpus = None if args.gpus is None else '"all"' if args.gpus == "all" else f"[{args.gpus}]"
    adapter = f"[adapter]\ncount = {args.count}\n" + (f"gpus = {gpus}\n" if gpus else "")
    with tempfile.TemporaryDirectory() as folder:
        bench = ROOT / "bench"
        if args.fake_step_ms is not None:
            wrapper = [str(bench / "fake_engine.py"), "--step-ms", str(args.fake_step_ms), *args.fake_options.split()]
            wrapper += ["--profile", str(args.profile.resolve())] if args.profile else []
        elif args.profile:
            wrapper = [str(bench / ("trace_steps.py" if args.trace else "sample_stacks.py"))]
            wrapper += ["--switch-ms", str(args.switch_ms)] if args.trace and args.switch_ms else []
            wrapper.append(str(args.profile.resolve()))
        else:
            wrapper = []
        process, port = start_server(args.root.resolve(), args.model.resolve(), max(counts), Path(folder),
                                     wrapper + ["--"] if wrapper else [], extra=adapter, flush_ms=args.flush_ms)
        try:
            wave(port, 2, 8, "greedy")  # warm-up: step graphs and kernels
            for clients in counts:
                for mode in args.modes.split(","):
                    if args.profile:
                        Path(str(args.profile) + ".reset").touch()  # count this wave only (the
                        # report ends up with the last wave's)
                        time.sleep(0.1)
                    cpu = process_cpu_seconds(process.pid)
                    result = wave(port, clients, args.tokens, mode, not args.no_stream)
                    if cpu is not None:  # the server's CPU time (all its threads) per generated token
                        result["server_cpu_us_per_token"] = round(
                            (process_cpu_seconds(process.pid) - cpu) / max(result["tokens"], 1) * 1e6, 1)
                    if args.profile:
                        Path(str(args.profile) + ".freeze").touch()
                        time.sleep(2.2)  # the report is rewritten with this wave's counts
                        shutil.copy(args.profile, f"{args.profile}.{clients}-{mode}")
                    print("RESULT", json.dumps(dict(root=str(args.root), streamed=not args.no_stream, **result)),
                          flush=True)
        finally:
            if args.profile:
                time.sleep(2.5)  # the last report is written
            process.terminate()
            process.wait(30)
            print(Path(folder, "bench-server.log").read_text()[-2000:], file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
