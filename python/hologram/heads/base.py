"""Errors shared by the domain heads, and the translation of engine exceptions into them.

The heads sit between the engine (``hologram._core``) and any front end (the HTTP server, a
CLI, a notebook). They never import quart or pydantic; front ends never import ``_core``: they
catch the :class:`HeadError` family defined here instead.
"""

from __future__ import annotations

from hologram import _core

__all__ = [
    "CapacityError",
    "ContextLengthError",
    "EngineFailure",
    "HeadError",
    "InvalidInputError",
    "ModelLoadFailure",
    "TemplateError",
    "translate_engine_error",
]


class HeadError(Exception):
    """Base of every error a head raises. ``param`` names the offending input, when known."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidInputError(HeadError, ValueError):
    """The caller's input is invalid (bad token id, empty input, unsupported content...)."""


class ContextLengthError(InvalidInputError):
    """Prompt (plus the requested completion) does not fit in the model's context window."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param, "context_length_exceeded")


class TemplateError(InvalidInputError):
    """The chat template failed, raised an exception, or exceeded its time/size budget."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "messages", "chat_template_error")


class CapacityError(HeadError):
    """The engine has no room for another sequence right now (KV cache full)."""


class EngineFailure(HeadError):
    """Any other engine error: a bug or a broken model, not the caller's fault."""


class ModelLoadFailure(HeadError):
    """The model file could not be opened, parsed or loaded."""


def translate_engine_error(exc: BaseException, param: str | None = None) -> HeadError:
    """Map an exception raised by ``hologram._core`` to the matching :class:`HeadError`."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, HeadError):
        return exc
    if isinstance(exc, _core.ContextOverflowError):
        return ContextLengthError(message, param)
    if isinstance(exc, _core.KVCacheFullError):
        return CapacityError(message)
    if isinstance(exc, _core.InvalidArgumentError):
        return InvalidInputError(message, param, "invalid_value")
    if isinstance(exc, _core.ModelLoadError):
        return ModelLoadFailure(message)
    return EngineFailure(message)
