"""What the actors share read-only: the loaded model, its tokenizer and named initial states."""
from __future__ import annotations

import dataclasses
import itertools
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio

from ..config import AdapterConfig, Config
from ..engine import Model, State
from ..engine.model import load_copies
from ..engine.formats import read_checkpoint
from ..gpu.context import list_adapters
from ..tokenizer import load_tokenizer
from .paths import PathRefused, relative_to_root, resolve_inside


STOP_SETS_KEPT = 256  # sets of stop strings whose stop tokens LoadedModel remembers
ENCODE_INLINE_CHARS = 2048  # longer texts are encoded in a worker thread (a thread costs ~0.1 ms)


@dataclass
class InitialState:
    """A state-tuned starting point. `state` is on the model's GPU (loaded with the model) or a
    host array in `State.to_host` layout (attached while serving: the executor uploads it at
    each Load, so only the executor touches the serving GPU). `scope` keeps its prefix-cache
    entries apart from every other state's; a scope is never reused."""
    id: str
    name: str
    state: State | np.ndarray
    default: bool = False
    path: str = ""
    scope: int = 0


@dataclass
class LoadedModel:
    model: Model
    tokenizer: object
    name: str
    path: str
    created: int
    states: dict[str, InitialState] = field(default_factory=dict)
    folder: str = ""  # the models folder: state files named by requests are read from inside it

    _scopes: Iterator[int] = field(default_factory=lambda: itertools.count(1))  # (0 is the zero state's)
    _trie: object = None
    _stop_tokens: dict[tuple[str, ...], frozenset[int]] = field(default_factory=dict)

    async def encode(self, text: str) -> list[int]:
        """Token ids of `text`; long texts in a worker thread, so the event loop keeps streaming."""
        if len(text) <= ENCODE_INLINE_CHARS:
            return self.tokenizer.encode(text)
        return await trio.to_thread.run_sync(self.tokenizer.encode, text)

    async def stop_tokens(self, stops: tuple[str, ...]) -> frozenset[int]:
        """The tokens whose text holds one of `stops` whole: a GPU decode chain ends at them.
        A scan of the vocabulary (~40 ms for 65,536 tokens) in a worker thread; the event loop
        alone keeps the last STOP_SETS_KEPT answers."""
        found = self._stop_tokens.get(stops)
        if found is None:
            found = await trio.to_thread.run_sync(self._scan_stop_tokens, stops)
            if len(self._stop_tokens) >= STOP_SETS_KEPT:
                self._stop_tokens.pop(next(iter(self._stop_tokens)))
            self._stop_tokens[stops] = found
        return found

    def _scan_stop_tokens(self, stops: tuple[str, ...]) -> frozenset[int]:
        wanted = [stop.encode() for stop in stops if stop]
        token_bytes = self.tokenizer.token_bytes
        ids = range(min(self.model.info.n_vocab, self.tokenizer.vocab_size))
        return frozenset(t for t in ids if any(w in token_bytes(t) for w in wanted))

    def vocab_trie(self):
        """The tokenizer's vocabulary as a byte trie, for grammar masks (built on first use)."""
        if self._trie is None:
            from ..grammar import VocabTrie

            self._trie = VocabTrie.from_tokenizer(self.tokenizer)
        return self._trie

    @property
    def eos_token(self) -> int | None:
        return getattr(self.tokenizer, "end_of_text_id", None)

    def default_state(self) -> InitialState | None:
        return next((s for s in self.states.values() if s.default), None)

    def new_scope(self) -> int:
        return next(self._scopes)

    def on(self, model: Model) -> LoadedModel:
        """The same model served by another executor from its own copy of the weights, `model`:
        the tokenizer, the states and their cache scopes are shared (the states must then be
        host arrays, which every executor uploads itself)."""
        return dataclasses.replace(self, model=model)

    def add_state(self, state_id: str, name: str, state: State | np.ndarray, default: bool, path: str) -> InitialState:
        """Attach (or replace) the state `state_id`; a new default replaces the old one."""
        if default:
            for other in self.states.values():
                other.default = False
        entry = InitialState(state_id, name, state, default, path, self.new_scope())
        self.states[state_id] = entry
        return entry


def _progress(message: str) -> None:
    print(f"[ai00-trio] {message}", file=sys.stderr, flush=True)


class ProgressBar:
    """`[##########----------]  50%` on stderr while the weights go to the GPU, redrawn in place on
    a terminal; in a log file (stderr not a terminal) one line per quarter instead."""

    def __init__(self, width: int = 30, terminal: bool | None = None) -> None:
        self.width = width
        self.shown = -1
        self.step = 1 if (sys.stderr.isatty() if terminal is None else terminal) else 25

    def __call__(self, fraction: float) -> None:
        percent = int(fraction * 100 + 1e-9) // self.step * self.step  # (0.29 * 100 is 28.99...)
        if percent <= self.shown:
            return
        self.shown = percent
        filled = int(percent / 100 * self.width)
        bar = f"[ai00-trio] uploading weights [{'#' * filled}{'-' * (self.width - filled)}] {percent:3d}%"
        if self.step == 1:
            print("\r" + bar, end="\n" if percent >= 100 else "", file=sys.stderr, flush=True)
        else:
            print(bar, file=sys.stderr, flush=True)


def read_state_file(model: Model, path: Path) -> np.ndarray:
    """A state-tuning file (`blocks.{i}.att.time_state` [H, N, N] per layer, token shifts zero)
    as a host array in `State.to_host` layout; reads the file only, never the GPU."""
    tensors = read_checkpoint(path, layout="pytorch")
    info = model.info
    arrays = []
    zeros = [0.0] * info.n_embd
    for layer in range(info.n_layer):
        name = f"blocks.{layer}.att.time_state"
        if name not in tensors:
            raise ValueError(f"{path}: missing {name}")
        wkv = tensors[name].astype("float32").reshape(info.n_head, info.head_size, info.head_size)
        arrays += [zeros, model.arch.wkv_from_time_state(wkv), zeros]
    rows = model.arch.reference_rows
    return np.concatenate([model.arch.layer_from_reference(arrays[i:i + rows]) for i in range(0, len(arrays), rows)])


def load_state_file(model: Model, path: Path) -> State:
    return model.state_from_host(read_state_file(model, path))


def _inside(root: str, path: str, key: str) -> Path:
    try:
        return resolve_inside(root, path)
    except PathRefused as error:
        raise PathRefused(f"{key}: {error}", key) from None


def executor_adapters(adapter: AdapterConfig) -> list[int | str | None]:
    """The adapter of each executor `[adapter]` asks for (`gpus = "all"`: every one listed)."""
    return adapter.executors(len(list_adapters()) if adapter.gpus == "all" else 0)


def load_service(config: Config) -> list[LoadedModel]:
    """The `[model]` chat model, once for each of its executors (`[adapter] gpus` and `count`):
    one copy of the weights on each executor's own device."""
    root = config.model.path  # every file is resolved before any is read: a path refused costs nothing
    path = _inside(root, config.model.name, "[model] name")
    loras = [(_inside(root, lora.path, "[[lora]] path"), lora.alpha) for lora in config.lora]
    state_paths = [_inside(root, entry.path, "[[state]] path") for entry in config.state]
    adapters = executor_adapters(config.adapter)
    quant = f", {config.model.quant_kind} in {config.model.quant_layers} layers" if config.model.quant_layers else ""
    shown_executors = f" for {len(adapters)} executors" if len(adapters) > 1 else ""
    _progress(f"loading {path} ({config.model.precision}{quant}){shown_executors} ...")
    started = time.perf_counter()
    for lora_path, alpha in loras:
        _progress(f"merging LoRA {lora_path} (alpha {alpha:g})")
    models = load_copies(path, adapters, progress=ProgressBar, loras=loras, precision=config.model.precision,
                         chunk_size=config.model.token_chunk_size, quant=config.model.quant_layers,
                         quant_type=config.model.quant_kind)
    model = models[0]
    kind = config.tokenizer.kind
    if kind == "auto":
        kind = "bytes" if model.info.n_vocab <= 256 else "world"
    tokenizer = load_tokenizer(kind, config.tokenizer.path if kind == "world" else None)
    shown = config.model.file  # as configured: the name clients see, whatever a symlink leads to
    loaded = LoadedModel(model, tokenizer, shown.stem, str(shown), int(time.time()), folder=root)
    loaded.vocab_trie()  # grammar masks need it; build it now rather than on a first request
    for entry, state_path in zip(config.state, state_paths):
        # with several executors, each uploads the state itself: it stays a host array
        state = read_state_file(model, state_path) if len(adapters) > 1 else load_state_file(model, state_path)
        loaded.add_state(entry.id or str(uuid.uuid4()), entry.name or Path(entry.path).stem, state, entry.default,
                         relative_to_root(root, state_path))
    executors = [loaded] + [loaded.on(copy) for copy in models[1:]]
    info = model.info
    where = f"{model.ctx.info.name} ({model.ctx.info.backend})"
    if len(executors) > 1:
        names = {f"{e.model.ctx.info.name} ({e.model.ctx.info.backend})" for e in executors}
        where = f"{len(executors)} devices ({', '.join(sorted(names))}), a copy on each"
    _progress(f"loaded {info.version} model: {info.n_layer} layers, {info.n_embd} channels, vocab {info.n_vocab}, "
              f"{model.weight_bytes / 2**20:.1f} MiB of weights on {where} in {time.perf_counter() - started:.1f}s")
    return executors
