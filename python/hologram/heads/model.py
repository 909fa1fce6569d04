"""Loading a GGUF model and building its heads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hologram import _core
from hologram.heads.base import ModelLoadFailure
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
    chat_template: str | None = None,
) -> LoadedModel:
    """Open ``path`` and build its heads. Raises ModelLoadFailure with a one-line reason."""
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
                                                           chat_template)
    return LoadedModel(info=info, engine=engine, completion=completion,
                       embedding=EmbeddingHead(engine))
