"""``POST /v1/completions``: text completion of one or more prompts, ``n`` choices each."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from hologram.heads import SamplingParams, TokenInfo
from hologram.server.endpoints.common import (
    SYSTEM_FINGERPRINT,
    ChunkStream,
    Endpoint,
    JSONReply,
    Reply,
    StreamReply,
    chunk_envelope,
    encode_json,
    new_id,
    prompt_list,
    sampling_params,
    usage_dict,
    usage_model,
    with_seed,
)
from hologram.server.errors import APIError, shutting_down
from hologram.server.generation import (
    Finish,
    Job,
    Plan,
    PromptLogprobs,
    Tokens,
    check_budget,
    finish_reason,
    generate,
)
from hologram.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from hologram.server.service import RequestLog, Service

__all__ = ["ENDPOINT", "chunks", "plan", "respond"]

MAX_TOTAL_CHOICES = 128


async def plan(service: Service, req: CompletionRequest, rlog: RequestLog) -> Plan:
    """Validate and tokenize the request; every job shares one SamplingParams (a seeded
    request gives choice j of a prompt the seed ``seed + j``)."""
    service.check_ready()
    served = service.resolve(req.model, "generate")
    rlog.model = served.id
    head = served.loaded.completion
    assert head is not None
    if req.suffix:
        raise APIError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")
    n = req.n or 1
    if req.best_of not in (None, 0, 1, n):
        raise APIError(400, "best_of other than n is not supported", param="best_of")
    prompts = prompt_list(req.prompt)
    if not prompts:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    if len(prompts) * n > MAX_TOTAL_CHOICES:
        raise APIError(400, f"{len(prompts)} prompts x n={n} asks for more than "
                       f"{MAX_TOTAL_CHOICES} choices", param="n")
    max_tokens = req.max_tokens if req.max_tokens is not None else 16
    prompt_logprobs = req.logprobs if req.echo and req.logprobs is not None else None

    def prepare() -> list[Job]:
        jobs: list[Job] = []
        params: SamplingParams | None = None
        for p_i, p in enumerate(prompts):
            param = "prompt" if len(prompts) == 1 else f"prompt.{p_i}"
            prompt = head.encode_prompt(p, param, parse_special=bool(req.parse_special))
            head.resolve_max_tokens(len(prompt.ids), max_tokens)
            if params is None:
                params = sampling_params(req, head, max_tokens, req.logprobs)
            for j in range(n):
                jobs.append(Job(index=p_i * n + j, prompt_index=p_i, prompt=prompt,
                                params=with_seed(params, params.seed, j), echo=bool(req.echo),
                                prompt_logprobs=prompt_logprobs))
        return jobs

    jobs = await service.off_loop(prepare)
    check_budget(service, jobs, head.n_ctx)
    rlog.prompt_tokens = sum({j.prompt_index: len(j.prompt.ids) for j in jobs}.values())
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Plan(served, head, jobs, bool(req.stream), include_usage, req.logprobs,
                new_id("cmpl"), int(time.time()), rlog.started, rlog)


def _logprobs(tokens: list[TokenInfo], offset: int) -> tuple[CompletionLogprobs, int]:
    lp = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for t in tokens:
        lp.tokens.append(t.token)
        lp.token_logprobs.append(t.logprob)
        lp.top_logprobs.append({a.token: a.logprob for a in t.top} if t.logprob is not None
                               else None)
        lp.text_offset.append(offset)
        offset += len(t.token)
    return lp, offset


def _logprobs_json(tokens: list[TokenInfo], offset: int) -> tuple[str, int]:
    """``_logprobs(...)`` as JSON text, without building the pydantic models."""
    toks: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for t in tokens:
        toks.append(t.token)
        lps.append(t.logprob)
        tops.append({a.token: a.logprob for a in t.top} if t.logprob is not None else None)
        offsets.append(offset)
        offset += len(t.token)
    return encode_json({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops,
                        "text_offset": offsets}), offset


def _count_prompt_tokens(service: Service, plan: Plan, prompt_tokens: dict[int, int]) -> int:
    total = sum(prompt_tokens.values())
    service.count_prompt_tokens(plan.served.id, total)
    plan.log.prompt_tokens = total
    return total


async def respond(service: Service, plan: Plan) -> dict[str, Any]:
    """Run the plan to the end; the ``text_completion`` response body."""
    texts: dict[int, list[str]] = {j.index: [] for j in plan.jobs}
    tokens: dict[int, list[TokenInfo]] = {j.index: [] for j in plan.jobs}
    finish: dict[int, str] = {}
    prompt_tokens: dict[int, int] = {}
    cached: dict[int, int] = {}
    completion_tokens = 0
    jobs = {j.index: j for j in plan.jobs}
    want_logprobs = plan.logprobs is not None
    async with contextlib.aclosing(generate(service, plan)) as events:
        async for ev in events:
            if isinstance(ev, Tokens):
                texts[ev.index].extend(d.text for d in ev.deltas)
                if want_logprobs:
                    tokens[ev.index].extend(d.token for d in ev.deltas if d.token is not None)
            elif isinstance(ev, Finish):
                finish[ev.index] = ev.finish_reason
                pi = jobs[ev.index].prompt_index
                prompt_tokens[pi] = ev.prompt_tokens
                cached[pi] = min(cached.get(pi, ev.cached_tokens), ev.cached_tokens)
                completion_tokens += ev.completion_tokens
            elif isinstance(ev, PromptLogprobs):
                tokens[ev.index].extend(ev.tokens)
    if plan.log.interrupted:
        raise shutting_down("the generation")
    choices = []
    for job in plan.jobs:
        text = "".join(texts[job.index])
        if job.echo:
            text = job.prompt.text + text
        logprobs = None
        if want_logprobs:
            logprobs, _ = _logprobs(tokens[job.index], 0)
        choices.append(CompletionChoice(index=job.index, text=text, logprobs=logprobs,
                                        finish_reason=finish_reason(finish.get(job.index))))
    n_prompt = _count_prompt_tokens(service, plan, prompt_tokens)
    plan.log.completion_tokens = completion_tokens
    return CompletionResponse(
        id=plan.id, created=plan.created, model=plan.served.id,
        system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
        usage=usage_model(n_prompt, completion_tokens, sum(cached.values())),
    ).dump()


async def chunks(service: Service, plan: Plan) -> ChunkStream:
    """Run the plan; its ``text_completion`` stream chunks as JSON texts (the same bytes the
    CompletionResponse model would give, written directly: this runs once per token)."""
    envelope = chunk_envelope(plan.id, "text_completion", plan.created, plan.served.id)
    # Per choice: the chunk text up to its "text" value.
    heads = {j.index: f'{envelope}{{"index":{j.index},"text":' for j in plan.jobs}
    no_logprobs_tail = ',"logprobs":null,"finish_reason":null}]}'

    def choice(index: int, text: str, logprobs: str = "null", finish: str = "null") -> str:
        """A chunk of one choice; ``text``, ``logprobs`` and ``finish`` are JSON texts."""
        return f'{heads[index]}{text},"logprobs":{logprobs},"finish_reason":{finish}}}]}}'

    want_logprobs = plan.logprobs is not None
    jobs = {j.index: j for j in plan.jobs}
    offsets: dict[int, int] = {j.index: 0 for j in plan.jobs}
    prompt_tokens: dict[int, int] = {}
    cached: dict[int, int] = {}
    completion_tokens = 0
    rlog = plan.log

    for job in plan.jobs:
        if job.echo and job.prompt_logprobs is None:
            offsets[job.index] = len(job.prompt.text)
            yield [heads[job.index] + encode_json(job.prompt.text) + no_logprobs_tail]
    async with contextlib.aclosing(generate(service, plan)) as events:
        async for ev in events:
            if isinstance(ev, Tokens):
                head = heads[ev.index]
                rlog.completion_tokens += len(ev.deltas)
                out: list[str] = []
                if want_logprobs:
                    offset = offsets[ev.index]
                    for d in ev.deltas:
                        if d.token is None:  # end-of-generation flush: text only
                            if d.text:
                                out.append(choice(ev.index, encode_json(d.text)))
                            continue
                        lp, offset = _logprobs_json([d.token], offset)
                        out.append(choice(ev.index, encode_json(d.text), lp))
                    offsets[ev.index] = offset
                else:
                    for d in ev.deltas:
                        if d.text:
                            out.append(head + encode_json(d.text) + no_logprobs_tail)
                if out:
                    yield out
            elif isinstance(ev, Finish):
                pi = jobs[ev.index].prompt_index
                prompt_tokens[pi] = ev.prompt_tokens
                cached[pi] = min(cached.get(pi, ev.cached_tokens), ev.cached_tokens)
                completion_tokens += ev.completion_tokens
                yield [choice(ev.index, '""', finish=f'"{ev.finish_reason}"')]
            elif isinstance(ev, PromptLogprobs):
                lp, offsets[ev.index] = _logprobs_json(ev.tokens, 0)
                yield [choice(ev.index, encode_json(jobs[ev.index].prompt.text), lp)]
            else:  # KeepAlive
                yield []
    n_prompt = _count_prompt_tokens(service, plan, prompt_tokens)
    rlog.completion_tokens = completion_tokens
    if plan.include_usage:
        usage = encode_json(usage_dict(n_prompt, completion_tokens, sum(cached.values())))
        yield [f'{envelope}],"usage":{usage}}}']


async def handle(service: Service, req: CompletionRequest, rlog: RequestLog,
                 stream: bool) -> Reply:
    p = await plan(service, req, rlog)
    if p.stream or stream:
        service.check_capacity(p.served)
        return StreamReply(chunks(service, p))
    return JSONReply(await respond(service, p))


ENDPOINT = Endpoint("completions", "/v1/completions", CompletionRequest, handle)
