"""Domain heads: the task-level API over :class:`hologram.Engine`.

* :class:`CompletionHead` -- prompt text, token ids or chat messages in; text (or a stream of
  per-token deltas with logprobs) out, with finish reason and token usage.
* :class:`EmbeddingHead` -- texts or token arrays in; pooled, L2-normalised vectors out.
* :func:`load_model` -- open a GGUF file and build both heads over one engine.

Heads never import quart or pydantic; the HTTP server talks only to heads, never to
``hologram._core`` directly. Engine exceptions reach callers as :class:`HeadError` subclasses.
"""

from __future__ import annotations

from hologram.heads.base import (
    CapacityError,
    ContextLengthError,
    EngineFailure,
    HeadError,
    InvalidInputError,
    ModelLoadFailure,
    TemplateError,
)
from hologram.heads.chat_template import CHATML_TEMPLATE, ChatTemplate
from hologram.heads.completion import (
    ChatMessage,
    Completion,
    CompletionHead,
    CompletionStream,
    Delta,
    Prompt,
    SamplingParams,
    TokenInfo,
    TopToken,
)
from hologram.heads.embedding import Cancelled, EmbeddingHead, EmbeddingResult
from hologram.heads.model import LoadedModel, ModelInfo, default_model_paths, load_model
from hologram.heads.tools import ParsedCall, ToolCall, ToolStreamParser

__all__ = [
    "CHATML_TEMPLATE",
    "Cancelled",
    "CapacityError",
    "ChatMessage",
    "ChatTemplate",
    "Completion",
    "CompletionHead",
    "CompletionStream",
    "ContextLengthError",
    "Delta",
    "EmbeddingHead",
    "EmbeddingResult",
    "EngineFailure",
    "HeadError",
    "InvalidInputError",
    "LoadedModel",
    "ModelInfo",
    "ModelLoadFailure",
    "ParsedCall",
    "Prompt",
    "SamplingParams",
    "TemplateError",
    "TokenInfo",
    "ToolCall",
    "ToolStreamParser",
    "TopToken",
    "default_model_paths",
    "load_model",
]
