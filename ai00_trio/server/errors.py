"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""
from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class ApiError(Exception):
    """An error with its HTTP status; `retry_after` (seconds) becomes a Retry-After header."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.body = ErrorResponse(ErrorBody(message, type, param, code))


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def not_found(message: str, param: str | None = None) -> ApiError:
    return ApiError(404, message, "invalid_request_error", param, "model_not_found" if param == "model" else None)


def overloaded(message: str = "the server is busy: too many queued requests, retry later") -> ApiError:
    return ApiError(429, message, "rate_limit_error", None, "queue_full", retry_after=1)


def unavailable(message: str = "no model is loaded") -> ApiError:
    return ApiError(503, message, "server_error", None, "model_not_loaded", retry_after=5)


def device_lost(message: str) -> ApiError:
    return ApiError(503, message, "server_error", None, "device_lost", retry_after=5)


def internal_error(message: str) -> ApiError:
    return ApiError(500, message, "internal_error", None, "executor_fault")


def unauthorized() -> ApiError:
    return ApiError(401, "missing or invalid API key (Authorization: Bearer <key>)",
                    "invalid_request_error", None, "invalid_api_key")
