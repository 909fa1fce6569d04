"""``POST /v1/chat/completions``: one chat rendered with the model's template, ``n`` choices."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from hologram.heads import ChatMessage, ParsedCall, TokenInfo, ToolCall, ToolStreamParser
from hologram.heads.tools import new_call_id, parse_tool_calls, tool_grammar
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
    FunctionCallOut,
    TokenLogprobOut,
    ToolCallOut,
    TopLogprobOut,
)
from hologram.server.service import RequestLog, Service

__all__ = ["ENDPOINT", "chunks", "plan", "respond"]


def _messages(req: ChatCompletionRequest) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, m in enumerate(req.messages):
        if m.tool_calls and m.role != "assistant":
            raise APIError(400, f"messages[{i}].tool_calls is allowed only on assistant "
                           "messages", param=f"messages.{i}.tool_calls")
        if m.role == "tool" and m.tool_call_id is None:
            raise APIError(400, f"messages[{i}].tool_call_id is required for role 'tool'",
                           param=f"messages.{i}.tool_call_id")
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
        calls = tuple(ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                      for c in m.tool_calls or ())
        messages.append(ChatMessage(role=m.role, content=content, name=m.name,
                                    tool_calls=calls,
                                    tool_call_id=m.tool_call_id if m.role == "tool" else None))
    return messages


@dataclasses.dataclass(frozen=True)
class _ToolPlan:
    """What a request's ``tools`` and ``tool_choice`` come to."""

    #: the tool definitions shown to the model (None: none)
    tools: list[dict[str, Any]] | None
    #: the grammar that forces a call (``required`` / a named function), else None
    grammar: str | None
    #: parse calls out of the output
    parse: bool
    parallel: bool


def _tool_plan(req: ChatCompletionRequest, tool_format: str) -> _ToolPlan:
    """Validate ``tools`` / ``tool_choice`` / ``parallel_tool_calls``. The grammar of a forced
    call (and, to check the schemas, of any call) is compiled by the caller."""
    choice = req.tool_choice
    parallel = req.parallel_tool_calls is not False
    if not req.tools:
        if choice not in (None, "none"):
            raise APIError(400, "tool_choice is only allowed when tools are specified",
                           param="tool_choice")
        return _ToolPlan(None, None, False, parallel)
    functions = [t.function for t in req.tools]
    names = [f.name for f in functions]
    for k, name in enumerate(names):
        if name in names[:k]:
            raise APIError(400, f"tools[{k}].function.name '{name}' is given twice",
                           param=f"tools.{k}.function.name")
    defs = [t.model_dump(exclude_none=True) for t in req.tools]
    if choice == "none":
        return _ToolPlan(None, None, False, parallel)
    if choice is None or choice == "auto":
        return _ToolPlan(defs, None, True, parallel)
    if choice == "required":
        chosen = defs
    else:
        if choice.function.name not in names:
            raise APIError(400, f"tool_choice names the function '{choice.function.name}', "
                           "which is not in tools", param="tool_choice.function.name")
        chosen = [defs[names.index(choice.function.name)]]
        parallel = False
    strict = all(d["function"].get("strict") for d in chosen)
    grammar = tool_grammar(tool_format, [d["function"] for d in chosen], parallel,
                           lenient=not strict)
    return _ToolPlan(defs, grammar, True, parallel)


async def plan(service: Service, req: ChatCompletionRequest, rlog: RequestLog) -> Plan:
    """Validate the request, render and tokenize the chat; every choice shares one
    SamplingParams (a seeded request gives choice j the seed ``seed + j``)."""
    service.check_ready()
    served = service.resolve(req.model, "generate")
    rlog.model = served.id
    head = served.loaded.completion
    assert head is not None
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs requires logprobs to be true",
                       param="top_logprobs")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    messages = _messages(req)
    tools = _tool_plan(req, head.tool_format)
    if tools.grammar is not None and req.response_format is not None \
            and req.response_format.type != "text":
        raise APIError(400, "response_format cannot be combined with a tool_choice that "
                       "forces a call", param="response_format")
    n = req.n or 1
    max_param = "max_completion_tokens" if req.max_completion_tokens is not None \
        else "max_tokens"
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
        else req.max_tokens

    def prepare() -> list[Job]:
        if tools.tools:
            # Every schema must compile (a malformed one is a 400 whatever tool_choice is);
            # the forced call's grammar is kept for the generation.
            check = tools.grammar or tool_grammar(
                head.tool_format, [d["function"] for d in tools.tools], True,
                lenient=not all(d["function"].get("strict") for d in tools.tools))
            head.check_grammar(check, "tools")
        prompt = head.encode_chat(messages, tools.tools)
        resolved = head.resolve_max_tokens(len(prompt.ids), max_tokens, max_param, "messages")
        params = sampling_params(req, head, resolved, logprobs)
        if tools.grammar is not None:
            params = dataclasses.replace(params, grammar=tools.grammar)
        return [Job(index=j, prompt_index=0, prompt=prompt,
                    params=with_seed(params, params.seed, j)) for j in range(n)]

    jobs = await service.off_loop(prepare)
    check_budget(service, jobs, head.n_ctx, max_param)
    rlog.prompt_tokens = len(jobs[0].prompt.ids)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Plan(served, head, jobs, bool(req.stream), include_usage, logprobs,
                new_id("chatcmpl"), int(time.time()), rlog.started, rlog,
                tool_format=head.tool_format if tools.parse else None,
                parallel_tool_calls=tools.parallel)


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


def _tool_call_out(call: ParsedCall) -> ToolCallOut:
    return ToolCallOut(id=new_call_id(), function=FunctionCallOut(name=call.name,
                                                                  arguments=call.arguments))


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
    choices = []
    for job in plan.jobs:
        text = "".join(texts[job.index])
        reason: Any = finish_reason(finish.get(job.index))
        message = ChatMessageOut(content=text, refusal=None)
        if plan.tool_format is not None:
            content, calls = parse_tool_calls(text, plan.tool_format)
            if calls:
                if not plan.parallel_tool_calls:
                    calls = calls[:1]
                message = ChatMessageOut(content=content.strip() or None, refusal=None,
                                         tool_calls=[_tool_call_out(c) for c in calls])
                if reason != "length":
                    reason = "tool_calls"
        choices.append(ChatChoice(
            index=job.index,
            message=message,
            logprobs=ChoiceLogprobs(content=[_token_logprob(t) for t in tokens[job.index]],
                                    refusal=None)
            if want_logprobs else None,
            finish_reason=reason,
        ))
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

    parsers = ({j.index: ToolStreamParser(plan.tool_format) for j in plan.jobs}
               if plan.tool_format is not None else {})
    n_calls = {j.index: 0 for j in plan.jobs}

    def tool_chunks(index: int, content: str, calls: list[ParsedCall]) -> list[str]:
        """Chunks for released content and completed calls: per call one chunk with its
        index, id, type, name and empty arguments, then one with its arguments."""
        out = []
        if content:
            out.append(heads[index] + '{"content":' + encode_json(content) + content_tail)
        for call in calls:
            k = n_calls[index]
            if k >= 1 and not plan.parallel_tool_calls:
                break
            n_calls[index] = k + 1
            first = {"tool_calls": [{"index": k, "id": new_call_id(), "type": "function",
                                     "function": {"name": call.name, "arguments": ""}}]}
            args = {"tool_calls": [{"index": k, "function": {"arguments": call.arguments}}]}
            out.append(choice(index, encode_json(first)))
            out.append(choice(index, encode_json(args)))
        return out

    for job in plan.jobs:
        yield [choice(job.index, '{"role":"assistant","content":""}')]
    async with contextlib.aclosing(generate(service, plan)) as events:
        async for ev in events:
            if isinstance(ev, Tokens) and parsers:
                rlog.completion_tokens += len(ev.deltas)
                content, calls = parsers[ev.index].feed("".join(d.text for d in ev.deltas))
                if content or calls:
                    yield tool_chunks(ev.index, content, calls)
            elif isinstance(ev, Tokens):
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
                last: list[str] = []
                reason: str = ev.finish_reason
                if parsers:
                    last = tool_chunks(ev.index, *parsers[ev.index].finish())
                    if n_calls[ev.index] and reason != "length":
                        reason = "tool_calls"
                yield [*last, choice(ev.index, "{}", finish=f'"{reason}"')]
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
