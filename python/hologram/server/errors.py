"""The API error type and the mapping of head errors to OpenAI-shaped HTTP errors."""

from __future__ import annotations

import os
import traceback

from hologram.heads import (
    CapacityError,
    ContextLengthError,
    EngineFailure,
    HeadError,
    InvalidInputError,
    ModelLoadFailure,
)
from hologram.server.protocol import ErrorInfo, ErrorResponse

__all__ = ["APIError", "describe_failure", "from_head_error", "shutting_down"]


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorInfo(message=self.message, type=self.type, param=self.param,
                            code=self.code)
        )


def from_head_error(exc: HeadError) -> APIError:
    if isinstance(exc, ContextLengthError):
        return APIError(400, exc.message, "invalid_request_error", exc.param,
                        exc.code or "context_length_exceeded")
    if isinstance(exc, InvalidInputError):
        return APIError(400, exc.message, "invalid_request_error", exc.param,
                        exc.code or "invalid_value")
    if isinstance(exc, CapacityError):
        return APIError(503, f"the server is at capacity: {exc.message}", "server_error",
                        None, "server_busy", {"Retry-After": "1"})
    if isinstance(exc, (EngineFailure, ModelLoadFailure)):
        return APIError(500, f"engine error: {exc.message}", "server_error", None,
                        "internal_error")
    return APIError(500, exc.message or "internal error", "server_error", None, None)


def shutting_down(what: str = "the request") -> APIError:
    """The server stopped ``what`` because it is shutting down (503)."""
    return APIError(503, f"the server is shutting down; {what} was stopped", "server_error",
                    None, "shutting_down")


def describe_failure(exc: BaseException) -> str:
    """An exception for the error log without any of its message or arguments, which may hold
    user content (a UnicodeError carries the whole text it failed on): its type, the offsets
    for a UnicodeError, and where it was raised (the innermost frames, file:line function)."""
    parts = [type(exc).__name__]
    if isinstance(exc, UnicodeError):
        start, end = getattr(exc, "start", None), getattr(exc, "end", None)
        if isinstance(start, int) and isinstance(end, int):
            parts.append(f"at characters {start}-{end}")
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    if frames:
        parts.append("in " + " < ".join(
            f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames)))
    return " ".join(parts)
