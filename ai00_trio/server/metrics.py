"""GET /metrics: Prometheus text from a registry each app owns (several apps in one process,
as in the tests, never share figures). Requests are counted as they end (an ASGI wrapper, so a
stream counts its whole duration); everything the actors already keep for /api/status is read
at scrape time by a collector, so no actor calls into this module."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..gpu.context import buffer_bytes_in_use
from .lane_figures import lane_figures, total_figures

if TYPE_CHECKING:
    from .actors import Lane
    from .app import ServerState
    from .recovery import DeviceRecovery

ROUTE_KEY = "ai00.route"  # the ASGI scope's key for the matched rule, set by the app before its handler
UNMATCHED = "unmatched"   # the route label of a request no rule matched
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, state: ServerState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ai00_http_requests", "HTTP requests answered, by matched route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("ai00_http_request_duration_seconds",
                                 "From the request's arrival to its last byte (a stream's whole duration)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_token = Histogram("ai00_time_to_first_token_seconds",
                                     "From a generation's request to its first generated token",
                                     ["model"], buckets=FIRST_TOKEN_BUCKETS, registry=self.registry)
        self.registry.register(_ActorFigures(state))

    def first_token_observer(self, model: str) -> Callable[[float], None]:
        return self.first_token.labels(model).observe

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def wrap(self, asgi_app):
        """The app as ASGI, counting each HTTP request when its response ends (or its client leaves)."""
        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await asgi_app(scope, receive, send)
            started = time.perf_counter()
            status = [500]  # what a request that never started its response is counted as

            async def send_and_note(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await asgi_app(scope, receive, send_and_note)
            finally:
                route = scope.get(ROUTE_KEY, UNMATCHED)
                self.requests.labels(route, scope["method"], str(status[0])).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)
        return counted


class _ActorFigures(Collector):
    """The scheduler's, executor's and prefix cache's own counters, as they are when scraped."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # the families depend on whether a model is loaded: collected at each scrape

    def collect(self) -> Iterator[Metric]:
        state = self.state
        ready = GaugeMetricFamily("ai00_ready", "1 while a model serves requests "
                                  "(0 loading, failed, draining or recovering)")
        ready.add_metric([], float(state.graph is not None and not state.draining))
        yield ready
        gpu = GaugeMetricFamily("ai00_gpu_buffer_bytes", "Bytes of GPU buffers alive in this process "
                                "(weights, states, cached prefixes, scratch)")
        gpu.add_metric([], float(buffer_bytes_in_use()))
        yield gpu
        if state.lifecycle is not None:
            yield from _recovery_figures(state.lifecycle.recovery)
        loaded, graph = state.loaded, state.graph
        if state.load_seconds is not None and loaded is not None:
            yield _gauge("ai00_model_load_seconds", "How long the model took to load", loaded.name, state.load_seconds)
        if loaded is None or graph is None:
            return
        name, lanes = loaded.name, graph.lanes
        total = total_figures(lanes)  # what /api/status shows: the executors added up
        queue, tokens, cache = total["queue"], total["tokens"], total["prefix_cache"]
        yield _gauge("ai00_model_weight_bytes", "Bytes of the model's weights on the GPU (every executor's copy)",
                     name, sum(lane.loaded.model.weight_bytes for lane in lanes))
        yield _counter("ai00_prompt_tokens", "Prompt tokens of generations (cached ones included)", name,
                       tokens["prompt"])
        yield _counter("ai00_generated_tokens", "Tokens generated", name, tokens["generated"])
        yield _gauge("ai00_tokens_per_second", "Tokens per second of the last batch step (0 when idle); "
                     "rate(ai00_generated_tokens_total) gives the average", name,
                     sum(lane.executor.tokens_per_second for lane in lanes if lane.scheduler.active))
        yield _gauge("ai00_active_slots", "Batch slots serving a request", name, queue["active"])
        yield _gauge("ai00_batch_slots", "Batch slots ([model] max_batch, on every executor)", name,
                     queue["max_batch"])
        yield _gauge("ai00_batch_occupancy", "Active slots over batch slots", name,
                     queue["active"] / queue["max_batch"])
        yield _gauge("ai00_queue_waiting", "Requests in the waiting room for a slot", name, queue["waiting"])
        yield _gauge("ai00_queue_capacity", "The waiting room's size ([model] max_queue): beyond it, 429", name,
                     lanes[0].scheduler.max_queue)
        yield _counter("ai00_prefix_cache_hits", "Prompts that started from a cached prefix state", name, cache["hits"])
        yield _counter("ai00_prefix_cache_misses", "Prompts that found no cached prefix", name, cache["misses"])
        yield _counter("ai00_prefix_cache_hit_tokens", "Prompt tokens served from cached states, not prefilled",
                       name, cache["hit_tokens"])
        yield _gauge("ai00_prefix_cache_entries", "Cached prefix states", name, cache["entries"])
        placed = GaugeMetricFamily("ai00_prefix_cache_bytes", "Bytes of cached prefix states, by where they are",
                                   labels=["model", "tier"])
        placed.add_metric([name, "gpu"], float(cache["gpu_bytes"]))
        placed.add_metric([name, "host"], float(cache["host_bytes"]))
        yield placed
        yield from _executor_figures(name, lanes)


def _executor_figures(name: str, lanes: list[Lane]) -> Iterator[Metric]:
    """Each executor's own share ([adapter] gpus / count): slots, queue and prefix cache."""
    labels = ["model", "executor", "adapter"]
    families = [
        (GaugeMetricFamily("ai00_executor_active_slots", "Batch slots serving a request, by executor", labels=labels),
         ("queue", "active")),
        (GaugeMetricFamily("ai00_executor_queue_waiting", "Requests waiting for a slot, by executor", labels=labels),
         ("queue", "waiting")),
        (CounterMetricFamily("ai00_executor_generated_tokens", "Tokens generated, by executor", labels=labels),
         ("tokens", "generated")),
        (CounterMetricFamily("ai00_executor_prefix_cache_hits", "Prompts that started from a cached prefix state, "
                             "by executor", labels=labels), ("prefix_cache", "hits")),
        (CounterMetricFamily("ai00_executor_prefix_cache_hit_tokens", "Prompt tokens served from cached states, "
                             "by executor", labels=labels), ("prefix_cache", "hit_tokens")),
    ]
    figures = [lane_figures(lane) for lane in lanes]
    for family, (part, key) in families:
        for index, (lane, own) in enumerate(zip(lanes, figures)):
            family.add_metric([name, str(index), lane.loaded.model.ctx.info.name], float(own[part][key]))
        yield family


def _recovery_figures(recovery: DeviceRecovery) -> Iterator[Metric]:
    for family, name, documentation, value in (
            (CounterMetricFamily, "ai00_device_losses", "GPU devices lost while serving", recovery.losses),
            (CounterMetricFamily, "ai00_device_recoveries", "Models rebuilt on a new device after a loss",
             recovery.recoveries),
            (CounterMetricFamily, "ai00_device_rebuild_failures", "Rebuild attempts after a loss that failed",
             recovery.failed_rebuilds),
            (GaugeMetricFamily, "ai00_device_recovering", "1 while the model is rebuilt after a device loss",
             recovery.recovering)):
        metric = family(name, documentation)
        metric.add_metric([], float(value))
        yield metric


def _gauge(metric: str, documentation: str, model: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(metric, documentation, labels=["model"])
    family.add_metric([model], float(value))
    return family


def _counter(metric: str, documentation: str, model: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(metric, documentation, labels=["model"])
    family.add_metric([model], float(value))
    return family
