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
from hologram.server.errors import from_head_error
from hologram.server.service import RequestLog, ServedModel, Service

__all__ = ["Event", "Finish", "Job", "Plan", "PromptLogprobs", "Tokens", "finish_reason",
           "generate"]

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


Event = PromptLogprobs | Tokens | Finish


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


def finish_reason(reason: str | None) -> Literal["stop", "length"]:
    return "length" if reason == "length" else "stop"


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
    try:
        for job in plan.jobs:
            if job.prompt_logprobs is not None:
                k = job.prompt_logprobs
                lps = await service.off_loop(
                    lambda job=job, k=k: head.prompt_logprobs(job.prompt.ids, k))  # type: ignore[misc]
                yield PromptLogprobs(job.index, lps)
            try:
                streams[job.index] = head.start(job.prompt, job.params)
            except HeadError as exc:
                raise from_head_error(exc) from None
        watched = [s.id for s in streams.values()]
        wake = hub.watch(watched)
        active = list(streams.items())
        last_token_at: dict[int, float] = {}
        tm = None
        while active:
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
                                 s.completion_tokens)
            if ended:
                active = [(i, s) for i, s in active if i not in ended]
            elif not progressed:
                await wake.wait()
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
        hub.unwatch(watched)
        for st in streams.values():
            st.close()
        served.limit.leave()
