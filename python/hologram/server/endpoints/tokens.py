"""Token utilities in llama.cpp server's shapes: ``POST /tokenize``, ``POST /detokenize`` and
``POST /apply-template``. Each takes an optional ``model`` (default: the only model that
generates; an embedding model works for tokenize/detokenize when named) and answers like
llama.cpp's server:

- ``/tokenize`` ``{"content", "add_special": false, "parse_special": true, "with_pieces":
  false}`` -> ``{"tokens": [id, ...]}``, or with pieces ``{"tokens": [{"id", "piece"}]}``
  where a piece that is not valid UTF-8 on its own is its list of bytes;
- ``/detokenize`` ``{"tokens": [id, ...]}`` -> ``{"content": text}``;
- ``/apply-template`` ``{"messages": [...]}`` (a chat completion body) -> ``{"prompt": text}``,
  the chat rendered with the model's template and the assistant's generation prompt.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from hologram.server.endpoints import chat
from hologram.server.endpoints.common import Endpoint, JSONReply, Reply
from hologram.server.errors import APIError
from hologram.server.protocol import ChatCompletionRequest, RequestModel
from hologram.server.service import RequestLog, ServedModel, Service

__all__ = ["APPLY_TEMPLATE", "DETOKENIZE", "TOKENIZE"]

#: Most token ids one /detokenize request may carry.
MAX_DETOKENIZE = 1 << 20


class TokenizeRequest(RequestModel):
    model: StrictStr | None = None
    content: StrictStr
    add_special: StrictBool | None = None
    parse_special: StrictBool | None = None
    with_pieces: StrictBool | None = None


class DetokenizeRequest(RequestModel):
    model: StrictStr | None = None
    tokens: Annotated[list[StrictInt], Field(max_length=MAX_DETOKENIZE)]


def _model(service: Service, name: str | None, rlog: RequestLog) -> ServedModel:
    service.check_ready()
    served = service.resolve(name, "generate") if name is None else service.get_model(name)
    rlog.model = served.id
    return served


def _piece(data: bytes) -> str | list[int]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)


async def tokenize(service: Service, req: TokenizeRequest, rlog: RequestLog,
                   stream: bool) -> Reply:
    served = _model(service, req.model, rlog)
    loaded = served.loaded
    limit = loaded.info.n_ctx * 256  # the heads' cap on prompt text
    if len(req.content) > limit:
        raise APIError(400, f"content is {len(req.content)} characters; at most {limit} may "
                       "be tokenized at once", param="content", code="context_length_exceeded")
    add_special = bool(req.add_special)
    parse_special = req.parse_special is not False

    def run() -> dict[str, Any]:
        ids = loaded.tokenize(req.content, add_special, parse_special)
        rlog.prompt_tokens = len(ids)
        if not req.with_pieces:
            return {"tokens": ids}
        return {"tokens": [{"id": t, "piece": _piece(loaded.token_bytes(t))} for t in ids]}

    return JSONReply(await service.off_loop(run))


async def detokenize(service: Service, req: DetokenizeRequest, rlog: RequestLog,
                     stream: bool) -> Reply:
    loaded = _model(service, req.model, rlog).loaded
    return JSONReply({"content": await service.off_loop(lambda: loaded.detokenize(req.tokens))})


async def apply_template(service: Service, req: ChatCompletionRequest, rlog: RequestLog,
                         stream: bool) -> Reply:
    service.check_ready()
    served = service.resolve(req.model, "generate")
    rlog.model = served.id
    head = served.loaded.completion
    assert head is not None
    messages = chat._messages(req)  # the chat route's own reading of messages
    return JSONReply({"prompt": await service.off_loop(lambda: head.render_chat(messages))})


TOKENIZE = Endpoint("tokenize", "/tokenize", TokenizeRequest, tokenize)
DETOKENIZE = Endpoint("detokenize", "/detokenize", DetokenizeRequest, detokenize)
APPLY_TEMPLATE = Endpoint("apply-template", "/apply-template", ChatCompletionRequest,
                          apply_template)
