"""The actors' failures (failures.py) as HTTP errors: the one place that gives each its status."""
from __future__ import annotations

from . import failures as f
from .errors import ApiError, bad_request, device_lost, internal_error, overloaded


def api_error(failure: f.Failure) -> ApiError:
    match failure:
        case f.PromptTooLong():
            return bad_request(failure.message, failure.param, "context_length_exceeded")
        case f.EmbeddingTokensExceeded():
            return bad_request(failure.message, failure.param, "embedding_tokens_exceeded")
        case f.UnknownState():
            return bad_request(failure.message, failure.param, "unknown_state")
        case f.Overloaded():
            return overloaded(failure.message)
        case f.QueueTimeout():
            return ApiError(503, failure.message, "server_error", None, "queue_timeout", retry_after=1)
        case f.GrammarTimeout():
            return ApiError(500, failure.message, "server_error", failure.param, "grammar_timeout")
        case f.StatePathRefused():
            return ApiError(403, failure.message, "invalid_request_error", failure.param, "path_refused")
        case f.DeviceLost():
            return device_lost(failure.message)
        case f.ExecutorFault():
            return internal_error(failure.message)
        case f.TokenOutOfRange() | f.InvalidState() | f.SamplingFailed():
            return bad_request(failure.message, failure.param)
    return ApiError(500, failure.message, "server_error", failure.param)
