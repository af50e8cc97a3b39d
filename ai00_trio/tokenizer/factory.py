"""Build a tokenizer by kind name."""

from __future__ import annotations

from pathlib import Path

from .byte_level import ByteTokenizer
from .protocol import Tokenizer
from .world import WorldTokenizer

DEFAULT_WORLD_VOCAB_PATH = (
    Path(__file__).resolve().parents[2] / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"
)
"""The World vocab shipped in the repository's assets folder."""

TOKENIZER_KINDS = ("world", "bytes")


def load_tokenizer(kind: str, path: str | Path | None = None) -> Tokenizer:
    """Make a tokenizer: "world" (vocab at `path`, default the bundled one) or "bytes"."""
    normalized = kind.strip().lower()
    if normalized == "world":
        return WorldTokenizer(DEFAULT_WORLD_VOCAB_PATH if path is None else path)
    if normalized == "bytes":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {TOKENIZER_KINDS}")
