"""Shared fixtures: one GPU context for the whole run, models cached per (file, precision)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

# name -> (model file, reference vectors base name)
TINY_MODELS = {
    "v4": (DATA / "tiny-rwkv-4v0-660K.st", "vectors-4v0-660K"),
    "v5.1": (DATA / "tiny-rwkv-5v1-730K.st", "vectors-5v1-730K"),
    "v5.2": (DATA / "tiny-rwkv-5v2-730K.st", "vectors-5v2-730K"),
    "v6": (DATA / "tiny-rwkv-6v0-3m-Q5_1-dequant.st", "vectors-6v0-3m"),
    "v7": (ROOT / "assets" / "models" / "tiny-rwkv-7v0-834K.st", "vectors-7v0-834K"),
}


# Fixtures that put work on the GPU adapter (the software one here): a test using any of them,
# directly or through another fixture, is marked `gpu`, so `pytest -m "not gpu"` is the CPU set.
GPU_FIXTURES = {"gpu", "load_tiny", "server", "client", "engine"}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "gpu: runs on a GPU adapter (lavapipe on the CPU machines)")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if GPU_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gpu)


class Reference:
    """The reference vectors of one tiny model (see tests/data/*.json)."""

    def __init__(self, base: str) -> None:
        self.index = json.loads((DATA / f"{base}.json").read_text())
        self.tensors = load_file(str(DATA / f"{base}.safetensors"))
        self.prompts = [p["id"] for p in self.index["prompts"]]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.tensors[key]

    def tokens(self, prompt: str) -> list[int]:
        return [int(t) for t in self.tensors[f"{prompt}/tokens"]]

    def state(self, prompt: str) -> list[np.ndarray]:
        n = self.index["state"]["length"]
        return [self.tensors[f"{prompt}/state/{j}"] for j in range(n)]


@pytest.fixture(scope="session")
def gpu():
    from ai00_trio.gpu.context import create_context

    return create_context()


@pytest.fixture(scope="session")
def load_tiny(gpu):
    from ai00_trio.engine import load_model

    cache: dict = {}

    def load(name: str, precision: str = "fp32", chunk_size: int = 256, path: Path | None = None):
        key = (name, precision, chunk_size, path)
        if key not in cache:
            cache[key] = load_model(path or TINY_MODELS[name][0], precision=precision,
                                    chunk_size=chunk_size, context=gpu)
        return cache[key]

    return load


@pytest.fixture(scope="session")
def references():
    cache: dict = {}

    def get(name: str) -> Reference:
        if name not in cache:
            cache[name] = Reference(TINY_MODELS[name][1])
        return cache[name]

    return get
