"""The prefix cache's budgets sized from the machine's available memory."""
from __future__ import annotations

from ai00_trio.engine.cache_budget import cache_budget, memory_available

GIB = 1 << 30


def test_host_tier_takes_at_most_a_quarter_of_available_memory():
    budget = cache_budget(1 * GIB, 4 * GIB, software_adapter=False, available=8 * GIB)
    assert (budget.gpu_bytes, budget.host_bytes) == (1 * GIB, 2 * GIB)
    roomy = cache_budget(1 * GIB, 4 * GIB, software_adapter=False, available=64 * GIB)
    assert (roomy.gpu_bytes, roomy.host_bytes) == (1 * GIB, 4 * GIB)  # the configured bounds


def test_on_a_software_adapter_both_tiers_share_the_host_allowance():
    budget = cache_budget(1 * GIB, 4 * GIB, software_adapter=True, available=6 * GIB)
    assert (budget.gpu_bytes, budget.host_bytes) == (1 * GIB, GIB // 2)
    tight = cache_budget(1 * GIB, 4 * GIB, software_adapter=True, available=2 * GIB)
    assert (tight.gpu_bytes, tight.host_bytes) == (GIB // 2, 0)
    assert tight.configured_host_bytes == 4 * GIB and tight.memory_available_bytes == 2 * GIB


def test_memory_available_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    8000000 kB\n")
    assert memory_available(meminfo) == 8000000 * 1024
    assert memory_available(tmp_path / "absent") is None
    unknown = cache_budget(GIB, 4 * GIB, software_adapter=True, available=None)
    assert (unknown.gpu_bytes, unknown.host_bytes) == (GIB, 4 * GIB)
