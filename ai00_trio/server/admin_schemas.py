"""Wire formats of AI00's management API (`/api/models/*`, `/api/adapters`, `/api/auth/exchange`,
`/admin/*`), in AI00's JSON shapes, and the reload request a loaded model came from."""
from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct, field

from ..config import Config
from ..engine.info import ModelInfo
from .engine_service import LoadedModel


# --- what a model was loaded from (AI00's ReloadRequest) ------------------------------------
class LoraSpec(Struct):
    path: str                            # inside the models folder
    alpha: float = 1.0


class StateSpec(Struct):
    path: str                            # inside the models folder
    id: str = ""
    name: str | None = None
    default: bool = False


class BnfOptions(Struct):
    """Carried for AI00 clients; grammars always start at `start`."""
    enable_bytes_cache: bool = True
    start_nonterminal: str = "start"


class ReloadRequest(Struct, kw_only=True):
    """AI00's `ReloadRequest`: `model_path` and every `lora`/`state` path are relative to the
    models folder (`[model] path`), so an answer can be sent back as it is."""
    model_path: str
    lora: list[LoraSpec] = field(default_factory=list)
    state: list[StateSpec] = field(default_factory=list)
    quant: int = 0
    quant_type: str = "None"             # None | Int8 | NF4
    precision: str = "Fp16"              # Fp16 | Fp32
    token_chunk_size: int = 128
    max_batch: int = 8
    tokenizer_path: str = ""
    bnf: BnfOptions = field(default_factory=BnfOptions)
    adapter: str | dict[str, Any] = "Auto"   # "Auto", {"Manual": N}, or {"Name": "part of a name"}



class ModelLoadRequest(ReloadRequest, kw_only=True):
    """AI00's reload request, for the model `name` (default: the `[model]` chat model). A name
    the server does not serve yet adds a model of `kind` (default chat) under that name."""
    name: str | None = None
    kind: Literal["chat", "embedding", "rerank"] | None = None


class ModelUnloadRequest(Struct, kw_only=True):
    name: str | None = None              # default: the [model] chat model


class RetrievalLoaded(Struct):
    """The answer of a load of the embedding model or the reranker."""
    name: str
    kind: str
    model_path: str
    status: str = "loaded"

_QUANT_NAMES = {"none": "None", "int8": "Int8", "nf4": "NF4"}


def reload_request(config: Config, loaded: LoadedModel) -> ReloadRequest:
    """The reload request equivalent to `config`, with the state ids `loaded` gave its states."""
    model, adapter = config.model, config.adapter
    ids = [entry.id for entry in loaded.states.values()]
    if len(ids) != len(config.state):  # two entries with one id: the last one won
        ids = [entry.id or "" for entry in config.state]
    states = [StateSpec(entry.path, state_id, entry.name, entry.default) for entry, state_id in zip(config.state, ids)]
    if adapter.Manual is not None:
        adapter_option: str | dict[str, Any] = {"Manual": adapter.Manual}
    elif adapter.name is not None:
        adapter_option = {"Name": adapter.name}
    else:
        adapter_option = "Economical" if adapter.Economical is not None else "Auto"
    return ReloadRequest(
        model_path=model.name, lora=[LoraSpec(lora.path, lora.alpha) for lora in config.lora], state=states,
        quant=model.quant_layers, quant_type=_QUANT_NAMES.get(model.quant_type.lower(), model.quant_type),
        precision=model.precision.capitalize(), token_chunk_size=model.token_chunk_size, max_batch=model.max_batch,
        tokenizer_path=config.tokenizer.path, adapter=adapter_option)


# --- model description (web-rwkv's ModelInfo) -------------------------------------------------
class Ai00ModelInfo(Struct):
    version: str                         # V4 | V5 | V6 | V7
    num_layer: int
    num_emb: int
    num_hidden: int
    num_vocab: int
    num_head: int
    custom: str | dict[str, dict[str, int]]  # "None", {"V6": {time_mix, time_decay}}, {"V7": {w, a, g, v}}


def ai00_model_info(info: ModelInfo) -> Ai00ModelInfo:
    custom: str | dict[str, dict[str, int]] = "None"
    if info.version == "v6":
        custom = {"V6": {"time_mix": info.maa_dim, "time_decay": info.decay_dim}}
    elif info.version == "v7":
        custom = {"V7": {"w": info.w_dim, "a": info.a_dim, "g": info.g_dim, "v": info.v_dim}}
    return Ai00ModelInfo(info.version.upper(), info.n_layer, info.n_embd, info.n_ffn, info.n_vocab, info.n_head,
                         custom)


# --- /api/models/info, /api/models/state -------------------------------------------------------
class StateInfo(Struct):
    id: str
    name: str


class InfoResponse(Struct):
    reload: ReloadRequest
    model: Ai00ModelInfo
    states: list[StateInfo]
    status: str = "loaded"               # "loading" while a reload builds (this model serves meanwhile)


# --- /admin/models/unload, /admin/states/load, /admin/states/unload ------------------------------
class UnloadResponse(Struct):
    status: str = "unloaded"


class StateUnloadRequest(Struct, kw_only=True):
    """The attached state to drop, by `id` or by `name`."""
    id: str | None = None
    name: str | None = None


# --- files: /api/models/list, /admin/files/dir, /admin/files/ls ---------------------------------
class FileInfo(Struct):
    path: str                            # relative to the models folder: what the other routes take
    name: str
    size: int
    sha: str                             # SHA-256 hex (of 10 samples of 1 MB above 10 MB); "" unless asked
    info: Ai00ModelInfo | None           # when the file is an RWKV safetensors model


class FileInfoRequest(Struct, kw_only=True):
    path: str = ""                       # a folder inside the models folder ("" is the folder itself)
    is_sha: bool = False


# --- /admin/models/save ------------------------------------------------------------------------
class SaveRequest(Struct, kw_only=True):
    path: str | None = None              # inside the models folder
    model_path: str | None = None        # AI00's other name for it


class SaveResponse(Struct):
    path: str
    size: int


# --- /api/auth/exchange ------------------------------------------------------------------------
class ExchangeRequest(Struct, kw_only=True):
    app_id: str
    app_secret: str


class ExchangeResponse(Struct, omit_defaults=True):
    """AI00's shape; a refusal also carries the OpenAI-style `error`."""
    token: str | None
    code: int
    message: str
    error: dict[str, Any] | None = None


# --- the OpenAPI document's entries (openapi.py): path, method, request, response, summary ---
OPENAPI_ROUTES = [
    ("/api/models/info", "get", None, InfoResponse, "The loaded model: its reload request, description and states"),
    ("/api/models/state", "get", None, InfoResponse,
     "SSE: /api/models/info as its first event and again at each change; with no model, `unavailable` events"),
    ("/api/models/list", "get", None, list[FileInfo], "The files in the models folder, with SHA-256 and model info"),
    ("/api/adapters", "get", None, list[str], "GPU adapters as \"name (backend)\"; [adapter] Manual = index"),
    ("/api/auth/exchange", "post", ExchangeRequest, ExchangeResponse,
     "AI00's token exchange: [[admin.app_keys]] app id and secret for an admin token (HS256 JWT)"),
    ("/admin/files/dir", "post", FileInfoRequest, list[FileInfo], "The files of a folder inside the models folder"),
    ("/admin/files/ls", "post", FileInfoRequest, list[FileInfo], "The same as /admin/files/dir"),
    ("/admin/models/save", "post", SaveRequest, SaveResponse,
     "Write the loaded model's weights (LoRAs merged) as an AI00 .st file inside the models folder"),
    ("/admin/models/load", "post", ModelLoadRequest, InfoResponse,
     "Load a model (paths inside the models folder), `name` saying which (default the [model] chat model): built "
     "beside the serving one, which keeps serving until the new one is ready; running requests finish on the old "
     "model (an embedding model or reranker answers {name, kind, model_path, status}). On failure the old model "
     "keeps serving (400); 400 insufficient_gpu_memory when it cannot fit"),
    ("/admin/models/unload", "get", None, UnloadResponse,
     "Unload the model (also POST; {\"name\"} or ?name= for another than the [model] one): new requests get "
     "503 model_not_loaded; answers once running ones finish"),
    ("/admin/states/load", "post", StateSpec, StateInfo,
     "Attach a state file (inside the models folder) to the serving model; `default` makes it the default"),
    ("/admin/states/unload", "post", StateUnloadRequest, StateInfo, "Detach an attached state, by id or name"),
]
EVENT_STREAMS = frozenset({"/api/models/state"})
