"""The generation runner: a planned request's jobs go to the engine (batched with every other
running sequence) and come back as a stream of typed events, which each endpoint turns into
its response body or its stream chunks.

Per job, in order: :class:`PromptLogprobs` (only when the job asks for them), any number of
:class:`Tokens`, then one :class:`Finish`. Events of different jobs interleave. ``Tokens``
carries every delta one poll of the stream returned (usually one), so the per-token cost on
the event loop is a few attribute reads, not an object per layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

from hologram.heads import (
    CompletionHead,
    CompletionStream,
    Delta,
    EngineFailure,
    HeadError,
    Prompt,
    SamplingParams,
    TokenInfo,
)
from hologram.server.errors import APIError, from_head_error
from hologram.server.service import RequestLog, ServedModel, Service

__all__ = ["Event", "Finish", "Job", "KeepAlive", "Plan", "PromptLogprobs", "Tokens",
           "check_budget", "finish_reason", "generate"]

log = logging.getLogger("hologram.server")


@dataclass(slots=True)
class PromptLogprobs:
    index: int
    tokens: list[TokenInfo]


@dataclass(slots=True)
class Tokens:
    """Deltas of one job, in order (what one poll of its stream returned)."""

    index: int
    deltas: list[Delta]


@dataclass(slots=True)
class Finish:
    index: int
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens served from the engine's prefix cache.
    cached_tokens: int = 0


@dataclass(slots=True)
class KeepAlive:
    """Nothing arrived for ``sse_keepalive_s`` (queued, or a long prompt being read): streams
    send a comment so proxies keep the connection open."""


Event = PromptLogprobs | Tokens | Finish | KeepAlive


@dataclass
class Job:
    """One choice to generate: ``index`` is its choice index in the response."""

    index: int
    prompt_index: int
    prompt: Prompt
    params: SamplingParams
    echo: bool = False
    prompt_logprobs: int | None = None


@dataclass
class Plan:
    """A validated, tokenized generation request, ready to run."""

    served: ServedModel
    head: CompletionHead
    jobs: list[Job]
    stream: bool
    include_usage: bool
    logprobs: int | None
    id: str
    created: int
    arrival: float
    log: RequestLog
    #: Chat with tools: the tool-call format parsed out of the output (None: no parsing).
    tool_format: str | None = None
    #: With ``tool_format``: whether several calls per choice are returned.
    parallel_tool_calls: bool = True


def finish_reason(reason: str | None) -> Literal["stop", "length"]:
    return "length" if reason == "length" else "stop"


def check_budget(service: Service, jobs: list[Job], n_ctx: int, param: str = "max_tokens") -> None:
    """Refuse (400, with the numbers) a request whose worst case, prompt plus max_tokens for
    every choice, exceeds ``--max-request-tokens``."""
    limit = service.settings.max_request_tokens
    worst = sum(len(j.prompt.ids) + (j.params.max_tokens if j.params.max_tokens is not None
                                     else n_ctx - len(j.prompt.ids)) for j in jobs)
    if worst > limit:
        raise APIError(
            400, f"this request could cost up to {worst} tokens ({len(jobs)} choice(s) of prompt "
            f"plus max_tokens); the server accepts at most {limit} per request: lower n or "
            f"{param}", "invalid_request_error", "n" if len(jobs) > 1 else param,
            "request_too_large")


async def generate(service: Service, plan: Plan) -> AsyncGenerator[Event, None]:
    """Submit the plan's jobs to the engine (they run together, batched with every other
    request) and yield their events as they arrive. Counts the request in flight (503 past
    the model's limit) and the token metrics; closing the generator (client gone) cancels
    the generations and frees their KV blocks."""
    served = plan.served
    head = plan.head
    hub = served.hub
    assert hub is not None  # a model that generates has a hub
    service.enter(served)
    streams: dict[int, CompletionStream] = {}
    watched: list[int] = []
    wake = asyncio.Event()
    drain = contextlib.ExitStack()
    try:
        drain.enter_context(service.on_drain(wake.set))
        # The choices of one prompt share its prompt logprobs (computed once).
        prompt_lps: dict[int, list[TokenInfo]] = {}
        for job in plan.jobs:
            if service.draining:
                break
            if job.prompt_logprobs is not None:
                k = job.prompt_logprobs
                if job.prompt_index not in prompt_lps:
                    prompt_lps[job.prompt_index] = await service.off_loop(
                        lambda job=job, k=k: head.prompt_logprobs(job.prompt.ids, k))  # type: ignore[misc]
                yield PromptLogprobs(job.index, prompt_lps[job.prompt_index])
            shared = sum(1 for j in plan.jobs if j.prompt_index == job.prompt_index) > 1
            # The choices of one prompt read it once (the engine's shared-prompt groups).
            group = hash((plan.id, job.prompt_index)) & 0x7FFF_FFFF_FFFF_FFFF if shared else None
            try:
                streams[job.index] = head.start(job.prompt, job.params, group)
            except HeadError as exc:
                raise from_head_error(exc) from None
        watched = [s.id for s in streams.values()]
        hub.watch(watched, wake)
        active = list(streams.items())
        last_token_at: dict[int, float] = {}
        tm = None
        while active or service.draining:
            wake.clear()
            progressed = False
            ended: list[int] = []
            for index, s in active:
                deltas = s.poll_deltas()
                if deltas:
                    progressed = True
                    now = time.monotonic()
                    if tm is None:
                        tm = service.token_metrics(served.id)
                        tm.ttft.observe(now - plan.arrival)
                    prev = last_token_at.get(index)
                    if prev is not None:
                        tm.itl.observe(now - prev)
                    for _ in range(len(deltas) - 1):
                        tm.itl.observe(0.0)  # arrived together
                    last_token_at[index] = now
                    tm.generation_tokens.inc(len(deltas))
                    yield Tokens(index, deltas)
                if s.done:
                    progressed = True
                    ended.append(index)
                    yield Finish(index, finish_reason(s.finish_reason), s.prompt_tokens,
                                 s.completion_tokens, s.cached_tokens)
            if ended:
                active = [(i, s) for i, s in active if i not in ended]
            if service.draining:
                # Shutdown: every choice still running ends here, cut like a length limit.
                for index, s in active:
                    yield Finish(index, "length", s.prompt_tokens, s.completion_tokens,
                                 s.cached_tokens)
                if active or len(streams) < len(plan.jobs):
                    plan.log.interrupted = True
                for job in plan.jobs:
                    if job.index not in streams:
                        yield Finish(job.index, "length", len(job.prompt.ids), 0, 0)
                return
            if not ended and not progressed:
                try:
                    await asyncio.wait_for(wake.wait(), service.settings.sse_keepalive_s)
                except TimeoutError:
                    yield KeepAlive()
    except HeadError as exc:
        if isinstance(exc, EngineFailure):
            log.error("generation failed (request %s): %s", plan.log.request_id,
                      type(exc).__name__)
        raise from_head_error(exc) from None
    except (asyncio.CancelledError, GeneratorExit):
        plan.log.cancelled = True
        service.metrics.cancelled.labels(served.id).inc()
        raise
    finally:
        drain.close()
        hub.unwatch(watched)
        for st in streams.values():
            st.close()
        served.limit.leave()
