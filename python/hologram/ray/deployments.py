"""The two Ray Serve deployments: ``hologram`` replicas and the ``ingress`` in front of them.

``HologramReplica`` runs hologram's own Quart app (:func:`hologram.server.app.create_app`)
in-process, models and all, and answers relayed HTTP requests through the app's ASGI
interface: the first item of its (streamed) answer is the status and headers, the rest the
body as the app sends it, so SSE streams stay streams. It names itself in
``X-Hologram-Replica``.

``HologramIngress`` is what Ray's HTTP proxy calls: it reads the request, computes its prefix
keys (:mod:`hologram.ray.prefix`), and relays it through the replica deployment's handle,
whose request router (:mod:`hologram.ray.router`) picks the replica. ``GET /metrics`` gathers
every replica's metrics into one exposition, each sample labelled ``replica="<id>"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hologram.ray.prefix import prefix_keys
from hologram.ray.registry import known_replicas
from hologram.server.app import create_app
from hologram.server.errors import APIError
from hologram.server.metrics import Metrics
from hologram.server.service import Service
from hologram.server.settings import ServerSettings

__all__ = ["REPLICA_HEADER", "HologramIngress", "HologramReplica", "merge_metrics"]

log = logging.getLogger("ray.serve")  # Ray Serve writes this one to the replica logs

REPLICA_HEADER = "X-Hologram-Replica"
#: Seconds a replica waits for its models at start (Ray's health check waits meanwhile).
LOAD_TIMEOUT_S = 600.0
#: Seconds the ingress waits for one replica's /metrics.
METRICS_TIMEOUT_S = 10.0

Head = tuple[int, list[tuple[bytes, bytes]]]


def _error(status: int, message: str, code: str) -> Response:
    """An error in OpenAI's shape (the same body the single server answers)."""
    err = APIError(status, message, "server_error" if status >= 500 else "invalid_request_error",
                   None, code)
    return Response(json.dumps(err.body().dump()), status_code=status,
                    media_type="application/json")


class _Lifespan:
    """Runs an ASGI app's lifespan protocol (startup now, shutdown later)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "state": {}}
        await self.app(scope, self.inbox.get, self.outbox.put)

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.outbox.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"hologram app failed to start: {reply.get('message', reply)}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.outbox.get(), 10.0)


class HologramReplica:
    """One hologram server (every configured model) inside a Ray Serve replica."""

    # Ray Serve awaits an async __init__ (the replica is not ready until the models are).
    async def __init__(self, settings: ServerSettings) -> None:  # type: ignore[misc]
        context = serve.get_replica_context()
        self.replica_id: str = context.replica_id.unique_id
        self.settings = settings
        self.service = Service(settings, Metrics())
        self.app: Any = create_app(settings, self.service)  # called as a bare ASGI app
        self.lifespan = _Lifespan(self.app)
        await self.lifespan.startup()
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while self.service.state == "loading" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.service.state != "ready":
            raise RuntimeError(f"replica {self.replica_id}: models not loaded: "
                               f"{self.service.load_error or self.service.state}")
        log.info("replica %s ready", self.replica_id)

    async def check_health(self) -> None:
        if self.service.state == "failed":
            raise RuntimeError(f"models failed: {self.service.load_error}")

    async def __del__(self) -> None:
        # Ray Serve calls this once the replica's in-flight requests are done (or its
        # graceful_shutdown_timeout_s is over).
        self.service.state = "shutting_down"
        await self.lifespan.shutdown()

    async def begin_shutdown(self, timeout: float, target: str | None = None) -> str:
        """Stop taking requests (503) and let what runs finish, as a SIGTERM does to the
        single server: streams still running shortly before ``timeout`` end cleanly."""
        del target
        self.service.begin_shutdown(timeout)
        return self.replica_id

    async def handle(self, method: str, path: str, query: bytes,
                     headers: list[tuple[bytes, bytes]], body: bytes,
                     client: tuple[str, int] | None, prefix: list[str] | None = None,
                     target: str | None = None) -> AsyncIterator[Head | bytes]:
        """Run one HTTP request through the app: yields (status, headers), then the body
        chunks. ``prefix`` and ``target`` are for the router only."""
        del prefix, target
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode("utf-8", "surrogateescape"), "query_string": query,
            "root_path": "", "headers": headers, "client": client,
            "server": (self.settings.host, self.settings.port), "extensions": {},
        }
        messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        gone = asyncio.Event()
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await messages.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                await messages.put(None)

        task = asyncio.get_running_loop().create_task(run())
        finished = False
        try:
            while True:
                message = await messages.get()
                if message is None:
                    break
                if message["type"] == "http.response.start":
                    out = [(k, v) for k, v in message.get("headers", [])]
                    out.append((REPLICA_HEADER.lower().encode(), self.replica_id.encode()))
                    yield (int(message["status"]), out)
                elif message["type"] == "http.response.body":
                    # Whatever else the app has sent meanwhile goes in the same chunk: each
                    # chunk is a hop through Ray (replica -> ingress -> proxy), and under load
                    # several SSE events are ready at once.
                    chunk = bytes(message.get("body", b""))
                    more = bool(message.get("more_body", False))
                    while more and not messages.empty():
                        following = messages.get_nowait()
                        if following is None or following["type"] != "http.response.body":
                            messages.put_nowait(following)  # re-read below (None ends)
                            break
                        chunk += bytes(following.get("body", b""))
                        more = bool(following.get("more_body", False))
                    if chunk:
                        yield chunk
                    if not more:
                        finished = True
                        break
            # As a real server does once the response is complete, receive() now reports
            # the disconnect (the app may be listening for it).
            gone.set()
            await asyncio.wait_for(task, 10.0)
        finally:
            if not finished:
                # The caller went away: the app sees the client disconnect and stops the
                # generation (as it does for a dropped connection).
                gone.set()
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError,
                                         Exception):
                    await asyncio.wait_for(asyncio.shield(task), 5.0)
                task.cancel()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{?)(.*)$")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def merge_metrics(texts: list[tuple[str, str]]) -> str:
    """One Prometheus text exposition from several replicas' (id, text): each family's HELP and
    TYPE once, then its samples from every replica with ``replica="<id>"`` added."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    for replica, text in texts:
        label = f'replica="{_escape(replica)}"'
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    meta, _ = families.setdefault(family, ([], []))
                    if len(meta) < 2 and line not in meta:
                        meta.append(line)
                continue
            m = _SAMPLE.match(line)
            if m is None:
                continue
            name, brace, rest = m.groups()
            sample = (f"{name}{{{label},{rest}" if brace and not rest.startswith("}")
                      else f"{name}{{{label}}}{rest[1:] if brace else rest}")
            families.setdefault(family or name, ([], []))[1].append(sample)
    out: list[str] = []
    for meta, samples in families.values():
        out.extend(meta)
        out.extend(samples)
    return "\n".join(out) + "\n"


def _relayed(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A replica's response headers as the ingress answers them: Ray's proxy adds its own
    x-request-id (the same id: it passed it on in the request), so the replica's goes."""
    return [(k.lower(), v) for k, v in headers if k.lower() != b"x-request-id"]


class HologramIngress:
    """The HTTP entry: relays every request to a replica chosen by the request router."""

    def __init__(self, replicas: DeploymentHandle[Any], deployment: str,
                 max_body_bytes: int, expected: int = 1) -> None:
        self.replicas = replicas
        self.deployment = deployment
        self.max_body_bytes = max_body_bytes
        #: Replicas to wait for at start: /health says 503 until the router knows this many
        #: (Ray's proxy routes as soon as one is up, the first requests would all go there).
        self.expected = expected
        self.started = expected <= 0
        #: Requests being answered (a stream counts until its last byte).
        self.in_flight = 0
        self.stopping = False

    async def begin_shutdown(self, timeout: float) -> int:
        """Answer new requests 503 and pass the shutdown on to every replica; returns the
        number of replicas told."""
        self.stopping = True
        told = 0
        for rid in await self._replica_ids():  # one at a time: see _metrics
            try:
                await asyncio.wait_for(
                    self.replicas.begin_shutdown.remote(timeout, target=rid), 10.0)
                told += 1
            except Exception as exc:  # noqa: BLE001 - that replica is going anyway
                log.warning("shutdown of replica %s: %s", rid, exc)
        return told

    async def requests_in_flight(self) -> int:
        return self.in_flight

    def _call(self, request: Request, body: bytes, **route: Any) -> DeploymentResponseGenerator[Any]:
        scope = request.scope
        client = scope.get("client")
        stream = self.replicas.options(stream=True).handle.remote(
            request.method, scope["path"], scope.get("query_string", b""),
            list(scope.get("headers", [])), body,
            tuple(client) if client else None, **route)
        assert isinstance(stream, DeploymentResponseGenerator)
        return stream

    async def _read_body(self, request: Request) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def __call__(self, request: Request) -> Response:
        if self.stopping:
            return _error(503, "the server is shutting down", "shutting_down")
        self.in_flight += 1
        relayed = False
        try:
            if request.method == "GET" and request.url.path == "/metrics":
                return await self._metrics(request)
            if not self.started:
                if not known_replicas(self.deployment):
                    # The handle makes its router on its first call.
                    await self.replicas.check_health.remote()
                if len(known_replicas(self.deployment)) < self.expected:
                    if request.url.path == "/health":
                        return Response(json.dumps({"status": "loading", "models": []}),
                                        status_code=503, media_type="application/json",
                                        headers={"Retry-After": "1"})
                else:
                    self.started = True
            body = await self._read_body(request)
            if body is None:
                return _error(413, f"Request body too large; the limit is "
                              f"{self.max_body_bytes} bytes", "request_too_large")
            keys = prefix_keys(request.url.path, body) if request.method == "POST" else []
            stream = self._call(request, body, prefix=keys or None)
            response = await self._relay(stream)
            relayed = True
            return response
        finally:
            if not relayed:
                self.in_flight -= 1

    async def _relay(self, stream: DeploymentResponseGenerator[Any]) -> Response:
        """The replica's answer as a streamed response; ``in_flight`` drops when it ends."""
        first = await stream.__anext__()
        assert isinstance(first, tuple), "a replica's answer starts with its status line"
        status, headers = first

        async def rest() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    if isinstance(chunk, bytes):
                        yield chunk
            finally:
                self.in_flight -= 1
                stream.cancel()  # type: ignore[no-untyped-call]

        response = StreamingResponse(rest(), status_code=status)
        response.raw_headers = _relayed(headers)
        return response

    async def _one_metrics(self, request: Request, replica: str) -> tuple[int, bytes, Head]:
        stream = self._call(request, b"", target=replica)
        head: Head = (500, [])
        chunks: list[bytes] = []
        async for item in stream:
            if isinstance(item, tuple):
                head = item
            else:
                chunks.append(item)
        return head[0], b"".join(chunks), head

    async def _replica_ids(self) -> list[str]:
        ids = known_replicas(self.deployment)
        if not ids:
            # The router is made on the first call through the handle: make one, and give
            # the router a moment to hear of every replica.
            await self.replicas.check_health.remote()
            for _ in range(50):
                ids = known_replicas(self.deployment)
                if ids:
                    break
                await asyncio.sleep(0.1)
        return ids

    async def _metrics(self, request: Request) -> Response:
        ids = await self._replica_ids()
        texts: list[tuple[str, str]] = []
        # One replica at a time: calls made while answering one HTTP request share its
        # internal request id, and Ray's router matches a routed replica to a waiting call
        # by that id, so concurrent calls could swap their targets.
        for rid in ids:
            try:
                result = await asyncio.wait_for(self._one_metrics(request, rid),
                                                METRICS_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - that replica is left out, logged
                log.warning("metrics of replica %s: %r", rid, exc)
                continue
            status, data, (_, headers) = result
            if status != 200:
                response = Response(data, status_code=status)
                response.raw_headers = _relayed(headers)
                return response
            texts.append((rid, data.decode("utf-8", "replace")))
        if not texts:
            return _error(503, "no replica answered /metrics", "replicas_unavailable")
        return Response(merge_metrics(texts), status_code=200, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
            REPLICA_HEADER: ",".join(rid for rid, _ in texts)})
