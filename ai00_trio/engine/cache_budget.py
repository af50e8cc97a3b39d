"""The prefix cache's budgets, sized from the machine: `[cache]` gives upper bounds, and the
host tier never gets more than a fraction of the memory available when the server starts. On a
software adapter (lavapipe: "GPU" buffers are host memory) both tiers share that allowance."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOST_FRACTION = 0.25  # of MemAvailable: the rest stays for the weights, the batch and the OS


@dataclass(frozen=True)
class CacheBudget:
    gpu_bytes: int
    host_bytes: int
    configured_gpu_bytes: int
    configured_host_bytes: int
    memory_available_bytes: int | None  # MemAvailable at start; None where /proc/meminfo is not there
    software_adapter: bool               # the GPU tier counted against host memory too


def memory_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes (Linux), or None."""
    try:
        for line in meminfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_budget(gpu_bytes: int, host_bytes: int, software_adapter: bool, available: int | None) -> CacheBudget:
    gpu, host = gpu_bytes, host_bytes
    if available is not None:
        allowance = int(available * HOST_FRACTION)
        if software_adapter:
            gpu = min(gpu, allowance)
            host = min(host, allowance - gpu)
        else:
            host = min(host, allowance)
    return CacheBudget(gpu, host, gpu_bytes, host_bytes, available, software_adapter)
