"""The models being served and what every endpoint needs around them: loading, lookup by name
or capability, readiness, the per-model queue-depth limit, metrics, and the executor for
blocking head calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from prometheus_client import Counter, Histogram

from hologram.heads import HeadError, LoadedModel, load_model
from hologram.server.admission import QueueFull, QueueLimit
from hologram.server.errors import APIError, from_head_error
from hologram.server.metrics import Metrics
from hologram.server.runner import StreamHub
from hologram.server.settings import ServerSettings, model_ids

__all__ = ["RequestLog", "ServedModel", "Service", "TokenMetrics", "drain_delay"]

log = logging.getLogger("hologram.server")

T = TypeVar("T")


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
    #: The server's shutdown stopped the request before its end.
    interrupted: bool = False


@dataclass
class ServedModel:
    #: The public id (responses and metrics name the model by it).
    id: str
    loaded: LoadedModel
    #: Requests in flight for this model (running in the engine or waiting for it).
    limit: QueueLimit
    #: Wakes the readers of this model's streams (None for embedding-only models).
    hub: StreamHub | None
    #: Encoder (embedding-only) models compute here, one request at a time.
    executor: ThreadPoolExecutor
    #: Every id the model answers to, ``id`` first (file name, --alias, hologram-*-v1).
    ids: list[str] = field(default_factory=list)


class TokenMetrics:
    """One model's per-token metric children, labelled once (``labels()`` per token costs a
    lock, a tuple and a dict lookup)."""

    __slots__ = ("generation_tokens", "itl", "ttft")

    def __init__(self, metrics: Metrics, model_id: str) -> None:
        self.generation_tokens: Counter = metrics.generation_tokens.labels(model_id)
        self.ttft: Histogram = metrics.ttft.labels(model_id)
        self.itl: Histogram = metrics.itl.labels(model_id)


class Service:
    """The model registry, admission and metrics shared by every endpoint."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.models: dict[str, ServedModel] = {}
        #: Every id a request may name (public ids and aliases) -> the model's public id.
        self.names: dict[str, str] = {}
        self.state: Literal["loading", "ready", "failed", "shutting_down"] = "loading"
        self.load_error: str | None = None
        self.aux = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hologram-aux")
        self.on_fatal: Callable[[str], None] | None = None
        self.metrics.engine_stats = self.engine_stats
        self._token_metrics: dict[str, TokenMetrics] = {}
        #: Set at SIGTERM: idle WebSockets close, new requests get 503.
        self.stopping = asyncio.Event()
        #: Set shortly before the shutdown timeout: running requests are stopped and end
        #: cleanly (streams get their last chunks, an error event and their end marker).
        self.draining = False
        self._drain_hooks: set[Callable[[], None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def load_models(self) -> None:
        """Load every configured model (in a worker thread); the server answers 503 meanwhile."""
        loop = asyncio.get_running_loop()
        try:
            try:
                all_ids = model_ids(self.settings.models)
            except ValueError as exc:
                raise HeadError(str(exc)) from None
            for spec, ids in zip(self.settings.models, all_ids, strict=True):
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
                        sampling_flags=self.settings.sampling,
                        chat_template=self.settings.chat_template,
                    ),
                )
                mid = ids[0]
                served = ServedModel(
                    id=mid,
                    loaded=loaded,
                    limit=QueueLimit(self.settings.parallel + self.settings.max_queue,
                                     self.metrics.in_flight.labels(mid).set),
                    hub=StreamHub(loaded.completion) if loaded.completion else None,
                    executor=ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix=f"hologram-embed-{mid}"),
                    ids=ids,
                )
                if served.hub is not None:
                    served.hub.attach(loop)
                self.models[mid] = served
                self.names.update(dict.fromkeys(ids, mid))
                self.metrics.in_flight.labels(mid).set(0)
                log.info(
                    "loaded model %s (%s%s, %s, n_ctx=%d, slots=%d) in %.2f s",
                    mid, os.path.basename(loaded.info.path),
                    "".join(f", also {i}" for i in ids[1:]), loaded.info.architecture,
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

    def begin_shutdown(self, timeout: float) -> None:
        """Stop taking requests; what runs may finish for ``drain_delay(timeout)`` seconds,
        then :meth:`drain` stops it, leaving the rest of the timeout to send the ends."""
        if self.stopping.is_set():
            return
        self.state = "shutting_down"
        self.stopping.set()
        asyncio.get_running_loop().call_later(drain_delay(timeout), self.drain)

    def drain(self) -> None:
        """Stop every running request now (each ends cleanly, see ``on_drain``)."""
        self.draining = True
        for hook in list(self._drain_hooks):
            hook()

    @contextlib.contextmanager
    def on_drain(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call ``hook`` (on the event loop) if the server drains while the block runs."""
        self._drain_hooks.add(hook)
        try:
            if self.draining:
                hook()
            yield
        finally:
            self._drain_hooks.discard(hook)

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

    # -- lookup ------------------------------------------------------------------------------

    def check_ready(self) -> None:
        if self.state == "loading":
            raise APIError(503, "the model is still loading", "server_error", None,
                           "model_loading", {"Retry-After": "1"})
        if self.state == "failed":
            raise APIError(503, f"no model is available: {self.load_error}", "server_error",
                           None, "model_unavailable")

    def get_model(self, model_id: str) -> ServedModel:
        """The model a public id or alias names (404 for an unknown one)."""
        served = self.models.get(self.names.get(model_id, model_id))
        if served is None:
            raise APIError(404, f"The model '{model_id}' does not exist",
                           "invalid_request_error", "model", "model_not_found")
        return served

    def resolve(self, name: str | None, capability: Literal["generate", "embed"]) -> ServedModel:
        """The model a request names, or the only one that can serve it."""
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

    # -- admission ---------------------------------------------------------------------------

    def check_capacity(self, served: ServedModel) -> None:
        """Refuse now (503) if the model already has as many requests as it accepts."""
        if served.limit.would_overflow():
            self.metrics.rejected.labels("queue_full").inc()
            raise _queue_full(served)

    def enter(self, served: ServedModel) -> None:
        """Count a request in flight for ``served`` (503 past its limit); pair with
        ``served.limit.leave()``."""
        try:
            served.limit.enter()
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise _queue_full(served) from None

    # -- helpers for endpoints ---------------------------------------------------------------

    async def off_loop(self, fn: Callable[[], T]) -> T:
        """Run blocking head work (tokenization, template rendering) off the event loop."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.aux, fn)
        except HeadError as exc:
            raise from_head_error(exc) from None

    def token_metrics(self, model_id: str) -> TokenMetrics:
        tm = self._token_metrics.get(model_id)
        if tm is None:
            tm = self._token_metrics[model_id] = TokenMetrics(self.metrics, model_id)
        return tm

    def count_prompt_tokens(self, model_id: str, n: int) -> None:
        self.metrics.prompt_tokens.labels(model_id).inc(n)


def drain_delay(timeout: float) -> float:
    """Seconds after SIGTERM at which running requests are stopped: the shutdown timeout less
    a margin (a second, or a quarter of a short timeout) to send their ends."""
    return max(0.0, timeout - min(1.0, timeout / 4))


def _queue_full(served: ServedModel) -> APIError:
    return APIError(
        503,
        f"server busy: {served.limit.in_flight} requests in flight for model '{served.id}' "
        f"(at most {served.limit.limit}: --parallel plus --max-queue); retry later",
        "server_error", None, "server_busy", {"Retry-After": "1"},
    )
