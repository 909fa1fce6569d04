"""What the endpoint modules share: the endpoint and reply types, request-to-sampling
translation, and the JSON encoding of stream chunks."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hologram import constraints
from hologram.heads import CompletionHead, SamplingParams
from hologram.server.errors import APIError
from hologram.server.protocol import (
    PromptTokensDetails,
    RequestModel,
    ResponseFormat,
    SamplingFields,
    Usage,
)
from hologram.server.service import RequestLog, Service

__all__ = [
    "SYSTEM_FINGERPRINT",
    "ChunkStream",
    "Endpoint",
    "JSONReply",
    "Reply",
    "StreamReply",
    "chunk_envelope",
    "encode_json",
    "new_id",
    "prompt_list",
    "response_grammar",
    "sampling_params",
    "usage_dict",
    "usage_model",
    "with_seed",
]

SYSTEM_FINGERPRINT = "fp_hologram"

#: Compact JSON text, non-ASCII kept: the body of one SSE event or WebSocket message. One
#: encoder for the process (``json.dumps`` with arguments builds a new one per call).
encode_json: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":")).encode

#: A streamed reply: each item is the JSON texts of the chunks that are ready together (one
#: SSE write carries them all; a WebSocket sends one message per chunk).
ChunkStream = AsyncGenerator[list[str], None]


@dataclass(slots=True)
class JSONReply:
    body: dict[str, Any]


@dataclass(slots=True)
class StreamReply:
    chunks: ChunkStream


Reply = JSONReply | StreamReply

M = TypeVar("M", bound=RequestModel)


@dataclass(frozen=True)
class Endpoint(Generic[M]):
    """One POST endpoint: its name (``completions``, also the WebSocket's ``"endpoint"``),
    HTTP path, request model and handler. The handler gets the parsed request and whether
    the reply must be a stream whatever the request says (the WebSocket)."""

    name: str
    path: str
    request: type[M]
    handler: Callable[[Service, M, RequestLog, bool], Awaitable[Reply]]


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def chunk_envelope(id_: str, object_: str, created: int, model: str) -> str:
    """The JSON text every chunk of one response starts with, up to ``"choices":[``."""
    head = encode_json({"id": id_, "object": object_, "created": created, "model": model,
                        "system_fingerprint": SYSTEM_FINGERPRINT})
    return head[:-1] + ',"choices":['


def prompt_list(raw: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A prompt (or embedding input) field as a list of texts or token arrays."""
    if isinstance(raw, str):
        return [raw]
    if raw and isinstance(raw[0], int):
        return [list(raw)]
    return list(raw)  # type: ignore[arg-type]


def response_grammar(rf: ResponseFormat | None) -> str | None:
    """The grammar (``hologram.constraints``) that ``response_format`` asks for; None for
    free text. The schema is always enforced: a keyword the constrained decoder does not
    implement is an error whatever ``strict`` says."""
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return constraints.json_object()

    def missing(field: str) -> APIError:
        return APIError(400, f"response_format.{field} is required when its type is "
                        f"'{rf.type}'", param="response_format")

    if rf.type == "json_schema":
        if rf.json_schema is None:
            raise missing("json_schema")
        schema = rf.json_schema.schema_
        return constraints.json_schema({} if schema is None else schema)
    if rf.type == "grammar":
        if rf.grammar is None:
            raise missing("grammar")
        return constraints.lark(rf.grammar)
    if rf.regex is None:
        raise missing("regex")
    return constraints.regex(rf.regex)


def sampling_params(
    req: SamplingFields, head: CompletionHead, max_tokens: int | None, logprobs: int | None,
) -> SamplingParams:
    """The request's sampling settings, built once (unset values take the model's defaults:
    the server's flags, else the file's ``general.sampling.*`` keys, else llama.cpp's)."""
    bias: dict[int, float] = {}
    for key, value in (req.logit_bias or {}).items():
        try:
            tok = int(key)
        except ValueError:
            raise APIError(400, f"logit_bias keys must be token ids, got {key!r}",
                           param="logit_bias") from None
        if not 0 <= tok < head.n_vocab:
            raise APIError(400, f"logit_bias token id {tok} is not in the vocabulary "
                           f"(0..{head.n_vocab - 1})", param="logit_bias")
        bias[tok] = float(value)
    stop: tuple[str, ...] = ()
    if isinstance(req.stop, str):
        stop = (req.stop,) if req.stop else ()
    elif req.stop:
        stop = tuple(s for s in req.stop if s)
    grammar = response_grammar(req.response_format)
    if grammar is not None:
        head.check_grammar(grammar, "response_format")
    return head.sampling(
        max_tokens=max_tokens,
        temperature=None if req.temperature is None else float(req.temperature),
        top_p=None if req.top_p is None else float(req.top_p),
        top_k=None if req.top_k is None else max(0, req.top_k),
        min_p=None if req.min_p is None else float(req.min_p),
        repeat_penalty=None if req.repeat_penalty is None else float(req.repeat_penalty),
        presence_penalty=None if req.presence_penalty is None
        else float(req.presence_penalty),
        frequency_penalty=None if req.frequency_penalty is None
        else float(req.frequency_penalty),
        logit_bias=bias or None,
        stop=stop,
        seed=req.seed,
        logprobs=logprobs,
        ignore_eos=bool(req.ignore_eos),
        grammar=grammar,
    )


def with_seed(params: SamplingParams, seed: int | None, choice: int) -> SamplingParams:
    """Choice ``choice`` of ``n``: a seeded request (``seed``: the request's seed, else the
    server's ``--seed``, i.e. ``params.seed``) gives choice j the seed ``seed + j``."""
    if seed is None or choice == 0:
        return params
    return dataclasses.replace(params, seed=(seed + choice) % 2**64)  # seeds are u64


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """The ``usage`` object of a generation response (as the Usage model dumps it)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": min(cached_tokens, prompt_tokens)}}


def usage_model(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens,
                 prompt_tokens_details=PromptTokensDetails(
                     cached_tokens=min(cached_tokens, prompt_tokens)))

