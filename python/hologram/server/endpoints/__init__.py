"""The API's endpoints, one module each, and the one dispatch that the HTTP routes and the
WebSocket share.

Each endpoint module parses and plans its request (validation, tokenization through the heads,
sampling settings built once) and turns the runner's events
(:mod:`hologram.server.generation`) into its response body or its stream chunks.
:data:`ENDPOINTS` maps an endpoint's name to its request model and handler;
:func:`dispatch` validates a JSON body against the model and calls the handler.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar

from pydantic import ValidationError

from hologram.server.endpoints import chat, completions, embeddings, ollama, tokens
from hologram.server.endpoints.common import Endpoint, JSONReply, Reply, StreamReply
from hologram.server.errors import APIError
from hologram.server.protocol import RequestModel
from hologram.server.service import RequestLog, Service

__all__ = ["ENDPOINTS", "HTTP_ENDPOINTS", "Endpoint", "JSONReply", "Reply", "StreamReply",
           "dispatch", "parse_request"]

log = logging.getLogger("hologram.server")

M = TypeVar("M", bound=RequestModel)

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: Endpoint name (the path after ``/v1/``, also the WebSocket's ``"endpoint"``) -> endpoint.
ENDPOINTS: dict[str, Endpoint[Any]] = {
    e.name: e for e in (completions.ENDPOINT, chat.ENDPOINT, embeddings.ENDPOINT)
}

#: POST endpoints served over HTTP only (not the WebSocket): llama.cpp's token utilities and
#: Ollama's API (whose errors are Ollama's ``{"error": "message"}``, see the app).
HTTP_ENDPOINTS: dict[str, Endpoint[Any]] = {
    e.name: e for e in (tokens.TOKENIZE, tokens.DETOKENIZE, tokens.APPLY_TEMPLATE,
                        ollama.CHAT, ollama.GENERATE, ollama.EMBED, ollama.EMBEDDINGS,
                        ollama.SHOW)
}


def _param_from_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        s = str(item)
        # pydantic adds union-member tags such as "str", "list[int]", "function-after[...]"
        if isinstance(item, str) and ("[" in s or s in {"str", "int", "float", "bool", "list",
                                                         "dict", "none", "nullable"}):
            continue
        parts.append(s)
    return ".".join(parts) or "body"


def parse_request(model: type[M], body: dict[str, Any]) -> M:
    """Validate a JSON body; the first problem is a 400 naming the parameter."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param_from_loc(tuple(err["loc"]))
        if err["type"] == "missing":
            message = f"Missing required parameter: '{param}'"
        else:
            message = f"Invalid value for '{param}': {err['msg']}"
        raise APIError(400, message, "invalid_request_error", param, "invalid_value") from None


async def dispatch(
    service: Service, endpoint: Endpoint[Any], body: dict[str, Any], rlog: RequestLog,
    *, stream: bool = False,
) -> tuple[Reply, list[str]]:
    """Parse ``body`` for ``endpoint`` and run its handler. Returns the reply and the request's
    unknown (ignored) fields. ``stream`` asks for a stream whatever the request says (the
    WebSocket); a reply is a stream only for an endpoint that streams."""
    req = parse_request(endpoint.request, body)
    unknown = req.unknown_fields()
    if unknown:
        # Only plain names are logged (a field name is request content too).
        plain = [n for n in unknown if _PLAIN_NAME.fullmatch(n)]
        others = len(unknown) - len(plain)
        log.info("request %s: ignoring unknown fields %s%s", rlog.request_id, plain,
                 f" and {others} other(s)" if others else "")
    return await endpoint.handler(service, req, rlog, stream), unknown
