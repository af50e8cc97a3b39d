"""`Config.toml`, parsed into msgspec Structs. Unknown keys are errors that name the key.
AI00's own Config.toml is read too (`config_ai00.py` says how the two are told apart)."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Callable, Literal

import msgspec


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ModelConfig(Section):
    path: str = "assets/models"          # folder; `name` is resolved inside it
    name: str = "tiny-rwkv-7v0-834K.st"
    precision: str = "fp16"              # fp16 | fp32 (AI00's Fp16/Fp32 accepted)
    quant: int = 0                       # layers (from layer 0) whose projections are quantized
    quant_type: str = "None"             # None | Int8 | NF4 (AI00's SF4 is not supported)
    max_batch: int = 8
    token_chunk_size: int = 256
    stop: list[str] = msgspec.field(default_factory=lambda: ["\n\n"])
    max_queue: int = 64                  # requests waiting for a slot before new ones get 429
    queue_timeout: float = 120.0         # seconds a request waits for a slot before it gets 503
    max_generation_seconds: float = 600.0  # a request generating longer stops there (finish_reason "length"); 0: no limit
    max_tokens_cap: int = 16384          # the most tokens one request may ask to generate
    aliases: list[str] = msgspec.field(default_factory=list)  # more names clients may ask for
    strict_names: bool = False           # unknown `model` names get 404 (else the loaded model serves them)
    max_prompt_tokens: int = 16384
    max_embed_inputs: int = 2048         # inputs one embeddings request may give
    max_embed_tokens: int = 131072       # their tokens together
    grammar_compile_seconds: float = 10.0  # a request's bnf_schema / response_format compiles within this, or 400

    @property
    def file(self) -> Path:
        return Path(self.path) / self.name

    @property
    def quant_kind(self) -> str:
        """engine/quant.py's name of quant_type ("int8" when none is chosen)."""
        return self.quant_type.lower() if self.quant_type.lower() in ("int8", "nf4") else "int8"

    @property
    def quant_layers(self) -> int:
        return 0 if self.quant_type.lower() == "none" else self.quant


class StateConfig(Section):
    path: str
    name: str | None = None
    id: str | None = None
    default: bool = False


class LoraConfig(Section):
    """An adapter merged into the model at load time (`engine/lora.py`); `path` is inside model.path."""
    path: str
    alpha: float = 1.0


class TokenizerConfig(Section):
    kind: Literal["auto", "world", "bytes"] = "auto"   # auto: bytes for 256-token models
    path: str = "assets/tokenizer/rwkv_vocab_v20230424.txt"


class AdapterConfig(Section):
    """AI00 style `Auto = {}` / `Economical = {}` / `Manual = N`, or `name = "part of name"`."""
    Auto: dict | None = None
    Economical: dict | None = None
    Manual: int | None = None
    name: str | None = None
    memory_bytes: int | None = None      # GPU memory the models may use (wgpu reports none); loads past it get 400
    gpus: list[int | str] | Literal["all"] | None = None  # several GPUs (index or part of a name), or "all"
    count: int = 1                       # executors per GPU, each with its own copy of the model, slots and cache

    @property
    def choice(self) -> int | str | None:
        if self.Manual is not None:
            return self.Manual
        return self.name

    def executors(self, adapters: int) -> list[int | str | None]:
        """The adapter of each executor of the `[model]` chat model, given how many adapters the
        machine has (for "all")."""
        gpus = list(range(adapters)) if self.gpus == "all" else self.gpus or [self.choice]
        return [gpu for gpu in gpus for _ in range(self.count)]


class ListenConfig(Section):
    ip: str = "127.0.0.1"
    port: int = 65530
    tls: bool = False
    cert: str = "assets/certs/cert.pem"
    key: str = "assets/certs/key.pem"
    api_keys: list[str] = msgspec.field(default_factory=list)
    drain_seconds: float = 30.0          # on SIGTERM/SIGINT: how long running requests may take to finish
    cors_origins: list[str] = msgspec.field(default_factory=list)  # web origins allowed to call the API ("*": any)
    stream_flush_ms: float = 0.0         # a stream writes at most this often (its first token at once); 0: every token


class WebConfig(Section):
    path: str = "webui"


class CacheConfig(Section):
    gpu_bytes: int = 1 << 30
    host_bytes: int = 4 << 30


class ResponsesConfig(Section):
    max_stored: int = 256                # /v1/responses kept for retrieval and previous_response_id (oldest go first)


class AppKey(Section):
    """An AI00 app id and secret that POST /api/auth/exchange trades for an admin token."""
    app_id: str
    secret_key: str


class AdminConfig(Section):
    """The /admin routes: closed (403) until `keys` or `app_keys` are set."""
    keys: list[str] = msgspec.field(default_factory=list)          # Authorization: Bearer <key>
    app_keys: list[AppKey] = msgspec.field(default_factory=list)   # AI00's JWT exchange
    jwt_secret: str = ""                 # HS256 secret of exchanged tokens; empty: a random one per start
    expire_sec: int = 86400              # lifetime of an exchanged token


class RetrievalModelConfig(Section):
    """An EmbeddingRWKV embedding model (`[embedding]`) or its reranker (`[rerank]`), served beside
    the chat model on a GPU device of its own."""
    path: str                            # .pth as published, or safetensors
    name: str | None = None              # what `model` calls it (default: the file name without suffix)
    precision: str = "fp16"              # fp16 | fp32
    adapter: int | str | None = None     # [embedding] only: the GPU (index or name); default the first
    max_batch: int = 8                   # [embedding] only: texts run together
    token_chunk_size: int = 256          # [embedding] only: tokens per GPU step


class ChatModelEntry(Section):
    """One more chat model (`[[models]]`), served beside `[model]` with its own slots and queue;
    requests whose `model` is its name or an alias go to it. Files are inside `[model] path`."""
    name: str
    path: str                            # the checkpoint, inside [model] path
    kind: Literal["chat"] = "chat"       # [embedding] and [rerank] name the retrieval models
    precision: str = "fp16"
    max_batch: int = 8
    token_chunk_size: int = 256
    aliases: list[str] = msgspec.field(default_factory=list)


class Config(Section):
    model: ModelConfig = msgspec.field(default_factory=ModelConfig)
    state: list[StateConfig] = msgspec.field(default_factory=list)
    lora: list[LoraConfig] = msgspec.field(default_factory=list)
    tokenizer: TokenizerConfig = msgspec.field(default_factory=TokenizerConfig)
    adapter: AdapterConfig = msgspec.field(default_factory=AdapterConfig)
    listen: ListenConfig = msgspec.field(default_factory=ListenConfig)
    web: WebConfig | None = msgspec.field(default_factory=WebConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    embedding: RetrievalModelConfig | None = None
    rerank: RetrievalModelConfig | None = None
    models: list[ChatModelEntry] = msgspec.field(default_factory=list)


MAX_EXECUTORS = 16  # executors of one chat model ([adapter] gpus × count)


class ConfigError(ValueError):
    pass


def normalize_precision(value: str) -> str:
    lowered = value.lower()
    if lowered not in ("fp16", "fp32"):
        raise ConfigError(f"model.precision: expected fp16 or fp32, got {value!r}")
    return lowered


def _log(message: str) -> None:
    print(f"[ai00-trio] {message}", file=sys.stderr, flush=True)


def parse_config(text: str, source: str = "<config>", note: Callable[[str], None] = _log) -> Config:
    """`note` hears, once each, what an AI00 Config.toml holds that is ignored or replaced."""
    from .config_ai00 import from_ai00, is_ai00_config

    try:
        raw = tomllib.loads(text)
        if is_ai00_config(raw):
            sections = {"model": ModelConfig, "state": StateConfig, "lora": LoraConfig, "tokenizer": TokenizerConfig,
                        "adapter": AdapterConfig, "listen": ListenConfig, "web": WebConfig, "cache": CacheConfig,
                        "responses": ResponsesConfig, "admin": AdminConfig}
            raw, notes = from_ai00(raw, sections, Path(TokenizerConfig().path))
            note("; ".join([f"{source}: read as AI00's Config.toml", *notes]))
        listen = raw.get("listen")
        if isinstance(listen, dict) and isinstance(listen.get("cors_origins"), str):  # `cors_origins = "*"`
            listen["cors_origins"] = [listen["cors_origins"]]
        config = msgspec.convert(raw, Config)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: {error}") from None
    except msgspec.ValidationError as error:
        raise ConfigError(f"{source}: {error}") from None
    config.model.precision = normalize_precision(config.model.precision)
    if config.model.quant_type.lower() not in ("none", "int8", "nf4"):
        raise ConfigError(f"{source}: model.quant_type: expected None, Int8 or NF4, got {config.model.quant_type!r}"
                          + (" (SF4 is not supported)" if config.model.quant_type.lower() == "sf4" else ""))
    if config.model.quant < 0:
        raise ConfigError(f"{source}: model.quant must be 0 or more (layers to quantize)")
    if config.model.max_batch < 1 or config.model.token_chunk_size < 1:
        raise ConfigError(f"{source}: model.max_batch and model.token_chunk_size must be positive")
    if config.model.max_embed_inputs < 1 or config.model.max_embed_tokens < 1:
        raise ConfigError(f"{source}: model.max_embed_inputs and model.max_embed_tokens must be positive")
    if not config.model.grammar_compile_seconds > 0:
        raise ConfigError(f"{source}: model.grammar_compile_seconds must be positive")
    if not 0 <= config.listen.stream_flush_ms <= 1000:
        raise ConfigError(f"{source}: listen.stream_flush_ms must be between 0 and 1000")
    if not 1 <= config.adapter.count <= MAX_EXECUTORS or (isinstance(config.adapter.gpus, list) and
                                                          not 1 <= len(config.adapter.gpus) * config.adapter.count
                                                          <= MAX_EXECUTORS):
        raise ConfigError(f"{source}: adapter.count and adapter.gpus: between 1 and {MAX_EXECUTORS} executors")
    for origin in config.listen.cors_origins:
        if origin != "*" and not _is_origin(origin):
            raise ConfigError(f"{source}: listen.cors_origins: {origin!r} is not an origin "
                              "(scheme://host[:port], no path) or \"*\"")
    if config.rerank is not None and config.embedding is None:
        raise ConfigError(f"{source}: [rerank] reads the states of the [embedding] model: set [embedding] path too")
    for section in (config.embedding, config.rerank):
        if section is not None:
            section.precision = normalize_precision(section.precision)
            if section.max_batch < 1 or section.token_chunk_size < 1:
                raise ConfigError(f"{source}: embedding.max_batch and embedding.token_chunk_size must be positive")
    _check_models(config, source)
    if config.responses.max_stored < 1:
        raise ConfigError(f"{source}: responses.max_stored must be at least 1")
    return config


def _check_models(config: Config, source: str) -> None:
    """Every name a request can give (model names and aliases) must lead to one model."""
    model = config.model
    taken = {Path(model.name).stem: "[model]", **{alias: "[model]" for alias in model.aliases}}
    for section, key in ((config.embedding, "[embedding]"), (config.rerank, "[rerank]")):
        if section is not None:
            taken.setdefault(section.name or Path(section.path).stem, key)
    for entry in config.models:
        entry.precision = normalize_precision(entry.precision)
        if entry.max_batch < 1 or entry.token_chunk_size < 1:
            raise ConfigError(f"{source}: models {entry.name!r}: max_batch and token_chunk_size must be positive")
        for name in (entry.name, *entry.aliases):
            if not name:
                raise ConfigError(f"{source}: [[models]] names and aliases must not be empty")
            if name in taken:
                raise ConfigError(f"{source}: the model name {name!r} of [[models]] {entry.name!r} is taken by "
                                  f"{taken[name]}")
            taken[name] = f"[[models]] {entry.name!r}"


def _is_origin(text: str) -> bool:
    scheme, _, rest = text.partition("://")
    return scheme in ("http", "https") and bool(rest) and not any(c in rest for c in "/?#* ")


def load_config(path: str | Path | None, note: Callable[[str], None] = _log) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    return parse_config(path.read_text(), str(path), note)
