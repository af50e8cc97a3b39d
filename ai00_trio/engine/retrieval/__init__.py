"""EmbeddingRWKV embedding models and their state-reading rerankers, on the v7 kernels."""
from .checkpoint import RetrievalKind, retrieval_kind
from .embedding import EmbeddingModel, load_embedding_model
from .reranker import Reranker, load_reranker

__all__ = ["EmbeddingModel", "Reranker", "RetrievalKind", "load_embedding_model", "load_reranker", "retrieval_kind"]
