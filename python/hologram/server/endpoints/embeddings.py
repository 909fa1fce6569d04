"""``POST /v1/embeddings``: pooled, normalised vectors of texts or token arrays."""

from __future__ import annotations

import base64
import logging
import threading

import numpy as np

from hologram.heads import Cancelled, EngineFailure, HeadError
from hologram.server.endpoints.common import Endpoint, JSONReply, Reply, prompt_list
from hologram.server.errors import from_head_error, shutting_down
from hologram.server.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from hologram.server.runner import run_blocking
from hologram.server.service import RequestLog, Service

__all__ = ["ENDPOINT", "embed"]

log = logging.getLogger("hologram.server")


async def embed(service: Service, req: EmbeddingRequest, rlog: RequestLog) -> JSONReply:
    service.check_ready()
    served = service.resolve(req.model, "embed")
    rlog.model = served.id
    head = served.loaded.embedding
    inputs = prompt_list(req.input)
    try:
        head.check_dimensions(req.dimensions)
    except HeadError as exc:
        raise from_head_error(exc) from None
    service.enter(served)
    cancel = threading.Event()
    try:
        # A client that goes away cancels the request's task: run_blocking then sets
        # ``cancel`` and the head stops between batches. Shutdown stops it the same way.
        with service.on_drain(cancel.set):
            out = await run_blocking(
                served.executor, lambda cancel: head.embed(inputs, req.dimensions, cancel,
                                                           service.settings.max_request_tokens),
                cancel)
    except Cancelled:
        if service.draining:
            rlog.interrupted = True
            raise shutting_down("the embedding") from None
        raise
    except HeadError as exc:
        if isinstance(exc, EngineFailure):
            log.error("embedding failed (request %s): %s", rlog.request_id,
                      type(exc).__name__)
        raise from_head_error(exc) from None
    finally:
        served.limit.leave()
    data = []
    for i, vec in enumerate(out.vectors):
        emb: list[float] | str
        if req.encoding_format == "base64":
            emb = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
        else:
            emb = [float(x) for x in vec]
        data.append(EmbeddingData(index=i, embedding=emb))
    rlog.prompt_tokens = out.prompt_tokens
    service.count_prompt_tokens(served.id, out.prompt_tokens)
    return JSONReply(EmbeddingResponse(
        data=data, model=served.id,
        usage=EmbeddingUsage(prompt_tokens=out.prompt_tokens, total_tokens=out.prompt_tokens),
    ).dump())


async def handle(service: Service, req: EmbeddingRequest, rlog: RequestLog,
                 stream: bool) -> Reply:
    """One response object, on the WebSocket too (``stream`` does not apply)."""
    return await embed(service, req, rlog)


ENDPOINT = Endpoint("embeddings", "/v1/embeddings", EmbeddingRequest, handle)
