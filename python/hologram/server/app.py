"""The Quart application: OpenAI-compatible routes, auth, rate limit, errors, logging, metrics.

Routes
------
``GET /`` (the chat page, public: :mod:`hologram.server.page`), ``GET /health`` (public),
``GET /metrics``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``,
``POST /v1/chat/completions``, ``POST /v1/embeddings``, and the WebSocket ``/v1/ws``. The
POST routes and the WebSocket call the same :func:`hologram.server.endpoints.dispatch`; the
endpoints themselves live in
:mod:`hologram.server.endpoints` (one module each), the generation runner in
:mod:`hologram.server.generation`, the model registry in :mod:`hologram.server.service`.

WebSocket protocol (``/v1/ws``)
-------------------------------
The same authentication as HTTP applies to the upgrade request (``Authorization: Bearer KEY``
or ``X-Api-Key``). After the upgrade the client sends one JSON text message per request: a
normal request body plus an ``"endpoint"`` field, ``"chat/completions"`` or ``"completions"``
(a leading ``/v1/`` is accepted; ``"embeddings"`` also works). The server answers with text
messages: for generation, exactly the JSON chunk objects the SSE stream would carry
(``chat.completion.chunk`` / ``text_completion``, usage chunk included when
``stream_options.include_usage``), whatever the request's ``stream`` field says; for embeddings,
the one response object. Then it sends ``{"done": true}``. An error is sent as ``{"error":
{"message", "type", "param", "code"}}`` followed by ``{"done": true}``; the connection stays
open for the next request. Requests on one connection run one after another; closing the
socket cancels the running generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel
from quart import Quart, Response, g, request, websocket
from quart.wrappers import Websocket
from werkzeug.exceptions import HTTPException

from hologram.heads import HeadError
from hologram.server.admission import RateLimiter
from hologram.server.endpoints import ENDPOINTS, Endpoint, StreamReply, dispatch
from hologram.server.endpoints import models as model_endpoints
from hologram.server.endpoints.common import ChunkStream
from hologram.server.errors import APIError, from_head_error
from hologram.server.metrics import CONTENT_TYPE_LATEST, Metrics
from hologram.server.page import load_chat_page
from hologram.server.protocol import HealthResponse
from hologram.server.service import RequestLog, Service
from hologram.server.settings import ServerSettings
from hologram.server.sse import DONE, encode_event, encode_events

__all__ = ["create_app", "get_service"]

#: Request field names that may be echoed in the x-hologram-ignored-params header.
_HEADER_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

log = logging.getLogger("hologram.server")
access_log = logging.getLogger("hologram.access")

PUBLIC_PATHS = frozenset({"/", "/health"})
RATE_EXEMPT_PATHS = frozenset({"/health", "/metrics"})
ROUTES = frozenset({"/", "/health", "/metrics", "/v1/models", "/v1/models/<path:model_id>",
                    "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/ws"})


def get_service(app: Quart) -> Service:
    service = app.extensions["hologram"]
    assert isinstance(service, Service)
    return service


def _json_response(payload: dict[str, Any] | BaseModel, status: int = 200,
                   headers: dict[str, str] | None = None) -> Response:
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return Response(json.dumps(data, ensure_ascii=False), status=status, headers=headers,
                    mimetype="application/json")


def _error_response(err: APIError) -> Response:
    return _json_response(err.body().dump(), err.status, err.headers)


def _load_json(data: bytes | str) -> dict[str, Any]:
    if not data:
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


async def read_json() -> dict[str, Any]:
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise APIError(415, f"Content-Type must be application/json, not {mimetype}",
                       code="unsupported_media_type")
    return _load_json(await request.get_data(as_text=False))


def create_app(settings: ServerSettings, service: Service | None = None) -> Quart:
    """Build the app. Models load in the background once serving starts (/health says 503
    until then); set ``service.on_fatal`` to learn about a load failure."""
    service = service or Service(settings, Metrics())
    metrics = service.metrics
    app = Quart("hologram.server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["RESPONSE_TIMEOUT"] = 600
    app.config["BODY_TIMEOUT"] = 60
    app.extensions["hologram"] = service
    key_digests = [hashlib.sha256(k.encode()).digest() for k in settings.api_keys if k]
    limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
    loader: list[asyncio.Task[None]] = []

    @app.before_serving
    async def _start() -> None:
        loader.append(asyncio.get_running_loop().create_task(service.load_models()))

    @app.after_serving
    async def _stop() -> None:
        service.state = "shutting_down"
        for task in loader:
            task.cancel()
        service.shutdown()

    # -- auth, rate limit, request id ------------------------------------------------------

    def _presented_key(headers: Any) -> str | None:
        auth = headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return str(value.strip())
            return ""
        key = headers.get("X-Api-Key")
        return str(key) if key is not None else None

    def _key_ok(given: str | None) -> bool:
        if given is None:
            return False
        digest = hashlib.sha256(given.encode()).digest()
        ok = False
        for expected in key_digests:
            ok |= hmac.compare_digest(digest, expected)
        return ok

    def _guard(path: str, headers: Any, remote: str | None) -> None:
        """Authentication (401), then the rate limit (429) keyed by the API key, or by the
        client address when the server has no keys."""
        if path in PUBLIC_PATHS:
            return
        given = _presented_key(headers)
        if key_digests and not _key_ok(given):
            raise APIError(401, "Incorrect or missing API key; send it as 'Authorization: "
                           "Bearer KEY'", "authentication_error", None, "invalid_api_key")
        if limiter is not None and path not in RATE_EXEMPT_PATHS:
            if key_digests and given:
                identity = "key:" + hashlib.sha256(given.encode()).hexdigest()[:16]
            else:
                identity = "ip:" + (remote or "?")
            wait = limiter.check(identity)
            if wait is not None:
                metrics.rejected.labels("rate_limited").inc()
                raise APIError(
                    429, f"rate limit exceeded: at most {limiter.per_minute} requests per "
                    f"minute; retry in {RateLimiter.retry_after(wait)} s",
                    "rate_limit_error", None, "rate_limit_exceeded",
                    {"Retry-After": RateLimiter.retry_after(wait)},
                )
        if service.state == "shutting_down":
            metrics.rejected.labels("shutting_down").inc()
            raise APIError(503, "the server is shutting down", "server_error", None,
                           "shutting_down")

    @app.before_request
    async def _before() -> None:
        rid = request.headers.get("X-Request-Id") or secrets.token_hex(8)
        rid = "".join(c for c in rid if c.isalnum() or c in "-_.:")[:128] or secrets.token_hex(8)
        g.rlog = RequestLog(rid, request.method, request.path, request.remote_addr or "?")
        _guard(request.path, request.headers, request.remote_addr)

    @app.after_request
    async def _after(response: Response) -> Response:
        rlog: RequestLog | None = g.get("rlog")
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(rule if rule in ROUTES else "unmatched",
                                str(response.status_code)).inc()
        if rlog is not None:
            response.headers["X-Request-Id"] = rlog.request_id
            rlog.status = response.status_code
            if not rlog.stream:
                _log_access(rlog, rule)
        return response

    def _log_access(rlog: RequestLog, endpoint: str) -> None:
        latency = time.monotonic() - rlog.started
        if endpoint in ROUTES:
            metrics.e2e.labels(endpoint).observe(latency)
        access_log.info(json.dumps({
            "event": "request", "id": rlog.request_id, "method": rlog.method,
            "path": rlog.path, "client": rlog.client, "model": rlog.model,
            "status": rlog.status, "prompt_tokens": rlog.prompt_tokens,
            "completion_tokens": rlog.completion_tokens,
            "latency_ms": round(latency * 1000, 1), "stream": rlog.stream,
            "cancelled": rlog.cancelled, "error": rlog.error,
        }))

    # -- errors ----------------------------------------------------------------------------

    @app.errorhandler(APIError)
    async def _api_error(err: APIError) -> Response:
        rlog: RequestLog | None = g.get("rlog")
        if rlog is not None:
            rlog.error = err.message
        return _error_response(err)

    @app.errorhandler(HeadError)
    async def _head_error(err: HeadError) -> Response:
        return await _api_error(from_head_error(err))

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status == 404:
            api = APIError(404, f"Unknown route: {request.method} {request.path}",
                           "invalid_request_error", None, "not_found")
        elif status == 405:
            api = APIError(405, f"Method {request.method} is not allowed on {request.path}",
                           "invalid_request_error", None, "method_not_allowed")
        elif status == 413:
            api = APIError(413, f"Request body too large; the limit is "
                           f"{settings.max_body_bytes} bytes", "invalid_request_error", None,
                           "request_too_large")
        else:
            api = APIError(status, err.description or err.name,
                           "invalid_request_error" if status < 500 else "server_error")
        return await _api_error(api)

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error: %r", err)
        return await _api_error(APIError(500, "internal server error", "server_error"))

    # -- streaming ------------------------------------------------------------------------

    def sse_response(chunks: ChunkStream, rlog: RequestLog, headers: dict[str, str]) -> Response:
        rlog.stream = True
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"

        async def body() -> AsyncGenerator[bytes, None]:
            error: APIError | None = None
            try:
                async with contextlib.aclosing(chunks) as it:
                    async for texts in it:
                        yield encode_events(texts)
            except asyncio.CancelledError:
                rlog.cancelled = True
                _log_access(rlog, endpoint)
                raise
            except APIError as exc:
                error = exc
            except HeadError as exc:
                error = from_head_error(exc)
            except Exception:
                log.exception("stream failed")
                error = APIError(500, "internal server error", "server_error")
            if error is not None:
                rlog.error = error.message
                yield encode_event(error.body().dump())
            yield DONE
            _log_access(rlog, endpoint)

        response = Response(body(), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                     **headers})
        response.timeout = None  # no response timeout on streams
        return response

    # -- routes ---------------------------------------------------------------------------

    chat_page = load_chat_page()

    @app.get("/")
    async def chat_page_route() -> Response:
        return Response(chat_page.body, mimetype="text/html", headers=chat_page.headers)

    @app.get("/health")
    async def health() -> Response:
        ready = service.state == "ready"
        statuses: dict[str, Literal["ok", "loading", "shutting_down", "error"]] = {
            "ready": "ok", "loading": "loading", "failed": "error",
            "shutting_down": "shutting_down"}
        status = statuses[service.state]
        return _json_response(HealthResponse(status=status, models=list(service.models)).dump(),
                              200 if ready else 503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), mimetype=None,
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.get("/v1/models")
    async def list_models() -> Response:
        return _json_response(model_endpoints.model_list(service))

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        return _json_response(model_endpoints.retrieve(service, model_id))

    def _ignored_header(unknown: list[str]) -> dict[str, str]:
        # Only plain names go into a header (a name with CR/LF or other bytes is dropped).
        names = [n for n in unknown if _HEADER_SAFE.fullmatch(n)]
        return {"x-hologram-ignored-params": ",".join(names)[:1024]} if names else {}

    def _post_route(endpoint: Endpoint[Any]) -> Callable[[], Awaitable[Response]]:
        async def route() -> Response:
            rlog: RequestLog = g.rlog
            body = await read_json()
            try:
                reply, unknown = await dispatch(service, endpoint, body, rlog)
            except asyncio.CancelledError:
                # The client went away before the reply was ready; the work itself stops
                # (see generation.generate).
                rlog.cancelled = True
                rlog.status = 499
                _log_access(rlog, endpoint.path)
                raise
            headers = _ignored_header(unknown)
            if isinstance(reply, StreamReply):
                return sse_response(reply.chunks, rlog, headers)
            return _json_response(reply.body, headers=headers)

        return route

    for ep in ENDPOINTS.values():
        app.add_url_rule(ep.path, ep.name.replace("/", "_"), _post_route(ep), methods=["POST"])

    # -- websocket ------------------------------------------------------------------------

    @app.before_websocket
    async def _before_ws() -> None:
        ws: Websocket = websocket
        rid = secrets.token_hex(8)
        g.rlog = RequestLog(rid, "WS", ws.path, ws.remote_addr or "?")
        try:
            _guard(ws.path, ws.headers, ws.remote_addr)
        except APIError as err:
            return_response = _error_response(err)
            from quart import abort

            abort(return_response)

    @app.websocket("/v1/ws")
    async def ws_route() -> None:
        await websocket.accept()
        while True:
            raw = await websocket.receive()
            rlog = RequestLog(secrets.token_hex(8), "WS", "/v1/ws", websocket.remote_addr or "?")
            rlog.stream = True
            try:
                body = _load_json(raw)
                name = str(body.pop("endpoint", "")).strip("/").removeprefix("v1/")
                rlog.path = "/v1/ws:" + name
                endpoint = ENDPOINTS.get(name)
                if endpoint is None:
                    raise APIError(400, "'endpoint' must be 'chat/completions', 'completions' "
                                   "or 'embeddings'", param="endpoint")
                reply, _ = await dispatch(service, endpoint, body, rlog, stream=True)
                if isinstance(reply, StreamReply):
                    async with contextlib.aclosing(reply.chunks) as it:
                        async for texts in it:
                            for text in texts:
                                await websocket.send(text)
                else:
                    await websocket.send(json.dumps(reply.body))
                rlog.status = 200
            except APIError as err:
                rlog.status, rlog.error = err.status, err.message
                await websocket.send(json.dumps(err.body().dump()))
            except HeadError as herr:
                api = from_head_error(herr)
                rlog.status, rlog.error = api.status, api.message
                await websocket.send(json.dumps(api.body().dump()))
            except asyncio.CancelledError:
                rlog.cancelled = True
                _log_access(rlog, "/v1/ws")
                raise
            await websocket.send(json.dumps({"done": True}))
            _log_access(rlog, "/v1/ws")

    return app
