"""The server's logic between protocol models and heads: model registry, request planning
(validation, tokenization, sampling settings), execution under admission control, and the
assembly of responses and stream chunks. Shared by the HTTP routes and the WebSocket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hologram.heads import (
    ChatMessage,
    CompletionHead,
    CompletionStream,
    Delta,
    EngineFailure,
    HeadError,
    LoadedModel,
    Prompt,
    SamplingParams,
    TokenInfo,
    load_model,
)
from hologram.server.admission import QueueFull, QueueLimit
from hologram.server.errors import APIError, from_head_error
from hologram.server.metrics import Metrics
from hologram.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    SamplingFields,
    TokenLogprobOut,
    TopLogprobOut,
    Usage,
)
from hologram.server.runner import StreamHub, run_blocking
from hologram.server.settings import ServerSettings

__all__ = ["Plan", "RequestLog", "ServedModel", "Service"]

log = logging.getLogger("hologram.server")

MAX_TOTAL_CHOICES = 128
SYSTEM_FINGERPRINT = "fp_hologram"


@dataclass
class RequestLog:
    """What the access log line reports about one request."""

    request_id: str
    method: str
    path: str
    client: str
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int | None = None
    error: str | None = None
    cancelled: bool = False
    stream: bool = False


@dataclass
class ServedModel:
    id: str
    loaded: LoadedModel
    #: Requests in flight for this model (running in the engine or waiting for it).
    limit: QueueLimit
    #: Wakes the readers of this model's streams (None for embedding-only models).
    hub: StreamHub | None
    #: Encoder (embedding-only) models compute here, one request at a time.
    executor: ThreadPoolExecutor


# -- events from the worker thread ------------------------------------------------------------


@dataclass
class _PromptLogprobs:
    index: int
    tokens: list[TokenInfo]


@dataclass
class _DeltaEvent:
    index: int
    delta: Delta


@dataclass
class _Finish:
    index: int
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Error:
    error: BaseException


@dataclass
class _Job:
    index: int
    prompt_index: int
    prompt: Prompt
    params: SamplingParams
    echo: bool = False
    prompt_logprobs: int | None = None


@dataclass
class Plan:
    kind: Literal["completion", "chat"]
    served: ServedModel
    head: CompletionHead
    jobs: list[_Job]
    stream: bool
    include_usage: bool
    logprobs: int | None
    id: str
    created: int
    arrival: float
    log: RequestLog


def _finish_reason(reason: str | None) -> Literal["stop", "length"]:
    return "length" if reason == "length" else "stop"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class Service:
    """Everything the routes need: models, executors, admission, metrics."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.models: dict[str, ServedModel] = {}
        self.state: Literal["loading", "ready", "failed", "shutting_down"] = "loading"
        self.load_error: str | None = None
        self.aux = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hologram-aux")
        self.on_fatal: Callable[[str], None] | None = None
        self.metrics.engine_stats = self.engine_stats

    # -- lifecycle ---------------------------------------------------------------------------

    async def load_models(self) -> None:
        """Load every configured model (in a worker thread); the server answers 503 meanwhile."""
        loop = asyncio.get_running_loop()
        ids = [spec.model_id for spec in self.settings.models]
        try:
            if len(set(ids)) != len(ids):
                raise HeadError(f"model ids must be unique, got {ids}")
            for spec in self.settings.models:
                t0 = time.monotonic()
                loaded = await loop.run_in_executor(
                    self.aux,
                    lambda spec=spec: load_model(  # type: ignore[misc]
                        spec.path,
                        n_ctx=self.settings.n_ctx,
                        n_threads=self.settings.n_threads,
                        n_batch=self.settings.n_batch,
                        n_seq_max=self.settings.parallel,
                        kv_tokens=self.settings.kv_tokens,
                        step_tokens=self.settings.step_tokens,
                        template_timeout_s=self.settings.template_timeout_s,
                    ),
                )
                mid = spec.model_id
                served = ServedModel(
                    id=mid,
                    loaded=loaded,
                    limit=QueueLimit(self.settings.parallel + self.settings.max_queue,
                                     self.metrics.in_flight.labels(mid).set),
                    hub=StreamHub(loaded.completion) if loaded.completion else None,
                    executor=ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix=f"hologram-embed-{mid}"),
                )
                if served.hub is not None:
                    served.hub.attach(loop)
                self.models[mid] = served
                self.metrics.in_flight.labels(mid).set(0)
                log.info(
                    "loaded model %s (%s, %s, n_ctx=%d, slots=%d) in %.2f s",
                    mid, os.path.basename(loaded.info.path), loaded.info.architecture,
                    loaded.info.n_ctx, loaded.info.n_seq_max, time.monotonic() - t0,
                )
        except HeadError as exc:
            self.state = "failed"
            self.load_error = exc.message
            if self.on_fatal is not None:
                self.on_fatal(exc.message)
            else:
                log.error("%s", exc.message)
            return
        if self.state == "loading":
            self.state = "ready"

    def engine_stats(self) -> dict[str, dict[str, Any]]:
        """The engine thread's gauges and counters per decoder model (for /metrics)."""
        return {mid: m.loaded.completion.engine_stats() for mid, m in self.models.items()
                if m.loaded.completion is not None}

    def shutdown(self) -> None:
        for m in self.models.values():
            if m.hub is not None:
                m.hub.detach()
            m.executor.shutdown(wait=False, cancel_futures=True)
        self.aux.shutdown(wait=False, cancel_futures=True)

    # -- models ------------------------------------------------------------------------------

    def model_list(self) -> ModelList:
        return ModelList(data=[self.model_card(m) for m in self.models.values()])

    def model_card(self, served: ServedModel) -> ModelCard:
        info = served.loaded.info
        caps = ["embeddings"] if info.is_embedding_model else [
            "completions", "chat.completions", "embeddings"]
        return ModelCard(
            id=served.id,
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
            },
        )

    def get_model(self, model_id: str) -> ServedModel:
        served = self.models.get(model_id)
        if served is None:
            raise APIError(404, f"The model '{model_id}' does not exist",
                           "invalid_request_error", "model", "model_not_found")
        return served

    def resolve(self, name: str | None, capability: Literal["generate", "embed"]) -> ServedModel:
        if name is not None:
            served = self.get_model(name)
            if capability == "generate" and served.loaded.completion is None:
                raise APIError(400, f"The model '{name}' is an embedding model; it cannot "
                               "generate text", "invalid_request_error", "model",
                               "model_not_supported")
            return served
        if capability == "generate":
            choices = [m for m in self.models.values() if m.loaded.completion is not None]
        else:
            choices = [m for m in self.models.values() if m.loaded.info.is_embedding_model]
            if not choices:
                choices = list(self.models.values())
        if len(choices) == 1:
            return choices[0]
        if not choices:
            raise APIError(400, "no loaded model can serve this request",
                           "invalid_request_error", "model", "model_not_found")
        names = ", ".join(repr(m.id) for m in choices)
        raise APIError(400, f"'model' is required when several models are loaded; choose one "
                       f"of: {names}", "invalid_request_error", "model", "model_required")

    # -- planning ----------------------------------------------------------------------------

    def _sampling(
        self, req: SamplingFields, head: CompletionHead, max_tokens: int | None,
        logprobs: int | None,
    ) -> SamplingParams:
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
        return SamplingParams.build(
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
        )

    async def _off_loop(self, fn: Callable[[], Any]) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.aux, fn)
        except HeadError as exc:
            raise from_head_error(exc) from None

    def _check_ready(self) -> None:
        if self.state == "loading":
            raise APIError(503, "the model is still loading", "server_error", None,
                           "model_loading", {"Retry-After": "1"})
        if self.state == "failed":
            raise APIError(503, f"no model is available: {self.load_error}", "server_error",
                           None, "model_unavailable")

    async def plan_completion(self, req: CompletionRequest, rlog: RequestLog) -> Plan:
        self._check_ready()
        served = self.resolve(req.model, "generate")
        rlog.model = served.id
        head = served.loaded.completion
        assert head is not None
        if req.suffix:
            raise APIError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")
        n = req.n or 1
        if req.best_of not in (None, 0, 1, n):
            raise APIError(400, "best_of other than n is not supported", param="best_of")
        raw = req.prompt
        prompts: list[str | list[int]]
        if isinstance(raw, str):
            prompts = [raw]
        elif raw and isinstance(raw[0], int):
            prompts = [list(raw)]
        else:
            prompts = list(raw)  # type: ignore[arg-type]
        if not prompts:
            raise APIError(400, "prompt must not be an empty list", param="prompt")
        if len(prompts) * n > MAX_TOTAL_CHOICES:
            raise APIError(400, f"{len(prompts)} prompts x n={n} asks for more than "
                           f"{MAX_TOTAL_CHOICES} choices", param="n")
        max_tokens = req.max_tokens if req.max_tokens is not None else 16

        def prepare() -> list[_Job]:
            jobs: list[_Job] = []
            for p_i, p in enumerate(prompts):
                param = "prompt" if len(prompts) == 1 else f"prompt.{p_i}"
                prompt = head.encode_prompt(p, param, parse_special=bool(req.parse_special))
                head.resolve_max_tokens(len(prompt.ids), max_tokens)
                for j in range(n):
                    params = self._sampling(req, head, max_tokens, req.logprobs)
                    if req.seed is not None and j:
                        params = _replace_seed(params, req.seed + j)
                    jobs.append(_Job(
                        index=p_i * n + j, prompt_index=p_i, prompt=prompt, params=params,
                        echo=bool(req.echo),
                        prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None
                        else None,
                    ))
            return jobs

        jobs = await self._off_loop(prepare)
        rlog.prompt_tokens = sum({j.prompt_index: len(j.prompt.ids) for j in jobs}.values())
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return Plan("completion", served, head, jobs, bool(req.stream), include_usage,
                    req.logprobs, _new_id("cmpl"), int(time.time()), rlog.started, rlog)

    async def plan_chat(self, req: ChatCompletionRequest, rlog: RequestLog) -> Plan:
        self._check_ready()
        served = self.resolve(req.model, "generate")
        rlog.model = served.id
        head = served.loaded.completion
        assert head is not None
        if req.response_format is not None and req.response_format.type != "text":
            raise APIError(400, f"response_format type '{req.response_format.type}' is not "
                           "supported; only 'text' is", param="response_format",
                           code="unsupported_value")
        if req.tools:
            raise APIError(400, "tools (function calling) are not supported", param="tools",
                           code="unsupported_value")
        if req.tool_choice not in (None, "none"):
            raise APIError(400, "tool_choice is not supported", param="tool_choice",
                           code="unsupported_value")
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true",
                           param="top_logprobs")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        messages: list[ChatMessage] = []
        for i, m in enumerate(req.messages):
            if m.content is None:
                if m.role != "assistant":
                    raise APIError(400, f"messages[{i}].content is required",
                                   param=f"messages.{i}.content")
                content = ""
            elif isinstance(m.content, str):
                content = m.content
            else:
                parts: list[str] = []
                for k, part in enumerate(m.content):
                    if part.type != "text" or part.text is None:
                        raise APIError(400, f"messages[{i}].content[{k}] has type "
                                       f"'{part.type}'; only text parts are supported",
                                       param=f"messages.{i}.content.{k}",
                                       code="unsupported_value")
                    parts.append(part.text)
                content = "\n".join(parts)
            messages.append(ChatMessage(role=m.role, content=content, name=m.name))
        n = req.n or 1
        max_param = "max_completion_tokens" if req.max_completion_tokens is not None \
            else "max_tokens"
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
            else req.max_tokens

        def prepare() -> list[_Job]:
            prompt = head.encode_chat(messages)
            resolved = head.resolve_max_tokens(len(prompt.ids), max_tokens, max_param,
                                               "messages")
            jobs: list[_Job] = []
            for j in range(n):
                params = self._sampling(req, head, resolved, logprobs)
                if req.seed is not None and j:
                    params = _replace_seed(params, req.seed + j)
                jobs.append(_Job(index=j, prompt_index=0, prompt=prompt, params=params))
            return jobs

        jobs = await self._off_loop(prepare)
        rlog.prompt_tokens = len(jobs[0].prompt.ids)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return Plan("chat", served, head, jobs, bool(req.stream), include_usage, logprobs,
                    _new_id("chatcmpl"), int(time.time()), rlog.started, rlog)

    def check_capacity(self, served: ServedModel) -> None:
        """Refuse now (503) if the model already has as many requests as it accepts."""
        if served.limit.would_overflow():
            self.metrics.rejected.labels("queue_full").inc()
            raise _queue_full(served)

    # -- execution ---------------------------------------------------------------------------

    def _enter(self, served: ServedModel) -> None:
        try:
            served.limit.enter()
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise _queue_full(served) from None

    async def events(self, plan: Plan) -> AsyncGenerator[Any, None]:
        """Submit the plan's jobs to the engine (they run together, batched with every other
        request) and yield their events as they arrive: per job, optional prompt logprobs,
        deltas, then its finish."""
        served = plan.served
        head = plan.head
        metrics = self.metrics
        mid = served.id
        self._enter(served)
        streams: dict[int, CompletionStream] = {}
        try:
            for job in plan.jobs:
                if job.prompt_logprobs is not None:
                    k = job.prompt_logprobs
                    lps = await self._off_loop(
                        lambda job=job, k=k: head.prompt_logprobs(job.prompt.ids, k))  # type: ignore[misc]
                    yield _PromptLogprobs(job.index, lps)
                try:
                    streams[job.index] = head.start(job.prompt, job.params)
                except HeadError as exc:
                    raise from_head_error(exc) from None
            first = True
            last_token_at: dict[int, float] = {}
            assert served.hub is not None  # a model that generates has a hub
            async for index, delta in served.hub.deltas(streams):
                if delta is None:
                    s = streams[index]
                    yield _Finish(index, _finish_reason(s.finish_reason), s.prompt_tokens,
                                  s.completion_tokens)
                    continue
                now = time.monotonic()
                if first:
                    metrics.ttft.labels(mid).observe(now - plan.arrival)
                    first = False
                prev = last_token_at.get(index)
                if prev is not None:
                    metrics.itl.labels(mid).observe(now - prev)
                last_token_at[index] = now
                metrics.generation_tokens.labels(mid).inc()
                yield _DeltaEvent(index, delta)
        except HeadError as exc:
            if isinstance(exc, EngineFailure):
                log.error("generation failed (request %s): %s", plan.log.request_id,
                          type(exc).__name__)
            raise from_head_error(exc) from None
        except (asyncio.CancelledError, GeneratorExit):
            plan.log.cancelled = True
            metrics.cancelled.labels(mid).inc()
            raise
        finally:
            for st in streams.values():
                st.close()
            served.limit.leave()

    def _count_prompt_tokens(self, plan: Plan, prompt_tokens: dict[int, int]) -> int:
        total = sum(prompt_tokens.values())
        self.metrics.prompt_tokens.labels(plan.served.id).inc(total)
        plan.log.prompt_tokens = total
        return total

    # -- completions -------------------------------------------------------------------------

    def _completion_logprobs(
        self, tokens: list[TokenInfo], offset: int
    ) -> tuple[CompletionLogprobs, int]:
        lp = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        for t in tokens:
            lp.tokens.append(t.token)
            lp.token_logprobs.append(t.logprob)
            lp.top_logprobs.append({a.token: a.logprob for a in t.top} if t.logprob is not None
                                   else None)
            lp.text_offset.append(offset)
            offset += len(t.token)
        return lp, offset

    async def completion_response(self, plan: Plan) -> dict[str, Any]:
        texts: dict[int, list[str]] = {j.index: [] for j in plan.jobs}
        tokens: dict[int, list[TokenInfo]] = {j.index: [] for j in plan.jobs}
        finish: dict[int, str] = {}
        prompt_tokens: dict[int, int] = {}
        completion_tokens = 0
        jobs = {j.index: j for j in plan.jobs}
        async with contextlib.aclosing(self.events(plan)) as evs:
            async for ev in evs:
                if isinstance(ev, _PromptLogprobs):
                    tokens[ev.index].extend(ev.tokens)
                elif isinstance(ev, _DeltaEvent):
                    texts[ev.index].append(ev.delta.text)
                    if plan.logprobs is not None:
                        tokens[ev.index].append(ev.delta.token)
                elif isinstance(ev, _Finish):
                    finish[ev.index] = ev.finish_reason
                    prompt_tokens[jobs[ev.index].prompt_index] = ev.prompt_tokens
                    completion_tokens += ev.completion_tokens
        choices = []
        for job in plan.jobs:
            text = "".join(texts[job.index])
            if job.echo:
                text = job.prompt.text + text
            logprobs = None
            if plan.logprobs is not None:
                logprobs, _ = self._completion_logprobs(tokens[job.index], 0)
            choices.append(CompletionChoice(index=job.index, text=text, logprobs=logprobs,
                                            finish_reason=_finish_reason(finish.get(job.index))))
        n_prompt = self._count_prompt_tokens(plan, prompt_tokens)
        plan.log.completion_tokens = completion_tokens
        return CompletionResponse(
            id=plan.id, created=plan.created, model=plan.served.id,
            system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
            usage=Usage(prompt_tokens=n_prompt, completion_tokens=completion_tokens,
                        total_tokens=n_prompt + completion_tokens),
        ).dump()

    async def completion_chunks(self, plan: Plan) -> AsyncGenerator[dict[str, Any], None]:
        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> dict[str, Any]:
            return CompletionResponse(id=plan.id, created=plan.created, model=plan.served.id,
                                      system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
                                      usage=usage).dump()

        jobs = {j.index: j for j in plan.jobs}
        offsets: dict[int, int] = {j.index: 0 for j in plan.jobs}
        prompt_tokens: dict[int, int] = {}
        completion_tokens = 0
        for job in plan.jobs:
            if job.echo and job.prompt_logprobs is None:
                offsets[job.index] = len(job.prompt.text)
                yield chunk([CompletionChoice(index=job.index, text=job.prompt.text,
                                              logprobs=None, finish_reason=None)])
        async with contextlib.aclosing(self.events(plan)) as evs:
            async for ev in evs:
                if isinstance(ev, _PromptLogprobs):
                    lp, offsets[ev.index] = self._completion_logprobs(ev.tokens, 0)
                    yield chunk([CompletionChoice(index=ev.index, text=jobs[ev.index].prompt.text,
                                                  logprobs=lp, finish_reason=None)])
                elif isinstance(ev, _DeltaEvent):
                    plan.log.completion_tokens += 1
                    lp = None
                    if plan.logprobs is not None:
                        lp, offsets[ev.index] = self._completion_logprobs(
                            [ev.delta.token], offsets[ev.index])
                    elif not ev.delta.text:
                        continue
                    yield chunk([CompletionChoice(index=ev.index, text=ev.delta.text,
                                                  logprobs=lp, finish_reason=None)])
                elif isinstance(ev, _Finish):
                    prompt_tokens[jobs[ev.index].prompt_index] = ev.prompt_tokens
                    completion_tokens += ev.completion_tokens
                    yield chunk([CompletionChoice(index=ev.index, text="", logprobs=None,
                                                  finish_reason=_finish_reason(ev.finish_reason))])
        n_prompt = self._count_prompt_tokens(plan, prompt_tokens)
        plan.log.completion_tokens = completion_tokens
        if plan.include_usage:
            yield chunk([], Usage(prompt_tokens=n_prompt, completion_tokens=completion_tokens,
                                  total_tokens=n_prompt + completion_tokens))

    # -- chat --------------------------------------------------------------------------------

    @staticmethod
    def _chat_logprob(t: TokenInfo) -> TokenLogprobOut:
        return TokenLogprobOut(
            token=t.token,
            logprob=t.logprob if t.logprob is not None else -9999.0,
            bytes=list(t.bytes),
            top_logprobs=[TopLogprobOut(token=a.token, logprob=a.logprob, bytes=list(a.bytes))
                          for a in t.top],
        )

    async def chat_response(self, plan: Plan) -> dict[str, Any]:
        texts: dict[int, list[str]] = {j.index: [] for j in plan.jobs}
        tokens: dict[int, list[TokenInfo]] = {j.index: [] for j in plan.jobs}
        finish: dict[int, str] = {}
        prompt_tokens: dict[int, int] = {}
        completion_tokens = 0
        async with contextlib.aclosing(self.events(plan)) as evs:
            async for ev in evs:
                if isinstance(ev, _DeltaEvent):
                    texts[ev.index].append(ev.delta.text)
                    if plan.logprobs is not None:
                        tokens[ev.index].append(ev.delta.token)
                elif isinstance(ev, _Finish):
                    finish[ev.index] = ev.finish_reason
                    prompt_tokens[0] = ev.prompt_tokens
                    completion_tokens += ev.completion_tokens
        choices = [
            ChatChoice(
                index=job.index,
                message=ChatMessageOut(content="".join(texts[job.index]), refusal=None),
                logprobs=ChoiceLogprobs(content=[self._chat_logprob(t)
                                                 for t in tokens[job.index]], refusal=None)
                if plan.logprobs is not None else None,
                finish_reason=_finish_reason(finish.get(job.index)),
            )
            for job in plan.jobs
        ]
        n_prompt = self._count_prompt_tokens(plan, prompt_tokens)
        plan.log.completion_tokens = completion_tokens
        return ChatCompletionResponse(
            id=plan.id, created=plan.created, model=plan.served.id,
            system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
            usage=Usage(prompt_tokens=n_prompt, completion_tokens=completion_tokens,
                        total_tokens=n_prompt + completion_tokens),
        ).dump()

    async def chat_chunks(self, plan: Plan) -> AsyncGenerator[dict[str, Any], None]:
        def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> dict[str, Any]:
            return ChatCompletionChunk(id=plan.id, created=plan.created, model=plan.served.id,
                                       system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
                                       usage=usage, include_usage=plan.include_usage).dump()

        for job in plan.jobs:
            yield chunk([ChatChunkChoice(index=job.index,
                                         delta=ChatDelta(role="assistant", content=""),
                                         logprobs=None, finish_reason=None)])
        prompt_tokens: dict[int, int] = {}
        completion_tokens = 0
        async with contextlib.aclosing(self.events(plan)) as evs:
            async for ev in evs:
                if isinstance(ev, _DeltaEvent):
                    plan.log.completion_tokens += 1
                    lp = None
                    if plan.logprobs is not None:
                        lp = ChoiceLogprobs(content=[self._chat_logprob(ev.delta.token)],
                                            refusal=None)
                    elif not ev.delta.text:
                        continue
                    yield chunk([ChatChunkChoice(index=ev.index,
                                                 delta=ChatDelta(content=ev.delta.text),
                                                 logprobs=lp, finish_reason=None)])
                elif isinstance(ev, _Finish):
                    prompt_tokens[0] = ev.prompt_tokens
                    completion_tokens += ev.completion_tokens
                    yield chunk([ChatChunkChoice(index=ev.index, delta=ChatDelta(),
                                                 logprobs=None,
                                                 finish_reason=_finish_reason(ev.finish_reason))])
        n_prompt = self._count_prompt_tokens(plan, prompt_tokens)
        plan.log.completion_tokens = completion_tokens
        if plan.include_usage:
            yield chunk([], Usage(prompt_tokens=n_prompt, completion_tokens=completion_tokens,
                                  total_tokens=n_prompt + completion_tokens))

    # -- embeddings --------------------------------------------------------------------------

    async def embeddings(self, req: EmbeddingRequest, rlog: RequestLog) -> dict[str, Any]:
        self._check_ready()
        served = self.resolve(req.model, "embed")
        rlog.model = served.id
        head = served.loaded.embedding
        raw = req.input
        inputs: list[str | list[int]]
        if isinstance(raw, str):
            inputs = [raw]
        elif raw and isinstance(raw[0], int):
            inputs = [list(raw)]
        else:
            inputs = list(raw)  # type: ignore[arg-type]
        try:
            head.check_dimensions(req.dimensions)
        except HeadError as exc:
            raise from_head_error(exc) from None
        self._enter(served)
        try:
            out = await run_blocking(
                served.executor, lambda cancel: head.embed(inputs, req.dimensions, cancel))
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
        self.metrics.prompt_tokens.labels(served.id).inc(out.prompt_tokens)
        return EmbeddingResponse(
            data=data, model=served.id,
            usage=EmbeddingUsage(prompt_tokens=out.prompt_tokens,
                                 total_tokens=out.prompt_tokens),
        ).dump()


def _replace_seed(params: SamplingParams, seed: int) -> SamplingParams:
    return dataclasses.replace(params, seed=seed)


def _queue_full(served: ServedModel) -> APIError:
    return APIError(
        503,
        f"server busy: {served.limit.in_flight} requests in flight for model '{served.id}' "
        f"(at most {served.limit.limit}: --parallel plus --max-queue); retry later",
        "server_error", None, "server_busy", {"Retry-After": "1"},
    )
