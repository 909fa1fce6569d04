"""Loading a GGUF model and building its heads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hologram import _core
from hologram.heads.base import InvalidInputError, ModelLoadFailure, translate_engine_error
from hologram.heads.completion import CompletionHead
from hologram.heads.embedding import EmbeddingHead
from hologram.models import default_embedding_model_path, default_model_path

__all__ = ["LoadedModel", "ModelInfo", "default_model_paths", "load_model"]


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    architecture: str
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    n_embd: int
    n_seq_max: int
    is_embedding_model: bool
    has_chat_template: bool
    #: File modification time (Unix seconds), reported as the model's ``created``.
    created: int


@dataclass
class LoadedModel:
    info: ModelInfo
    engine: _core.Engine
    completion: CompletionHead | None  # None for embedding-only models
    embedding: EmbeddingHead

    # -- token utilities (any model, decoder or encoder) -----------------------------------

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True,
                 param: str = "content") -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS (and the like) as the model asks,
        ``parse_special`` reads control-token text (``<|im_start|>``) as those tokens."""
        try:
            return list(self.engine.tokenize(text, add_special=add_special,
                                             parse_special=parse_special))
        except _core.HologramError as exc:
            raise translate_engine_error(exc, param) from None

    def detokenize(self, ids: Sequence[int], param: str = "tokens") -> str:
        """The text of ``ids`` (checked against the vocabulary: InvalidInputError)."""
        for i, t in enumerate(ids):
            if not 0 <= t < self.info.n_vocab:
                raise InvalidInputError(f"{param}[{i}] = {t} is not in the vocabulary "
                                        f"(0..{self.info.n_vocab - 1})", f"{param}.{i}",
                                        "invalid_token")
        if not ids:
            return ""
        try:
            return self.engine.detokenize(list(ids))
        except _core.HologramError as exc:
            raise translate_engine_error(exc, param) from None

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token (a piece of a multi-byte character may not be UTF-8)."""
        return bytes(self.engine.token_to_bytes(token))

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's GGUF metadata (large arrays summarised)."""
        return dict(self.engine.metadata)

    @property
    def chat_template(self) -> str | None:
        return self.engine.chat_template


def default_model_paths() -> list[Path]:
    """The default chat model, plus the default embedding model when one is available."""
    paths = [default_model_path()]
    emb = default_embedding_model_path()
    if emb is not None:
        paths.append(emb)
    return paths


def load_model(
    path: str | os.PathLike[str],
    *,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    n_batch: int = 512,
    n_seq_max: int = 16,
    kv_tokens: int | None = None,
    step_tokens: int = 128,
    template_timeout_s: float = 2.0,
    sampling_flags: Mapping[str, float | int | None] | None = None,
    chat_template: str | None = None,
) -> LoadedModel:
    """Open ``path`` and build its heads. ``sampling_flags`` override the file's sampling
    defaults (see :mod:`hologram.sampling`). Raises ModelLoadFailure with a one-line
    reason."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadFailure(f"model file not found: {p}")
    try:
        engine = _core.Engine(
            str(p), n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch, n_seq_max=n_seq_max,
            kv_tokens=kv_tokens, step_tokens=step_tokens,
        )
    except (_core.HologramError, OSError, ValueError) as exc:
        first = (str(exc) or type(exc).__name__).strip().splitlines()[0]
        raise ModelLoadFailure(f"cannot load model {p}: {first}") from None
    is_embedding = bool(engine.is_embedding_model)
    info = ModelInfo(
        path=str(p),
        name=str(engine.name),
        architecture=str(engine.architecture),
        n_ctx=int(engine.n_ctx),
        n_ctx_train=int(engine.n_ctx_train),
        n_vocab=int(engine.n_vocab),
        n_embd=int(engine.n_embd),
        n_seq_max=int(engine.n_seq_max),
        is_embedding_model=is_embedding,
        has_chat_template=engine.chat_template is not None,
        created=int(p.stat().st_mtime),
    )
    completion = None if is_embedding else CompletionHead(engine, template_timeout_s,
                                                          sampling_flags=sampling_flags,
                                                          chat_template=chat_template)
    return LoadedModel(info=info, engine=engine, completion=completion,
                       embedding=EmbeddingHead(engine))
