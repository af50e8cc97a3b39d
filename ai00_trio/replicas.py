"""Several servers on loopback ports with HAProxy in front, on one machine: for trying the
replicas set-up (`python -m ai00_trio replicas`) and for its tests.

The HAProxy configuration is deploy/haproxy.cfg with this set's ports: its `server r1` lines
are the pattern of every replica's line."""
from __future__ import annotations

import csv
import io
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HAPROXY_TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
CHECKED_BACKEND = "least_connections"  # the backend whose servers run the health checks
_SERVER_LINE = re.compile(r"^(\s*server\s+)r1\s+\S+(.*)$")
_OTHER_SERVER_LINE = re.compile(r"^\s*server\s+r(?:[2-9]|\d{2,})\s")
_ACCOUNT_LINE = re.compile(r"^\s*(?:user|group)\s+\S+\s*$")


class ReplicaError(RuntimeError):
    """A replica or HAProxy did not start, or did not come up in time."""


def render_haproxy_config(template: str, port: int, replica_ports: list[int], socket_path: Path,
                          ip: str = "127.0.0.1") -> str:
    """The template with its frontend bound to `ip:port`, one `server rN` line per replica port
    in each backend (made from the `server r1` line), its admin socket at `socket_path`, and
    no `user` or `group` (it runs as whoever starts it)."""
    lines: list[str] = []
    for line in template.splitlines():
        if match := _SERVER_LINE.match(line):
            head, rest = match.groups()
            for number, replica_port in enumerate(replica_ports, 1):
                options = re.sub(r"\bid 1\b", f"id {number}", re.sub(r"/r1\b", f"/r{number}", rest))
                lines.append(f"{head}r{number} 127.0.0.1:{replica_port}{options}")
        elif _OTHER_SERVER_LINE.match(line) or _ACCOUNT_LINE.match(line):
            continue  # (an unprivileged HAProxy cannot switch users: it stays the caller's)
        elif line.lstrip().startswith("bind "):
            lines.append(f"{line[:len(line) - len(line.lstrip())]}bind {ip}:{port}")
        elif line.lstrip().startswith("stats socket "):
            indent = line[:len(line) - len(line.lstrip())]
            lines.append(f"{indent}stats socket {socket_path} mode 600 level admin")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _get(url: str, timeout: float = 2) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@dataclass
class Replica:
    """One server process, `python -m ai00_trio serve` on a loopback port."""
    name: str
    port: int
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen([*self.command, "--ip", "127.0.0.1", "--port", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise ReplicaError(f"replica {self.name} exited; its log: {self.log_path}")
            try:
                if _get(self.url + "/ready") == 200:
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise ReplicaError(f"replica {self.name} was not ready after {timeout:g} s; its log: {self.log_path}")
            time.sleep(0.2)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (the server drains, then exits), SIGKILL after `timeout`; its exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with whatever it was serving."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class ReplicaSet:
    """`count` servers on ports `port + 1 ..` (or `replica_ports`), HAProxy on `port`; files
    (configuration, logs, admin socket) in `run_dir`. `serve_args` go to every
    `python -m ai00_trio serve`."""
    count: int
    port: int
    run_dir: Path
    serve_args: list[str] = field(default_factory=list)
    replica_ports: list[int] | None = None
    template: Path = HAPROXY_TEMPLATE
    haproxy: str = "haproxy"
    ip: str = "127.0.0.1"
    start_timeout: float = 120
    stop_timeout: float = 60
    replicas: list[Replica] = field(init=False, default_factory=list)
    haproxy_process: subprocess.Popen | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ai00_trio", "serve", *self.serve_args]
        ports = self.replica_ports or [self.port + number for number in range(1, self.count + 1)]
        if len(ports) != self.count:
            raise ValueError(f"{self.count} replicas need {self.count} ports, not {len(ports)}")
        self.replicas = [Replica(f"r{number}", port, command, self.run_dir / f"r{number}.log")
                         for number, port in enumerate(ports, 1)]

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "haproxy.sock"

    def __enter__(self) -> "ReplicaSet":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        if shutil.which(self.haproxy) is None:
            raise ReplicaError(f"{self.haproxy} not found: apt-get install haproxy (or `make haproxy`)")
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            replica.wait_ready(self.start_timeout)
        config = self.run_dir / "haproxy.cfg"
        config.write_text(render_haproxy_config(self.template.read_text(), self.port,
                                                [r.port for r in self.replicas], self.socket_path, self.ip))
        check = subprocess.run([self.haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ReplicaError(f"{config} is not valid: {check.stdout}{check.stderr}")
        with open(self.run_dir / "haproxy.log", "a") as log:
            # -db: in the foreground, so closing this set ends it
            self.haproxy_process = subprocess.Popen([self.haproxy, "-db", "-f", str(config)],
                                                    stdout=log, stderr=subprocess.STDOUT)
        for replica in self.replicas:
            self.wait_for_status(replica.name, "UP", self.start_timeout)

    def close(self) -> None:
        if self.haproxy_process is not None:
            self.haproxy_process.terminate()
            try:
                self.haproxy_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.haproxy_process.kill()
                self.haproxy_process.wait()
            self.haproxy_process = None
        for replica in self.replicas:
            replica.stop(self.stop_timeout)

    def admin(self, command: str) -> str:
        """One command on HAProxy's admin socket (`show stat`, `show table least_connections`...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's `show stat`: one row per frontend, backend and server."""
        return list(csv.DictReader(io.StringIO(self.admin("show stat").lstrip("# "))))

    def status(self) -> dict[str, str]:
        """Each replica's state in HAProxy's eyes: UP, DOWN, or on its way (`UP 1/2`, `DOWN 1/2`)."""
        return {row["svname"]: row["status"] for row in self.stats() if row["pxname"] == CHECKED_BACKEND
                and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_for_status(self, name: str, wanted: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.haproxy_process is None or self.haproxy_process.poll() is not None:
                raise ReplicaError(f"haproxy exited; its log: {self.run_dir / 'haproxy.log'}")
            try:
                if self.status().get(name) == wanted:
                    return
            except OSError:
                pass  # the socket is not there yet
            if time.monotonic() > deadline:
                raise ReplicaError(f"HAProxy did not see {name} {wanted} within {timeout:g} s")
            time.sleep(0.1)

    def restart(self, replica: Replica) -> None:
        """What `systemctl restart` does to one replica (SIGTERM, it drains and exits, a new
        one starts), then waits until HAProxy has it back in rotation (if HAProxy never saw it
        go, the new one answered its checks in time)."""
        replica.stop(self.stop_timeout)
        replica.start()
        replica.wait_ready(self.start_timeout)
        self.wait_for_status(replica.name, "UP", self.start_timeout)

    def rolling_restart(self) -> None:
        """Every replica in turn, the next one only once the last is back in rotation."""
        for replica in self.replicas:
            self.restart(replica)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM tears the set down as Ctrl-C does


def run(count: int, port: int, run_dir: Path, serve_args: list[str]) -> int:
    """The `replicas` command: up until Ctrl-C or SIGTERM; SIGHUP restarts the replicas one by one."""
    hangups: list[int] = []
    previous_hup = signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ReplicaSet(count, port, run_dir, serve_args) as replicas:
            ports = ", ".join(str(r.port) for r in replicas.replicas)
            print(f"[replicas] {count} servers on 127.0.0.1 ports {ports}; HAProxy on {replicas.url} "
                  f"(logs in {run_dir}); Ctrl-C stops them, SIGHUP restarts them one by one", file=sys.stderr,
                  flush=True)
            while True:
                time.sleep(0.5)
                if hangups:
                    hangups.clear()
                    print("[replicas] rolling restart", file=sys.stderr, flush=True)
                    replicas.rolling_restart()
                    print("[replicas] rolling restart done", file=sys.stderr, flush=True)
                if replicas.haproxy_process is None or replicas.haproxy_process.poll() is not None:
                    print("[replicas] haproxy exited", file=sys.stderr, flush=True)
                    return 1
    except KeyboardInterrupt:
        return 0
    except ReplicaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
        signal.signal(signal.SIGTERM, previous_term)
