"""``POST /v1/chat/completions``: one chat rendered with the model's template, ``n`` choices."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from hologram.heads import ChatMessage, TokenInfo
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
    sampling_params,
    usage_dict,
    usage_model,
    with_seed,
)
from hologram.server.errors import APIError, shutting_down
from hologram.server.generation import (
    Finish,
    Job,
    KeepAlive,
    Plan,
    Tokens,
    check_budget,
    finish_reason,
    generate,
)
from hologram.server.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    ChoiceLogprobs,
    TokenLogprobOut,
    TopLogprobOut,
)
from hologram.server.service import RequestLog, Service

__all__ = ["ENDPOINT", "chunks", "plan", "respond"]


def _messages(req: ChatCompletionRequest) -> list[ChatMessage]:
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
    return messages


async def plan(service: Service, req: ChatCompletionRequest, rlog: RequestLog) -> Plan:
    """Validate the request, render and tokenize the chat; every choice shares one
    SamplingParams (a seeded request gives choice j the seed ``seed + j``)."""
    service.check_ready()
    served = service.resolve(req.model, "generate")
    rlog.model = served.id
    head = served.loaded.completion
    assert head is not None
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
    messages = _messages(req)
    n = req.n or 1
    max_param = "max_completion_tokens" if req.max_completion_tokens is not None \
        else "max_tokens"
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
        else req.max_tokens

    def prepare() -> list[Job]:
        prompt = head.encode_chat(messages)
        resolved = head.resolve_max_tokens(len(prompt.ids), max_tokens, max_param, "messages")
        params = sampling_params(req, head, resolved, logprobs)
        return [Job(index=j, prompt_index=0, prompt=prompt,
                    params=with_seed(params, params.seed, j)) for j in range(n)]

    jobs = await service.off_loop(prepare)
    check_budget(service, jobs, head.n_ctx, max_param)
    rlog.prompt_tokens = len(jobs[0].prompt.ids)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Plan(served, head, jobs, bool(req.stream), include_usage, logprobs,
                new_id("chatcmpl"), int(time.time()), rlog.started, rlog)


def _token_logprob(t: TokenInfo) -> TokenLogprobOut:
    return TokenLogprobOut(
        token=t.token,
        logprob=t.logprob if t.logprob is not None else -9999.0,
        bytes=list(t.bytes),
        top_logprobs=[TopLogprobOut(token=a.token, logprob=a.logprob, bytes=list(a.bytes))
                      for a in t.top],
    )


def _token_logprob_dict(t: TokenInfo) -> dict[str, Any]:
    """``_token_logprob(t).dump()`` without the pydantic models."""
    return {
        "token": t.token,
        "logprob": t.logprob if t.logprob is not None else -9999.0,
        "bytes": list(t.bytes),
        "top_logprobs": [{"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes)}
                         for a in t.top],
    }


def _count_prompt_tokens(service: Service, plan: Plan, prompt_tokens: int) -> int:
    service.count_prompt_tokens(plan.served.id, prompt_tokens)
    plan.log.prompt_tokens = prompt_tokens
    return prompt_tokens


async def respond(service: Service, plan: Plan) -> dict[str, Any]:
    """Run the plan to the end; the ``chat.completion`` response body."""
    texts: dict[int, list[str]] = {j.index: [] for j in plan.jobs}
    tokens: dict[int, list[TokenInfo]] = {j.index: [] for j in plan.jobs}
    finish: dict[int, str] = {}
    prompt_tokens = 0
    completion_tokens = 0
    cached = 1 << 62  # the prompt's cache hit: the least any choice reports
    want_logprobs = plan.logprobs is not None
    async with contextlib.aclosing(generate(service, plan)) as events:
        async for ev in events:
            if isinstance(ev, Tokens):
                texts[ev.index].extend(d.text for d in ev.deltas)
                if want_logprobs:
                    tokens[ev.index].extend(d.token for d in ev.deltas if d.token is not None)
            elif isinstance(ev, Finish):
                finish[ev.index] = ev.finish_reason
                prompt_tokens = ev.prompt_tokens
                cached = min(cached, ev.cached_tokens)
                completion_tokens += ev.completion_tokens
    if plan.log.interrupted:
        raise shutting_down("the generation")
    choices = [
        ChatChoice(
            index=job.index,
            message=ChatMessageOut(content="".join(texts[job.index]), refusal=None),
            logprobs=ChoiceLogprobs(content=[_token_logprob(t) for t in tokens[job.index]],
                                    refusal=None)
            if want_logprobs else None,
            finish_reason=finish_reason(finish.get(job.index)),
        )
        for job in plan.jobs
    ]
    n_prompt = _count_prompt_tokens(service, plan, prompt_tokens)
    plan.log.completion_tokens = completion_tokens
    return ChatCompletionResponse(
        id=plan.id, created=plan.created, model=plan.served.id,
        system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
        usage=usage_model(n_prompt, completion_tokens, cached),
    ).dump()


async def chunks(service: Service, plan: Plan) -> ChunkStream:
    """Run the plan; its ``chat.completion.chunk`` stream chunks as JSON texts (the same bytes
    the ChatCompletionChunk model would give, written directly: this runs once per token)."""
    envelope = chunk_envelope(plan.id, "chat.completion.chunk", plan.created, plan.served.id)
    # "usage" is present (null until the last chunk) only with include_usage.
    tail = '}],"usage":null}' if plan.include_usage else "}]}"
    heads = {j.index: f'{envelope}{{"index":{j.index},"delta":' for j in plan.jobs}
    content_tail = '},"logprobs":null,"finish_reason":null' + tail

    def choice(index: int, delta: str, logprobs: str = "null", finish: str = "null") -> str:
        """A chunk of one choice; ``delta``, ``logprobs`` and ``finish`` are JSON texts."""
        return f'{heads[index]}{delta},"logprobs":{logprobs},"finish_reason":{finish}{tail}'

    want_logprobs = plan.logprobs is not None
    prompt_tokens = 0
    completion_tokens = 0
    cached = 1 << 62
    rlog = plan.log

    for job in plan.jobs:
        yield [choice(job.index, '{"role":"assistant","content":""}')]
    async with contextlib.aclosing(generate(service, plan)) as events:
        async for ev in events:
            if isinstance(ev, Tokens):
                head = heads[ev.index]
                rlog.completion_tokens += len(ev.deltas)
                out: list[str] = []
                for d in ev.deltas:
                    if want_logprobs and d.token is not None:
                        lp = encode_json({"content": [_token_logprob_dict(d.token)],
                                          "refusal": None})
                        out.append(choice(ev.index, f'{{"content":{encode_json(d.text)}}}', lp))
                    elif d.text:
                        out.append(head + '{"content":' + encode_json(d.text) + content_tail)
                if out:
                    yield out
            elif isinstance(ev, Finish):
                prompt_tokens = ev.prompt_tokens
                cached = min(cached, ev.cached_tokens)
                completion_tokens += ev.completion_tokens
                yield [choice(ev.index, "{}", finish=f'"{ev.finish_reason}"')]
            elif isinstance(ev, KeepAlive):
                yield []
    n_prompt = _count_prompt_tokens(service, plan, prompt_tokens)
    rlog.completion_tokens = completion_tokens
    if plan.include_usage:
        usage = encode_json(usage_dict(n_prompt, completion_tokens, cached))
        yield [f'{envelope}],"usage":{usage}}}']


async def handle(service: Service, req: ChatCompletionRequest, rlog: RequestLog,
                 stream: bool) -> Reply:
    p = await plan(service, req, rlog)
    if p.stream or stream:
        service.check_capacity(p.served)
        return StreamReply(chunks(service, p))
    return JSONReply(await respond(service, p))


ENDPOINT = Endpoint("chat/completions", "/v1/chat/completions", ChatCompletionRequest, handle)
