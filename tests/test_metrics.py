"""GET /metrics: Prometheus text that parses, figures that move by what the requests did."""
from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ai00_trio.config import Config
from ai00_trio.server.app import ServerState
from server_helpers import http, running_server

KEY = "metrics-test-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
PROMPT = "Once upon a time, in a land far away,"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(base: str) -> tuple[dict, str]:
    request = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return samples(text), text


def test_registries_are_per_app_and_work_before_a_model_loads():
    first, second = ServerState(Config()), ServerState(Config())
    assert first.metrics.registry is not second.metrics.registry
    first.metrics.requests.labels("/health", "GET", "200").inc()
    one, two = samples(first.metrics.render().decode()), samples(second.metrics.render().decode())
    assert value(one, "ai00_http_requests_total", route="/health", method="GET", status="200") == 1
    assert value(two, "ai00_http_requests_total", route="/health", method="GET", status="200") == 0
    assert value(one, "ai00_ready") == 0  # no model yet: no model figures either
    assert not any(name == "ai00_active_slots" for name, _ in one)


@pytest.mark.gpu
def test_metrics_move_by_what_the_requests_did(tmp_path):
    with running_server(tmp_path, listen_options={"api_keys": [KEY]}) as base:
        status, _ = http("GET", base + "/metrics")
        assert status == 401  # like every route but /health
        before, _ = scrape(base)
        model = next(labels for name, labels in before if name == "ai00_batch_slots")[0][1]
        usages = []
        for stream in (False, True, False):  # the third repeats the first: a prefix-cache hit
            body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            status, answer = http("POST", base + "/v1/completions", body, headers=AUTH)
            assert status == 200, answer
            if stream:
                events = [json.loads(line[6:]) for line in answer.splitlines()
                          if line.startswith("data: {")]
                answer = events[-1]
            usages.append(answer["usage"])
        assert http("POST", base + "/v1/no/such/route", {}, headers=AUTH)[0] == 404
        assert http("GET", base + "/v1/models")[0] == 401
        assert http("GET", base + "/some/page/xyz-unique.html")[0] == 404
        after, text = scrape(base)
        _, status_now = http("GET", base + "/api/status", headers=AUTH)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/completions"
    assert moved("ai00_http_requests_total", route=route, method="POST", status="200") == 3
    assert moved("ai00_http_request_duration_seconds_count", route=route) == 3
    assert moved("ai00_http_request_duration_seconds_sum", route=route) > 0
    assert moved("ai00_http_requests_total", route="unmatched", method="POST", status="404") == 1
    assert moved("ai00_http_requests_total", route="/v1/models", method="GET", status="401") == 1
    assert moved("ai00_http_requests_total", route="/<path:path>", method="GET", status="404") == 1
    assert "xyz-unique" not in text  # routes are labelled by their rule, never by the raw path
    assert moved("ai00_prompt_tokens_total", model=model) == sum(u["prompt_tokens"] for u in usages)
    assert moved("ai00_generated_tokens_total", model=model) == sum(u["completion_tokens"] for u in usages)
    assert all(u["completion_tokens"] > 0 for u in usages)
    assert moved("ai00_time_to_first_token_seconds_count", model=model) == 3
    assert moved("ai00_prefix_cache_hits_total", model=model) >= 1
    cache = status_now["prefix_cache"]  # nothing ran between the scrape and the status
    assert value(after, "ai00_prefix_cache_hits_total", model=model) == cache["hits"]
    assert value(after, "ai00_prefix_cache_misses_total", model=model) == cache["misses"]
    assert value(after, "ai00_prefix_cache_hit_tokens_total", model=model) == cache["hit_tokens"] > 0
    assert value(after, "ai00_prefix_cache_entries", model=model) == cache["entries"]
    assert value(after, "ai00_prefix_cache_bytes", model=model, tier="host") == cache["host_bytes"]
    assert value(after, "ai00_active_slots", model=model) == 0
    assert value(after, "ai00_queue_waiting", model=model) == 0
    assert value(after, "ai00_batch_slots", model=model) == status_now["queue"]["max_batch"] == 8
    assert value(after, "ai00_batch_occupancy", model=model) == 0
    assert value(after, "ai00_ready") == 1
    assert value(after, "ai00_model_load_seconds", model=model) > 0
    weights = value(after, "ai00_model_weight_bytes", model=model)
    assert weights == status_now["model"]["weight_bytes"]
    assert value(after, "ai00_gpu_buffer_bytes") >= weights
