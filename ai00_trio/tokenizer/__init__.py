"""RWKV tokenizers: World (greedy longest match), byte-level, and streaming decode."""

from .byte_level import BYTE_VOCAB_SIZE, ByteTokenizer
from .factory import DEFAULT_WORLD_VOCAB_PATH, TOKENIZER_KINDS, load_tokenizer
from .incremental import IncrementalDecoder
from .protocol import Tokenizer
from .vocab_file import END_OF_TEXT_ID, WORLD_VOCAB_SIZE, VocabFormatError, read_vocab_file
from .world import WorldTokenizer

__all__ = [
    "BYTE_VOCAB_SIZE",
    "DEFAULT_WORLD_VOCAB_PATH",
    "END_OF_TEXT_ID",
    "TOKENIZER_KINDS",
    "WORLD_VOCAB_SIZE",
    "ByteTokenizer",
    "IncrementalDecoder",
    "Tokenizer",
    "VocabFormatError",
    "WorldTokenizer",
    "load_tokenizer",
    "read_vocab_file",
]
