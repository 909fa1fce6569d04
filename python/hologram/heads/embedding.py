"""Embedding head: texts or token arrays in, L2-normalised vectors out.

For encoder models (BERT family) this is the model's sentence embedding; for decoder models it
is the final hidden states (after the output norm) pooled over the sequence. Pooling is the
model's own (GGUF ``<arch>.pooling_type``) when it declares one, else ``mean``. ``dimensions``
truncates each vector and re-normalises it (Matryoshka-style).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hologram import _core
from hologram.heads.base import (
    ContextLengthError,
    HeadError,
    InvalidInputError,
    translate_engine_error,
)

__all__ = ["POOLING_TYPES", "EmbeddingHead", "EmbeddingResult"]

#: Most inputs per engine call when embedding a batch.
EMBED_CHUNK = 64
#: Most tokens per engine call (one input longer than this goes alone): a cancelled request
#: stops between calls, so this bounds the work done after a cancel (well under a second).
EMBED_CHUNK_TOKENS = 512

#: GGUF ``pooling_type`` enum values (llama.cpp ``llama_pooling_type``) to our names.
POOLING_TYPES = {1: "mean", 2: "cls", 3: "last"}


@dataclass
class EmbeddingResult:
    vectors: list[npt.NDArray[np.float32]]
    prompt_tokens: int


class Cancelled(HeadError):
    """The caller cancelled the request."""


class EmbeddingHead:
    """Sentence embeddings over one :class:`hologram.Engine`."""

    def __init__(self, engine: _core.Engine, pooling: str | None = None) -> None:
        self.engine = engine
        self.n_ctx = int(engine.n_ctx)
        self.n_vocab = int(engine.n_vocab)
        self.n_embd = int(engine.n_embd)
        if pooling is None:
            declared = engine.metadata.get(f"{engine.architecture}.pooling_type")
            pooling = POOLING_TYPES.get(declared, "mean") if isinstance(declared, int) else "mean"
        if pooling not in ("mean", "cls", "last"):
            raise ValueError(f"pooling must be mean, cls or last, not {pooling!r}")
        self.pooling = pooling

    def encode(self, item: str | Sequence[int], param: str = "input") -> list[int]:
        """Token ids for one input (validated), refusing empty or over-long inputs."""
        if isinstance(item, str):
            if not item:
                raise InvalidInputError(f"{param} must not be an empty string", param)
            if len(item) > self.n_ctx * 256:
                raise ContextLengthError(
                    f"{param} is {len(item)} characters; this model's maximum context length "
                    f"is {self.n_ctx} tokens",
                    param,
                )
            try:
                ids = list(self.engine.tokenize(item, add_special=True, parse_special=False))
            except _core.HologramError as exc:
                raise translate_engine_error(exc, param) from None
        else:
            ids = []
            for t in item:
                if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.n_vocab:
                    raise InvalidInputError(
                        f"token id {t!r} in {param} is not in the vocabulary "
                        f"(0..{self.n_vocab - 1})",
                        param,
                        "invalid_token",
                    )
                ids.append(int(t))
        if not ids:
            raise InvalidInputError(f"{param} must contain at least one token", param)
        if len(ids) > self.n_ctx:
            raise ContextLengthError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, "
                f"{param} has {len(ids)} tokens.",
                param,
            )
        return ids

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= self.n_embd:
            raise InvalidInputError(
                f"dimensions must be between 1 and {self.n_embd} for this model, "
                f"not {dimensions}",
                "dimensions",
            )

    def embed_ids(
        self, ids: Sequence[int], dimensions: int | None = None
    ) -> npt.NDArray[np.float32]:
        """One L2-normalised vector (of ``dimensions`` components when given)."""
        self.check_dimensions(dimensions)
        try:
            vec = np.asarray(
                self.engine.embed(list(ids), pooling=self.pooling, normalize=True),
                dtype=np.float32,
            ).reshape(-1)
        except _core.HologramError as exc:
            raise translate_engine_error(exc, "input") from None
        return self._truncate(vec, dimensions)

    @staticmethod
    def _truncate(vec: npt.NDArray[np.float32], dimensions: int | None) -> npt.NDArray[np.float32]:
        """Keep the first ``dimensions`` components and re-normalise (Matryoshka-style)."""
        if dimensions is not None and dimensions < vec.shape[0]:
            vec = vec[:dimensions]
            norm = float(np.linalg.norm(vec))
            if norm > 0.0:
                vec = (vec / norm).astype(np.float32)
        return vec

    def embed(
        self,
        inputs: Sequence[str | Sequence[int]],
        dimensions: int | None = None,
        cancel: threading.Event | None = None,
        max_tokens: int | None = None,
    ) -> EmbeddingResult:
        """Embed every input, in order. Inputs are all validated before any compute; more
        than ``max_tokens`` input tokens in all is refused."""
        self.check_dimensions(dimensions)
        if not inputs:
            raise InvalidInputError("input must not be empty", "input")
        encoded: list[list[int]] = []
        total = 0
        for i, item in enumerate(inputs):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            ids = self.encode(item, "input" if len(inputs) == 1 else f"input.{i}")
            encoded.append(ids)
            total += len(ids)
            # Refused as soon as the running total is over: the rest is not even tokenized.
            if max_tokens is not None and total > max_tokens:
                raise InvalidInputError(
                    f"the request has more than {max_tokens} input tokens (the first {i + 1} "
                    f"of its {len(inputs)} inputs have {total}); the server accepts at most "
                    f"{max_tokens} per request", "input", "request_too_large")
        vectors: list[npt.NDArray[np.float32]] = []
        # Batches go through the engine in chunks of at most EMBED_CHUNK inputs and
        # EMBED_CHUNK_TOKENS tokens; a cancelled request stops between chunks.
        start = 0
        while start < len(encoded):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            end, tokens = start, 0
            while end < len(encoded) and end - start < EMBED_CHUNK and (
                    end == start or tokens + len(encoded[end]) <= EMBED_CHUNK_TOKENS):
                tokens += len(encoded[end])
                end += 1
            chunk = encoded[start:end]
            try:
                out = np.asarray(
                    self.engine.embed_batch(chunk, pooling=self.pooling, normalize=True),
                    dtype=np.float32,
                )
            except _core.HologramError as exc:
                raise translate_engine_error(exc, "input") from None
            for vec in out:
                vectors.append(self._truncate(vec, dimensions))
            start = end
        return EmbeddingResult(vectors=vectors, prompt_tokens=total)
