"""Two servers behind HAProxy (deploy/haproxy.cfg, run by ai00_trio.replicas) on loopback: load
spread, conversation affinity, a replica killed mid-run, a rolling restart under load.

Needs Debian's `haproxy` (`make haproxy`); the servers run the bundled tiny model."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException

import pytest

from ai00_trio.config import ListenConfig
from ai00_trio.replicas import HAPROXY_TEMPLATE, ReplicaSet, render_haproxy_config
from server_helpers import ROOT, free_port, http

HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is missing: `make haproxy` installs "
                                   "Debian's package (or: apt-get install haproxy)")
CHAT = "/v1/chat/completions"


@dataclass
class Outcome:
    status: int = 0
    started: bool = False   # the response's headers had arrived: a stream had begun
    complete: bool = False  # the whole answer came (a stream up to [DONE])
    text: str = ""
    error: str = ""


def post(port: int, path: str, body: dict, headers: dict | None = None, outcome: Outcome | None = None) -> Outcome:
    """A POST through `port`; `outcome` is filled in as it goes (others may watch it)."""
    outcome = outcome or Outcome()
    connection = HTTPConnection("127.0.0.1", port, timeout=90)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        outcome.status, outcome.started = response.status, True
        outcome.text = response.read().decode()
        outcome.complete = response.status == 200 and (not body.get("stream") or "data: [DONE]" in outcome.text)
    except (OSError, HTTPException) as error:
        outcome.error = repr(error)
    finally:
        connection.close()
    return outcome


def counters(replica_url: str) -> tuple[float, float]:
    """(chat completions answered 200, prefix-cache hits) from a replica's own /metrics."""
    status, text = http("GET", replica_url + "/metrics", timeout=10)
    assert status == 200, text
    def value(pattern: str) -> float:
        return sum(float(v) for v in re.findall(pattern + r"\S* (\S+)$", text, re.M))
    chats = value(r'^ai00_http_requests_total\{method="POST",route="/v1/chat/completions",status="200"\}')
    return chats, value(r"^ai00_prefix_cache_hits_total\{")


def snapshot(replicas: ReplicaSet, chats: float = 0) -> list[tuple[float, float]]:
    """Every replica's counters, once they count `chats` chat completions in all: a server
    counts a request just after its last byte, so the client can be a moment ahead."""
    deadline = time.monotonic() + 10
    while True:
        figures = [counters(replica.url) for replica in replicas.replicas]
        if sum(chat for chat, _ in figures) >= chats or time.monotonic() > deadline:
            return figures
        time.sleep(0.05)


def total(figures: list[tuple[float, float]]) -> float:
    return sum(chat for chat, _ in figures)


def chat_body(messages: list[dict], max_tokens: int, stream: bool = False) -> dict:
    return {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream}


def test_rendered_config_has_every_replica_in_every_backend(tmp_path):
    text = render_haproxy_config(HAPROXY_TEMPLATE.read_text(), 9000, [9101, 9102, 9103], tmp_path / "h.sock")
    servers = re.findall(r"^\s*server (r\d) 127\.0\.0\.1:(\d+) id (\d)(.*)$", text, re.M)
    assert [(name, port, number) for name, port, number, _ in servers] == \
        [("r1", "9101", "1"), ("r2", "9102", "2"), ("r3", "9103", "3")] * 3
    assert [rest.strip() for *_, rest in servers[3:6]] == [f"track least_connections/r{n}" for n in (1, 2, 3)]
    assert re.search(r"^\s*bind 127\.0\.0\.1:9000$", text, re.M)
    assert f"stats socket {tmp_path / 'h.sock'} " in text
    assert "user haproxy" in HAPROXY_TEMPLATE.read_text() and "user haproxy" not in text
    if HAPROXY:  # and HAProxy itself accepts it
        (tmp_path / "haproxy.cfg").write_text(text)
        check = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_systemd_unit_lets_a_drain_finish():
    unit = dict(line.split("=", 1) for line in (ROOT / "deploy" / "ai00-trio@.service").read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    assert unit["KillSignal"] == "SIGTERM" and unit["KillMode"] == "mixed"
    assert float(unit["TimeoutStopSec"]) > ListenConfig().drain_seconds
    assert unit["ExecStart"].endswith("--port %i")  # the instance name is the port
    assert unit["RestartPreventExitStatus"] == "2"  # a configuration error


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    if HAPROXY is None:
        pytest.skip("haproxy is missing: `make haproxy` installs Debian's package (or: apt-get install haproxy)")
    tmp = tmp_path_factory.mktemp("replicas")
    config = tmp / "Config.toml"
    # two slots per replica, so a few concurrent requests already wait in a replica's queue
    config.write_text(f"""
[model]
path = "{ROOT / 'assets' / 'models'}"
name = "tiny-rwkv-7v0-834K.st"
max_batch = 2
token_chunk_size = 64
[listen]
drain_seconds = 30
""")
    with ReplicaSet(2, free_port(), tmp, ["--config", str(config)], replica_ports=[free_port(), free_port()],
                    start_timeout=90) as started:
        yield started


@pytest.mark.gpu
@needs_haproxy
def test_requests_without_a_key_spread_over_both_replicas(replicas):
    before = snapshot(replicas)
    for number in range(8):
        outcome = post(replicas.port, CHAT, chat_body([{"role": "user", "content": f"Count to {number}"}], 4))
        assert outcome.complete, outcome
    rose = [after[0] - earlier[0] for after, earlier in zip(snapshot(replicas, total(before) + 8), before)]
    assert sum(rose) == 8 and min(rose) >= 2, rose


@pytest.mark.gpu
@needs_haproxy
def test_every_turn_of_a_conversation_lands_on_its_replica(replicas):
    for conversation in (f"chat-{uuid.uuid4()}" for _ in range(3)):
        messages, owner = [], None
        for turn in range(3):
            messages.append({"role": "user", "content": f"Turn {turn} of {conversation}: go on."})
            before = snapshot(replicas)
            outcome = post(replicas.port, CHAT, chat_body(messages, 6), {"X-Conversation-Id": conversation})
            assert outcome.complete, outcome
            after = snapshot(replicas, total(before) + 1)
            served = [n for n, (a, b) in enumerate(zip(after, before)) if a[0] > b[0]]
            assert len(served) == 1, (after, before)
            owner = served[0] if owner is None else owner  # where it hashes to is the ring's business
            assert served[0] == owner, f"turn {turn} of {conversation} moved to another replica"
            other = 1 - owner
            assert after[other] == before[other]  # neither a request nor a cache hit on the other one
            if turn:  # the history so far is in the owner's prefix cache
                assert after[owner][1] == before[owner][1] + 1, (after, before)
            messages.append(json.loads(outcome.text)["choices"][0]["message"])


@pytest.mark.gpu
@needs_haproxy
def test_a_responses_chain_stays_on_the_replica_that_stores_it(replicas):
    for _chain in range(2):
        ids, previous = [], None
        for turn in range(4):
            body = {"input": f"Part {turn}, go on.", "max_output_tokens": 4}
            if previous:
                body["previous_response_id"] = previous
            status, answer = http("POST", replicas.url + "/v1/responses", body)
            assert status == 200, answer  # a turn sent to the other replica is a 404
            previous = answer["id"]
            ids.append(previous)
        holders = {tuple(http("GET", f"{r.url}/v1/responses/{i}")[0] == 200 for r in replicas.replicas)
                   for i in ids}
        assert len(holders) == 1 and sum(next(iter(holders))) == 1, holders  # one replica holds them all
        assert http("GET", f"{replicas.url}/v1/responses/{ids[0]}")[0] == 200  # found through HAProxy too
    assert ids[-1] in replicas.admin("show table least_connections")


@pytest.mark.gpu
@needs_haproxy
def test_a_stored_response_names_itself_in_a_header(replicas):
    """What HAProxy's stick table learns from: X-Response-Id, streamed or not, only if stored."""
    for store, stream in ((True, False), (True, True), (False, False)):
        connection = HTTPConnection("127.0.0.1", replicas.replicas[0].port, timeout=60)
        body = {"input": "Hi", "max_output_tokens": 2, "store": store, "stream": stream}
        connection.request("POST", "/v1/responses", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        header, text = response.getheader("X-Response-Id"), response.read().decode()
        connection.close()
        assert response.status == 200, text
        if store:
            assert header and header.startswith("resp_") and f'"id":"{header}"' in text.replace(" ", "")
        else:
            assert header is None


def redispatches(replicas: ReplicaSet) -> int:
    return sum(int(row["wredis"] or 0) for row in replicas.stats() if row["svname"] == "BACKEND")


@pytest.mark.gpu
@needs_haproxy
def test_a_killed_replica_loses_no_request_that_had_not_started_streaming(replicas):
    victim, survivor = replicas.replicas
    outcomes = [Outcome() for _ in range(10)]
    def send(outcome: Outcome, content: str, max_tokens: int) -> None:
        post(replicas.port, CHAT, chat_body([{"role": "user", "content": content}], max_tokens, stream=True),
             outcome=outcome)
    long_runs = [threading.Thread(target=send, args=(outcomes[n], f"Story {n}", 200)) for n in range(6)]
    for thread in long_runs:  # three on each replica: two streaming in its slots, one waiting for a slot
        thread.start()
    deadline = time.monotonic() + 60
    while sum(o.started for o in outcomes) < 4:
        assert time.monotonic() < deadline, outcomes
        time.sleep(0.02)
    redispatched = redispatches(replicas)
    victim.kill()
    late = [threading.Thread(target=send, args=(outcomes[n], f"Late {n}", 4)) for n in range(6, 10)]
    for thread in late:  # HAProxy still counts the victim in: these are refused there and retried
        thread.start()
    for thread in long_runs + late:
        thread.join(timeout=120)
    lost = [o for o in outcomes if not o.complete]
    assert all(o.started for o in lost), lost  # only streams already under way may be cut
    assert len(lost) <= 2, outcomes  # at most the victim's two running streams
    assert redispatches(replicas) > redispatched
    replicas.wait_for_status(victim.name, "DOWN", 30)
    before = counters(survivor.url)[0]
    for n in range(3):
        assert post(replicas.port, CHAT, chat_body([{"role": "user", "content": f"After {n}"}], 4)).complete
    deadline = time.monotonic() + 10
    while counters(survivor.url)[0] < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # (counted a moment after the last byte)
    assert counters(survivor.url)[0] == before + 3
    replicas.restart(victim)  # back in rotation for the next test
    assert replicas.status() == {"r1": "UP", "r2": "UP"}


@pytest.mark.gpu
@needs_haproxy
def test_a_rolling_restart_under_steady_load_fails_no_request(replicas):
    pids = [replica.process.pid for replica in replicas.replicas]
    outcomes: list[Outcome] = []
    stop = threading.Event()
    def client(number: int) -> None:
        turn = 0
        while not stop.is_set():
            body = chat_body([{"role": "user", "content": f"Client {number}, request {turn}"}], 12, stream=turn % 2 == 0)
            outcomes.append(post(replicas.port, CHAT, body))
            turn += 1
    clients = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1)
        replicas.rolling_restart()
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
    failed = [o for o in outcomes if not o.complete]
    assert not failed, failed
    assert len(outcomes) >= 10
    assert all(r.process.pid not in pids for r in replicas.replicas)
    assert counters(replicas.replicas[0].url)[0] > 0  # the first one back carried the load meanwhile
