"""The serving layer without a model: the endpoint table, the stream chunks (byte for byte what
the protocol models give), and the generation runner's events and metrics on a scripted
engine."""

from __future__ import annotations

import ast
import asyncio
import json
import os
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hologram.heads import Delta, Prompt, SamplingParams, TokenInfo, TopToken
from hologram.server.admission import QueueLimit
from hologram.server.app import create_app
from hologram.server.endpoints import ENDPOINTS, chat, completions
from hologram.server.generation import Event, Finish, Job, Plan, PromptLogprobs, Tokens, generate
from hologram.server.metrics import Metrics
from hologram.server.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    PromptTokensDetails,
    TokenLogprobOut,
    TopLogprobOut,
    Usage,
)
from hologram.server.runner import StreamHub
from hologram.server.service import RequestLog, ServedModel, Service
from hologram.server.settings import ServerSettings

SERVER = Path(__file__).resolve().parents[2] / "python" / "hologram" / "server"


# -- structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SERVER.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(SERVER)))
def test_no_server_module_imports_the_extension(path: Path) -> None:
    """tests/test_layering.py's rule, for the endpoint subpackage too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        assert not [n for n in names if n == "hologram._core" or n.startswith("hologram._core.")]


def test_one_route_per_endpoint() -> None:
    assert {name: e.path for name, e in ENDPOINTS.items()} == {
        "completions": "/v1/completions", "chat/completions": "/v1/chat/completions",
        "embeddings": "/v1/embeddings"}
    app = create_app(ServerSettings(models=[]), Service(ServerSettings(models=[]), Metrics()))
    rules = {r.rule: r.methods for r in app.url_map.iter_rules()}
    for e in ENDPOINTS.values():
        assert "POST" in (rules[e.path] or set())


# -- stream chunks ----------------------------------------------------------------------------


def _token(text: str, logprob: float | None = -0.25, top: int = 0) -> TokenInfo:
    alts = tuple(TopToken(token=t, bytes=t.encode(), logprob=-1.5 - i)
                 for i, t in enumerate([text, "b", "b"][:top]))
    return TokenInfo(id=7, token=text, bytes=text.encode(), logprob=logprob, top=alts)


def _delta(text: str, top: int = 0) -> Delta:
    return Delta(text=text, token=_token(text or "\ufffd", top=top))


def _plan(n_jobs: int, *, logprobs: int | None, include_usage: bool, echo: bool = False,
          prompt_logprobs: int | None = None) -> tuple[Service, Plan]:
    service = Service(ServerSettings(models=[]), Metrics())
    served = ServedModel(id="m-1", loaded=SimpleNamespace(), limit=QueueLimit(4),  # type: ignore[arg-type]
                         hub=None, executor=ThreadPoolExecutor(1))
    prompt = Prompt(ids=[1, 2, 3], text='Say "hé"\n')
    jobs = [Job(index=i, prompt_index=i // 2, prompt=prompt, params=SamplingParams(),
                echo=echo, prompt_logprobs=prompt_logprobs) for i in range(n_jobs)]
    rlog = RequestLog("rid", "POST", "/", "?")
    plan = Plan(served, None, jobs, True, include_usage, logprobs,  # type: ignore[arg-type]
                "id-1", 1700000000, 0.0, rlog)
    return service, plan


def _script(n_jobs: int, prompt_logprobs: bool) -> list[Event]:
    events: list[Event] = []
    for i in range(n_jobs):
        if prompt_logprobs:
            events.append(PromptLogprobs(i, [_token("Say", None), _token(' "hé"', top=2)]))
    for i in range(n_jobs):
        events.append(Tokens(i, [_delta(" a", top=2)]))
        events.append(Tokens(i, [_delta(""), _delta('"q"\n\t\u00e9\u4e2d', top=1),
                                 _delta("\U0001f600")]))
    events.append(Finish(0, "length", 3, 4))
    for i in range(1, n_jobs):
        events.append(Finish(i, "stop", 3, 4))
    return events


def _fake_generate(events: list[Event]) -> Callable[..., AsyncGenerator[Event, None]]:
    async def gen(service: Service, plan: Plan) -> AsyncGenerator[Event, None]:
        for ev in events:
            yield ev

    return gen


def _reference_completion(plan: Plan, events: list[Event]) -> list[dict[str, Any]]:
    """What the server sent before chunks were written directly (protocol models)."""
    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> dict[str, Any]:
        return CompletionResponse(id=plan.id, created=plan.created, model=plan.served.id,
                                  system_fingerprint="fp_hologram", choices=choices,
                                  usage=usage).dump()

    def lps(tokens: list[TokenInfo], offset: int) -> tuple[CompletionLogprobs, int]:
        lp = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        for t in tokens:
            lp.tokens.append(t.token)
            lp.token_logprobs.append(t.logprob)
            lp.top_logprobs.append({a.token: a.logprob for a in t.top}
                                   if t.logprob is not None else None)
            lp.text_offset.append(offset)
            offset += len(t.token)
        return lp, offset

    out = []
    offsets = {j.index: 0 for j in plan.jobs}
    for job in plan.jobs:
        if job.echo and job.prompt_logprobs is None:
            offsets[job.index] = len(job.prompt.text)
            out.append(chunk([CompletionChoice(index=job.index, text=job.prompt.text,
                                               logprobs=None, finish_reason=None)]))
    total = 0
    for ev in events:
        if isinstance(ev, PromptLogprobs):
            lp, offsets[ev.index] = lps(ev.tokens, 0)
            out.append(chunk([CompletionChoice(index=ev.index, text=plan.jobs[0].prompt.text,
                                               logprobs=lp, finish_reason=None)]))
        elif isinstance(ev, Tokens):
            for d in ev.deltas:
                lp2 = None
                if plan.logprobs is not None:
                    lp2, offsets[ev.index] = lps([d.token], offsets[ev.index])
                elif not d.text:
                    continue
                out.append(chunk([CompletionChoice(index=ev.index, text=d.text, logprobs=lp2,
                                                   finish_reason=None)]))
        else:
            total += ev.completion_tokens
            out.append(chunk([CompletionChoice(index=ev.index, text="", logprobs=None,
                                               finish_reason=ev.finish_reason)]))
    if plan.include_usage:
        n_prompt = 3 * len({j.prompt_index for j in plan.jobs})
        out.append(chunk([], Usage(prompt_tokens=n_prompt, completion_tokens=total,
                                   total_tokens=n_prompt + total,
                                   prompt_tokens_details=PromptTokensDetails(cached_tokens=0))))
    return out


def _reference_chat(plan: Plan, events: list[Event]) -> list[dict[str, Any]]:
    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> dict[str, Any]:
        return ChatCompletionChunk(id=plan.id, created=plan.created, model=plan.served.id,
                                   system_fingerprint="fp_hologram", choices=choices,
                                   usage=usage, include_usage=plan.include_usage).dump()

    def lp(t: TokenInfo) -> TokenLogprobOut:
        return TokenLogprobOut(
            token=t.token, logprob=t.logprob if t.logprob is not None else -9999.0,
            bytes=list(t.bytes),
            top_logprobs=[TopLogprobOut(token=a.token, logprob=a.logprob, bytes=list(a.bytes))
                          for a in t.top])

    out = [chunk([ChatChunkChoice(index=j.index, delta=ChatDelta(role="assistant", content=""),
                                  logprobs=None, finish_reason=None)]) for j in plan.jobs]
    total = 0
    for ev in events:
        if isinstance(ev, Tokens):
            for d in ev.deltas:
                lps = None
                if plan.logprobs is not None:
                    lps = ChoiceLogprobs(content=[lp(d.token)], refusal=None)
                elif not d.text:
                    continue
                out.append(chunk([ChatChunkChoice(index=ev.index, delta=ChatDelta(content=d.text),
                                                  logprobs=lps, finish_reason=None)]))
        elif isinstance(ev, Finish):
            total += ev.completion_tokens
            out.append(chunk([ChatChunkChoice(index=ev.index, delta=ChatDelta(), logprobs=None,
                                              finish_reason=ev.finish_reason)]))
    if plan.include_usage:
        out.append(chunk([], Usage(prompt_tokens=3, completion_tokens=total,
                                   total_tokens=3 + total,
                                   prompt_tokens_details=PromptTokensDetails(cached_tokens=0))))
    return out


def _collect(chunks: AsyncGenerator[list[str], None]) -> list[str]:
    async def run() -> list[str]:
        return [text async for texts in chunks for text in texts]

    return asyncio.run(run())


def _compact(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("n_jobs", [1, 3])
@pytest.mark.parametrize(("logprobs", "echo", "prompt_logprobs"),
                         [(None, False, None), (2, False, None), (None, True, None),
                          (1, True, 1)])
@pytest.mark.parametrize("include_usage", [False, True])
def test_completion_chunks_match_the_protocol_models(
        monkeypatch: pytest.MonkeyPatch, n_jobs: int, logprobs: int | None, echo: bool,
        prompt_logprobs: int | None, include_usage: bool) -> None:
    service, plan = _plan(n_jobs, logprobs=logprobs, include_usage=include_usage, echo=echo,
                          prompt_logprobs=prompt_logprobs)
    events = _script(n_jobs, prompt_logprobs is not None)
    monkeypatch.setattr(completions, "generate", _fake_generate(events))
    got = _collect(completions.chunks(service, plan))
    want = [_compact(c) for c in _reference_completion(plan, events)]
    assert got == want
    assert plan.log.completion_tokens == 4 * n_jobs


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("logprobs", [None, 0, 2])
@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_chunks_match_the_protocol_models(
        monkeypatch: pytest.MonkeyPatch, n_jobs: int, logprobs: int | None,
        include_usage: bool) -> None:
    service, plan = _plan(n_jobs, logprobs=logprobs, include_usage=include_usage)
    events = _script(n_jobs, False)
    monkeypatch.setattr(chat, "generate", _fake_generate(events))
    got = _collect(chat.chunks(service, plan))
    want = [_compact(c) for c in _reference_chat(plan, events)]
    assert got == want


# -- the generation runner --------------------------------------------------------------------


class _ScriptedStream:
    """Returns one scripted batch per poll; ``[]`` batches make the runner wait for a wake."""

    def __init__(self, sid: int, batches: list[list[str]], reason: str) -> None:
        self.id = sid
        self._batches = list(batches)
        self.prompt_tokens = 3
        self.completion_tokens = 0
        self.finish_reason = reason
        self.cached_tokens = 0
        self.closed = False

    def poll_deltas(self) -> list[Delta]:
        batch = self._batches.pop(0) if self._batches else []
        self.completion_tokens += len(batch)
        return [_delta(t) for t in batch]

    @property
    def done(self) -> bool:
        return not self._batches

    def close(self) -> None:
        self.closed = True


class _ScriptedEngine:
    """A head and notifier: streams come from ``scripts``; each poll that returns nothing is
    followed, a moment later, by a wake-up through the notify pipe."""

    def __init__(self, scripts: list[tuple[list[list[str]], str]]) -> None:
        self._scripts = list(scripts)
        self._r, self._w = os.pipe()
        self.streams: list[_ScriptedStream] = []
        self._ready: list[int] = []

    @property
    def notify_fd(self) -> int:
        return self._r

    def take_ready(self) -> list[int]:
        ready, self._ready = self._ready, []
        return ready

    def start(self, prompt: Prompt, params: SamplingParams,
              group: int | None = None) -> _ScriptedStream:
        batches, reason = self._scripts.pop(0)
        s = _ScriptedStream(100 + len(self.streams), batches, reason)
        self.streams.append(s)
        return s

    def wake_all_soon(self) -> None:
        loop = asyncio.get_running_loop()

        def wake() -> None:
            self._ready.extend(s.id for s in self.streams)
            os.write(self._w, b"x")

        loop.call_later(0.01, wake)


def _sample_count(metrics: Metrics, name: str) -> float:
    return sum(s.value for f in metrics.registry.collect() for s in f.samples if s.name == name)


def test_generate_yields_batches_then_finish_and_counts_every_token() -> None:
    engine = _ScriptedEngine([([["a"], [], ["b", "c"], []], "length"),
                              ([["x", "y"], [], ["z"]], "eos")])
    service, plan = _plan(2, logprobs=None, include_usage=False)
    plan.head = engine  # type: ignore[assignment]

    async def run() -> list[Event]:
        hub = StreamHub(engine)
        hub.attach(asyncio.get_running_loop())
        plan.served.hub = hub
        events: list[Event] = []
        try:
            async for ev in generate(service, plan):
                events.append(ev)
                if isinstance(ev, Tokens) and ev.deltas[-1].text in ("a", "y"):
                    engine.wake_all_soon()
        finally:
            hub.detach()
        return events

    events = asyncio.run(run())
    per_job: dict[int, list[str]] = {0: [], 1: []}
    finishes: dict[int, Finish] = {}
    for ev in events:
        assert ev.index not in finishes  # nothing after a job's Finish
        if isinstance(ev, Tokens):
            per_job[ev.index].extend(d.text for d in ev.deltas)
        elif isinstance(ev, Finish):
            finishes[ev.index] = ev
    assert per_job == {0: ["a", "b", "c"], 1: ["x", "y", "z"]}
    assert finishes[0].finish_reason == "length" and finishes[1].finish_reason == "stop"
    assert finishes[0].completion_tokens == 3 and finishes[0].prompt_tokens == 3
    assert all(s.closed for s in engine.streams)
    assert plan.served.limit.in_flight == 0
    m = service.metrics
    assert _sample_count(m, "hologram_generation_tokens_total") == 6
    assert _sample_count(m, "hologram_time_to_first_token_seconds_count") == 1
    # one inter-token gap per token after a job's first
    assert _sample_count(m, "hologram_inter_token_latency_seconds_count") == 4


def test_generate_closed_early_cancels_and_frees() -> None:
    engine = _ScriptedEngine([([["a"], [], ["b"]], "length")])
    service, plan = _plan(1, logprobs=None, include_usage=False)
    plan.head = engine  # type: ignore[assignment]

    async def run() -> None:
        hub = StreamHub(engine)
        hub.attach(asyncio.get_running_loop())
        plan.served.hub = hub
        gen = generate(service, plan)
        assert isinstance(await gen.__anext__(), Tokens)
        await gen.aclose()
        hub.detach()

    asyncio.run(run())
    assert engine.streams[0].closed and plan.log.cancelled
    assert plan.served.limit.in_flight == 0
    assert _sample_count(service.metrics, "hologram_cancelled_requests_total") == 1
