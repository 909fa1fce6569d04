"""``GET /v1/models`` and ``GET /v1/models/{id}``: the served models and their capabilities."""

from __future__ import annotations

import os
from typing import Any

from hologram.server.protocol import ModelCard, ModelList
from hologram.server.service import ServedModel, Service

__all__ = ["model_card", "model_list", "retrieve"]


def model_card(served: ServedModel, model_id: str | None = None) -> ModelCard:
    """The card of ``served`` under ``model_id`` (one of its ids; default its public id)."""
    info = served.loaded.info
    head = served.loaded.completion
    caps = ["embeddings"] if info.is_embedding_model else [
        "completions", "chat.completions", "response_format", "tools", "embeddings"]
    tools: dict[str, Any] = {}
    if head is not None:
        # how tools reach the model ("template" or "fallback") and the call format parsed
        tools = {"tool_prompt": head.tool_prompt, "tool_format": head.tool_format}
        if head.template_override:
            tools["chat_template"] = "override"
    return ModelCard(
        id=model_id or served.id,
        created=info.created,
        owned_by="hologram",
        meta={
            "file": os.path.basename(info.path),
            "architecture": info.architecture,
            "n_ctx": info.n_ctx,
            "n_ctx_train": info.n_ctx_train,
            "n_vocab": info.n_vocab,
            "n_embd": info.n_embd,
            "n_seq_max": info.n_seq_max,
            "capabilities": caps,
            "chat_template": "gguf" if info.has_chat_template else "chatml-fallback",
            "ids": list(served.ids or [served.id]),
            **tools,
        },
        sampling_defaults=head.defaults.report() if head is not None else None,
    )


def model_list(service: Service) -> dict[str, Any]:
    """The ``GET /v1/models`` body: a card per id (a model's public id, then its aliases)."""
    service.check_ready()
    return ModelList(data=[model_card(m, i) for m in service.models.values()
                           for i in (m.ids or [m.id])]).dump()


def retrieve(service: Service, model_id: str) -> dict[str, Any]:
    """The ``GET /v1/models/{id}`` body (404 for an unknown id), with the sampling defaults
    in force for the model."""
    service.check_ready()
    return model_card(service.get_model(model_id), model_id).dump()
