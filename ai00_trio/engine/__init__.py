"""The RWKV engine: `load_model(path, precision, adapter)` → `Model` with `forward` and states."""
from .info import ModelInfo
from .model import Model, load_model
from .state import State

__all__ = ["Model", "ModelInfo", "State", "load_model"]
