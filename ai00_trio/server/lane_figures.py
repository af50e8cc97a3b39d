"""`/api/status` figures of a chat model's lanes (its executors): each lane's own, and their sums."""
from __future__ import annotations

import dataclasses
from typing import Any

from .actors import Lane


def lane_figures(lane: Lane) -> dict[str, Any]:
    scheduler, executor = lane.scheduler, lane.executor
    return {
        "queue": {"active": scheduler.active, "waiting": scheduler.queue_depth, "max_batch": scheduler.max_batch},
        "tokens": {"prompt": scheduler.prompt_tokens, "generated": scheduler.generated_tokens},
        "tokens_per_second": round(executor.tokens_per_second, 1),
        "outputs": {"gpu_choices": executor.gpu_choices, "logits_rows": executor.logits_replies},
        "prefix_cache": {**dataclasses.asdict(scheduler.cache.stats()),
                         "budget": dataclasses.asdict(lane.cache_budget)},
    }


def total_figures(lanes: list[Lane]) -> dict[str, Any]:
    """The lanes' figures added up; the cache budget is each lane's (they are alike)."""
    each = [lane_figures(lane) for lane in lanes]
    total = _sum(each)
    total["prefix_cache"]["budget"] = each[0]["prefix_cache"]["budget"]
    return total


def _sum(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {key: _sum([v[key] for v in values]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return round(sum(values), 1) if isinstance(first, float) else sum(values)
    return first
