"""Ollama's API over the same heads and engine, so tools that speak only Ollama work unchanged:
``GET /api/tags``, ``GET /api/version``, ``POST /api/show``, ``POST /api/chat``,
``POST /api/generate``, ``POST /api/embed`` (and the older ``POST /api/embeddings``).

Shapes follow Ollama's ``docs/api.md``. ``stream`` defaults to true, as in Ollama: the reply is
NDJSON (``application/x-ndjson``), one JSON object per line, the last with ``"done": true``,
``done_reason`` and the counters (``total_duration``, ``load_duration``, ``prompt_eval_count``,
``prompt_eval_duration``, ``eval_count``, ``eval_duration``; durations in nanoseconds).
Errors are Ollama's ``{"error": "message"}`` with the same status codes as the OpenAI routes
(mid-stream: an ``{"error": ...}`` line). ``options`` takes ``temperature``, ``top_p``,
``top_k``, ``min_p``, ``seed``, ``num_predict`` (-1 or -2: until the end of text or of the
context), ``stop``, ``repeat_penalty``, ``repeat_last_n``, ``presence_penalty`` and
``frequency_penalty``; an option left out takes the model's default (the server's flag, else
the file's ``general.sampling.*`` key, else llama.cpp's). ``num_ctx`` and the load-time options
are accepted and ignored (the server's ``--ctx`` applies), as is ``keep_alive``. A model name
may carry Ollama's ``:latest`` tag. ``/api/embed`` cuts inputs longer than the model's context
unless ``truncate`` is false (then they are refused, 400).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from hologram import __version__, constraints
from hologram.heads import ChatMessage, CompletionHead, InvalidInputError, Prompt
from hologram.server.endpoints import embeddings
from hologram.server.endpoints.common import (
    ChunkStream,
    Endpoint,
    JSONReply,
    Reply,
    StreamReply,
    encode_json,
    new_id,
)
from hologram.server.errors import APIError, shutting_down
from hologram.server.generation import Finish, Job, Plan, Tokens, check_budget, generate
from hologram.server.protocol import EmbeddingRequest, Number, RequestModel
from hologram.server.service import RequestLog, ServedModel, Service

__all__ = ["CHAT", "EMBED", "EMBEDDINGS", "GENERATE", "SHOW", "NDJSONReply", "tags",
           "version"]

#: The version /api/version reports: hologram's (Ollama clients only display it).
VERSION = __version__


@dataclass(slots=True)
class NDJSONReply(StreamReply):
    """A stream sent as NDJSON (one JSON text per line) rather than SSE."""


# -- requests ----------------------------------------------------------------------------------


class Options(RequestModel):
    """Ollama's ``options``: the sampling ones are used, the others accepted and ignored."""

    temperature: Annotated[Number | None, Field(default=None, ge=0.0, le=2.0,
                                                allow_inf_nan=False)] = None
    top_p: Annotated[Number | None, Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)] = (
        None)
    top_k: Annotated[StrictInt | None, Field(default=None, ge=0, le=2**31 - 1)] = None
    min_p: Annotated[Number | None, Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)] = (
        None)
    seed: Annotated[StrictInt | None, Field(default=None, ge=0, le=2**64 - 1)] = None
    num_predict: Annotated[StrictInt | None, Field(default=None, ge=-2)] = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    repeat_penalty: Annotated[Number | None, Field(default=None, gt=0.0, le=10.0,
                                                   allow_inf_nan=False)] = None
    repeat_last_n: Annotated[StrictInt | None, Field(default=None, ge=-1, le=2**31 - 1)] = None
    presence_penalty: Annotated[Number | None, Field(default=None, ge=-2.0, le=2.0,
                                                     allow_inf_nan=False)] = None
    frequency_penalty: Annotated[Number | None, Field(default=None, ge=-2.0, le=2.0,
                                                      allow_inf_nan=False)] = None
    num_ctx: Annotated[StrictInt | None, Field(default=None, ge=1)] = None


class _Base(RequestModel):
    model: StrictStr | None = None
    options: Options | None = None
    stream: StrictBool | None = None
    keep_alive: StrictStr | Number | None = None
    format: Any = None
    think: Any = None


class Message(RequestModel):
    role: StrictStr
    content: StrictStr | None = None
    images: list[Any] | None = None
    tool_calls: list[Any] | None = None
    tool_name: StrictStr | None = None


class ChatRequest(_Base):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Any] | None = None


class GenerateRequest(_Base):
    prompt: StrictStr | None = None
    suffix: StrictStr | None = None
    system: StrictStr | None = None
    template: StrictStr | None = None
    raw: StrictBool | None = None
    images: list[Any] | None = None
    context: list[StrictInt] | None = None


class EmbedRequest(RequestModel):
    model: StrictStr | None = None
    input: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=2048)]
    truncate: StrictBool | None = None
    dimensions: Annotated[StrictInt | None, Field(default=None, ge=1)] = None
    options: dict[str, Any] | None = None
    keep_alive: StrictStr | Number | None = None


class EmbeddingsRequest(RequestModel):
    model: StrictStr | None = None
    prompt: StrictStr
    options: dict[str, Any] | None = None
    keep_alive: StrictStr | Number | None = None


class ShowRequest(RequestModel):
    model: StrictStr | None = None
    name: StrictStr | None = None  # the older field
    verbose: StrictBool | None = None


# -- helpers -----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _served(service: Service, name: str | None,
            capability: Literal["generate", "embed"]) -> ServedModel:
    """The model ``name`` names (Ollama's ``:latest`` tag may be added), else the only one
    that can serve the request."""
    service.check_ready()
    if name is not None and name not in service.names and name.endswith(":latest"):
        name = name[: -len(":latest")]
    return service.resolve(name, capability)


def _unsupported(field: str, what: str) -> APIError:
    return APIError(400, f"{field} ({what}) is not supported", param=field,
                    code="unsupported_value")


def _format_grammar(req: _Base, head: CompletionHead) -> str | None:
    """Ollama's ``format``: ``"json"`` (any JSON object) or a JSON schema, enforced by the
    constrained decoder as ``response_format`` is on the OpenAI routes."""
    fmt = req.format
    if fmt in (None, ""):
        return None
    if fmt == "json":
        grammar = constraints.json_object()
    elif isinstance(fmt, dict):
        grammar = constraints.json_schema(fmt)
    else:
        raise APIError(400, "format must be \"json\" or a JSON schema object", param="format",
                       code="invalid_value")
    try:
        head.check_grammar(grammar, "format")
    except InvalidInputError as exc:
        raise APIError(400, f"format: {exc}", param="format", code="invalid_value") from None
    return grammar


def _jobs(service: Service, served: ServedModel, prompt: Prompt, options: Options | None,
          prompt_param: str, grammar: str | None = None) -> list[Job]:
    head = served.loaded.completion
    assert head is not None
    o = options or Options()
    max_tokens = None if o.num_predict is None or o.num_predict < 0 else o.num_predict
    if max_tokens == 0:
        raise APIError(400, "options.num_predict must be -1, -2 or at least 1",
                       param="options.num_predict")
    resolved = head.resolve_max_tokens(len(prompt.ids), max_tokens, "options.num_predict",
                                       prompt_param)
    stop = (o.stop,) if isinstance(o.stop, str) else tuple(o.stop or ())
    params = head.sampling(
        max_tokens=resolved,
        temperature=None if o.temperature is None else float(o.temperature),
        top_p=None if o.top_p is None else float(o.top_p),
        top_k=o.top_k,
        min_p=None if o.min_p is None else float(o.min_p),
        repeat_penalty=None if o.repeat_penalty is None else float(o.repeat_penalty),
        repeat_last_n=None if o.repeat_last_n is None else
        (head.n_ctx if o.repeat_last_n == -1 else o.repeat_last_n),
        presence_penalty=None if o.presence_penalty is None else float(o.presence_penalty),
        frequency_penalty=None if o.frequency_penalty is None else float(o.frequency_penalty),
        stop=tuple(s for s in stop if s),
        seed=o.seed,
        grammar=grammar,
    )
    jobs = [Job(index=0, prompt_index=0, prompt=prompt, params=params)]
    check_budget(service, jobs, head.n_ctx, "options.num_predict")
    return jobs


def _plan(service: Service, served: ServedModel, jobs: list[Job], stream: bool,
          rlog: RequestLog) -> Plan:
    head = served.loaded.completion
    assert head is not None
    rlog.prompt_tokens = len(jobs[0].prompt.ids)
    return Plan(served, head, jobs, stream, False, None, new_id("ollama"), int(time.time()),
                rlog.started, rlog)


@dataclass
class _Run:
    """One generation's text pieces as they come, then its end and counters."""

    plan: Plan
    texts: list[str]
    token_ids: list[int]
    finish: Finish | None = None
    first_token_at: float | None = None

    def final(self) -> dict[str, Any]:
        """The counters of the last object (durations in nanoseconds)."""
        now = time.monotonic()
        start = self.plan.arrival
        first = self.first_token_at or now
        f = self.finish
        return {
            "done": True,
            "done_reason": f.finish_reason if f is not None else "stop",
            "total_duration": int((now - start) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": f.prompt_tokens if f is not None else 0,
            "prompt_eval_duration": int((first - start) * 1e9),
            "eval_count": f.completion_tokens if f is not None else 0,
            "eval_duration": int((now - first) * 1e9),
        }


async def _events(service: Service, run: _Run) -> AsyncGenerator[str, None]:
    """Run the plan; yield each text piece (possibly empty: a token that released no text
    yet) and record the end."""
    plan = run.plan
    async with contextlib.aclosing(generate(service, plan)) as events:
        async for ev in events:
            if isinstance(ev, Tokens):
                if run.first_token_at is None:
                    run.first_token_at = time.monotonic()
                plan.log.completion_tokens += len(ev.deltas)
                run.token_ids.extend(d.token.id for d in ev.deltas if d.token is not None)
                text = "".join(d.text for d in ev.deltas)
                run.texts.append(text)
                yield text
            elif isinstance(ev, Finish):
                run.finish = ev
    f = run.finish
    if f is not None:
        service.count_prompt_tokens(plan.served.id, f.prompt_tokens)
        plan.log.prompt_tokens = f.prompt_tokens
        plan.log.completion_tokens = f.completion_tokens


async def _reply(service: Service, plan: Plan, name: str, piece: str,
                 extra: dict[str, Any] | None = None) -> Reply:
    """Run ``plan``: a stream of ``{"model", "created_at", piece: ..., "done": false}`` lines
    and the final object, or (``stream`` false) the one final object with the whole text.
    ``piece`` is "response" (generate) or "message" (chat)."""
    run = _Run(plan, [], [])

    def shaped(text: str) -> Any:
        return {"role": "assistant", "content": text} if piece == "message" else text

    def last(text: str) -> dict[str, Any]:
        body = {"model": name, "created_at": _now(), piece: shaped(text), **run.final()}
        if extra is not None:
            body.update({k: v(run) if callable(v) else v for k, v in extra.items()})
        return body

    if not plan.stream:
        async for _ in _events(service, run):
            pass
        if plan.log.interrupted:
            raise shutting_down("the generation")
        return JSONReply(last("".join(run.texts)))

    service.check_capacity(plan.served)

    async def lines() -> ChunkStream:
        async for text in _events(service, run):
            if text:
                yield [encode_json({"model": name, "created_at": _now(), piece: shaped(text),
                                    "done": False})]
        yield [encode_json(last(""))]

    return NDJSONReply(lines())


# -- routes ------------------------------------------------------------------------------------


async def chat(service: Service, req: ChatRequest, rlog: RequestLog, stream: bool) -> Reply:
    served = _served(service, req.model, "generate")
    rlog.model = served.id
    head = served.loaded.completion
    assert head is not None
    if req.tools:
        raise _unsupported("tools", "tool calling on the Ollama routes")
    if not req.messages:
        raise APIError(400, "messages must contain at least one message", param="messages")
    messages: list[ChatMessage] = []
    for i, m in enumerate(req.messages):
        if m.images:
            raise _unsupported(f"messages.{i}.images", "images")
        if m.tool_calls:
            raise _unsupported(f"messages.{i}.tool_calls", "tool calls")
        messages.append(ChatMessage(role=m.role, content=m.content or ""))

    def prepare() -> list[Job]:
        grammar = _format_grammar(req, head)
        return _jobs(service, served, head.encode_chat(messages), req.options, "messages",
                     grammar)

    jobs = await service.off_loop(prepare)
    plan = _plan(service, served, jobs, req.stream is not False, rlog)
    return await _reply(service, plan, req.model or served.id, "message")


async def generate_route(service: Service, req: GenerateRequest, rlog: RequestLog,
                         stream: bool) -> Reply:
    served = _served(service, req.model, "generate")
    rlog.model = served.id
    head = served.loaded.completion
    assert head is not None
    for name, value in (("suffix", req.suffix), ("template", req.template),
                        ("images", req.images)):
        if value:
            raise _unsupported(name, "on /api/generate")
    name = req.model or served.id
    if not req.prompt and not req.context:
        # Ollama answers an empty prompt by loading the model: it is loaded already.
        return JSONReply({"model": name, "created_at": _now(), "response": "", "done": True,
                          "done_reason": "load"})
    prompt_text = req.prompt or ""
    context = head.check_token_ids(req.context or [], "context")

    def prepare() -> list[Job]:
        if req.raw:
            ids = list(head.encode_prompt(prompt_text, parse_special=True).ids) \
                if prompt_text else []
        else:
            chat_msgs = [ChatMessage("system", req.system)] if req.system else []
            chat_msgs.append(ChatMessage("user", prompt_text))
            ids = list(head.encode_chat(chat_msgs).ids)
        bos = head.bos_id
        if context and ids and bos is not None and ids[0] == bos:
            ids = ids[1:]  # the context already starts the sequence
        prompt = Prompt(ids=context + ids, text=prompt_text)
        return _jobs(service, served, prompt, req.options, "prompt", _format_grammar(req, head))

    jobs = await service.off_loop(prepare)
    plan = _plan(service, served, jobs, req.stream is not False, rlog)
    return await _reply(service, plan, name, "response",
                        {"context": lambda run: [*run.plan.jobs[0].prompt.ids, *run.token_ids]})


def _truncated(served: ServedModel, texts: list[str]) -> list[str] | list[list[int]]:
    """``texts`` as they are when each fits the model's context, else every one as token ids
    cut to the context (Ollama's ``truncate``), the tokenizer's closing token (BERT's [SEP])
    kept at the end."""
    loaded = served.loaded
    n_ctx = loaded.info.n_ctx
    cap = n_ctx * 256  # the first n_ctx tokens lie well within this many characters
    ids = [loaded.tokenize(t[:cap], add_special=True, parse_special=False, param="input")
           for t in texts]
    if all(len(i) <= n_ctx for i in ids):
        return texts
    out: list[list[int]] = []
    for text, full in zip(texts, ids, strict=True):
        if len(full) > n_ctx:
            plain = loaded.tokenize(text[:cap], add_special=False, parse_special=False,
                                    param="input")
            closing = full[-1:] if plain[-1:] != full[-1:] else []
            full = full[: n_ctx - len(closing)] + closing
        out.append(full)
    return out


async def embed(service: Service, req: EmbedRequest, rlog: RequestLog, stream: bool) -> Reply:
    t0 = time.monotonic()
    served = _served(service, req.model, "embed")
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    inputs: list[str] | list[list[int]] = texts
    if req.truncate is not False and all(texts):
        inputs = await service.off_loop(lambda: _truncated(served, texts))
    out = await embeddings.embed(service, EmbeddingRequest(
        model=served.id, input=inputs, dimensions=req.dimensions), rlog)
    return JSONReply({
        "model": req.model or served.id,
        "embeddings": [d["embedding"] for d in out.body["data"]],
        "total_duration": int((time.monotonic() - t0) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": out.body["usage"]["prompt_tokens"],
    })


async def embeddings_route(service: Service, req: EmbeddingsRequest, rlog: RequestLog,
                           stream: bool) -> Reply:
    served = _served(service, req.model, "embed")
    out = await embeddings.embed(service, EmbeddingRequest(model=served.id, input=req.prompt),
                                 rlog)
    return JSONReply({"embedding": out.body["data"][0]["embedding"]})


def _details(served: ServedModel) -> dict[str, Any]:
    arch = served.loaded.info.architecture
    meta = served.loaded.metadata
    size = meta.get("general.size_label")
    return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch],
            "parameter_size": size if isinstance(size, str) else "",
            "quantization_level": _quantization(served.loaded.info.path)}


def _quantization(path: str) -> str:
    """The quantization named in the file name (``...Q4_1.gguf`` -> ``Q4_1``), else ""."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".gguf")
    tail = stem.replace("-", ".").rsplit(".", 1)[-1]
    return tail.upper() if tail[:1].upper() in ("Q", "F", "I", "B") and any(
        c.isdigit() for c in tail) else ""


def _modified(served: ServedModel) -> str:
    return datetime.fromtimestamp(served.loaded.info.created, timezone.utc).isoformat()


def _digest(served: ServedModel, size: int) -> str:
    """A stable id of the model file (its path, size and time; not a hash of its bytes)."""
    key = f"{served.loaded.info.path}\0{size}\0{served.loaded.info.created}"
    return hashlib.sha256(key.encode()).hexdigest()


def tags(service: Service) -> dict[str, Any]:
    """The ``GET /api/tags`` body: an entry per model id (public id, then aliases)."""
    service.check_ready()
    models = []
    for served in service.models.values():
        try:
            size = os.path.getsize(served.loaded.info.path)
        except OSError:
            size = 0
        for mid in served.ids or [served.id]:
            models.append({"name": mid, "model": mid, "modified_at": _modified(served),
                           "size": size, "digest": _digest(served, size),
                           "details": _details(served)})
    return {"models": models}


def version() -> dict[str, Any]:
    return {"version": VERSION}


async def show(service: Service, req: ShowRequest, rlog: RequestLog, stream: bool) -> Reply:
    name = req.model or req.name
    service.check_ready()
    if name is not None and name not in service.names and name.endswith(":latest"):
        name = name[: -len(":latest")]
    served = service.resolve(name, "embed") if name is None else service.get_model(name)
    rlog.model = served.id
    head = served.loaded.completion
    info: dict[str, Any] = {k: v for k, v in served.loaded.metadata.items()
                            if not k.startswith("tokenizer.")}
    params = "" if head is None else "\n".join(
        f"{k} {v['value']}" for k, v in head.defaults.report().items() if v["value"] is not None)
    return JSONReply({
        "modelfile": "",
        "parameters": params,
        "template": served.loaded.chat_template or "",
        "details": _details(served),
        "model_info": info,
        "capabilities": ["embedding"] if head is None else ["completion"],
        "modified_at": _modified(served),
    })


CHAT = Endpoint("api/chat", "/api/chat", ChatRequest, chat)
GENERATE = Endpoint("api/generate", "/api/generate", GenerateRequest, generate_route)
EMBED = Endpoint("api/embed", "/api/embed", EmbedRequest, embed)
EMBEDDINGS = Endpoint("api/embeddings", "/api/embeddings", EmbeddingsRequest, embeddings_route)
SHOW = Endpoint("api/show", "/api/show", ShowRequest, show)
