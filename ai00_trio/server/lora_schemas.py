"""Wire formats of LoRA hot-swap (`/admin/loras/*`, server/lora_routes.py)."""
from __future__ import annotations

from msgspec import Struct


class LoraLoadRequest(Struct, kw_only=True):
    path: str                     # inside the models folder
    alpha: float = 1.0


class LoraUnloadRequest(Struct, kw_only=True):
    """Which applied LoRA to remove: its path or the id its load answered."""
    path: str | None = None
    id: int | None = None


class AppliedLora(Struct):
    id: int
    path: str
    alpha: float


class LoraList(Struct):
    """The LoRAs applied while serving, in order (those merged at load are in /api/models/info)."""
    loras: list[AppliedLora]


OPENAPI_ROUTES = [
    ("/admin/loras/load", "post", LoraLoadRequest, LoraList,
     "Apply a LoRA (path inside the models folder, alpha) to the loaded model on the GPU; waits for running "
     "requests to finish, new ones wait and then use it"),
    ("/admin/loras/unload", "post", LoraUnloadRequest, LoraList,
     "Remove a LoRA applied with /admin/loras/load (by path or id), the same way"),
    ("/admin/loras", "get", None, LoraList, "The LoRAs applied while serving"),
]
