"""The Quart application: OpenAI-compatible routes, auth, rate limit, errors, logging, metrics.

Routes
------
``GET /`` (the chat page, public: :mod:`hologram.server.page`), ``GET /health`` (public),
``GET /metrics``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``,
``POST /v1/chat/completions``, ``POST /v1/embeddings``, and the WebSocket ``/v1/ws``; llama.cpp's
token utilities ``POST /tokenize``, ``POST /detokenize``, ``POST /apply-template``
(:mod:`hologram.server.endpoints.tokens`); Ollama's ``GET /api/tags``, ``GET /api/version``,
``POST /api/show``, ``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed``,
``POST /api/embeddings`` (:mod:`hologram.server.endpoints.ollama`: NDJSON streams, errors as
``{"error": "message"}``). The
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
socket cancels the running generation. Every message counts against ``--rate-limit`` like an
HTTP request (a refused one gets the 429 error in-band). The upgrade is subject to the same
Host and Origin checks as HTTP (:mod:`hologram.server.origin`). On shutdown an idle socket is
closed with code 1001; a busy one gets its request's end (see ``hologram-serve --help``,
``--shutdown-timeout``), then the same close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel
from quart import Quart, Response, abort, g, has_request_context, request, websocket
from quart.wrappers import Websocket
from quart_cors import cors, cors_exempt
from werkzeug.exceptions import HTTPException

from hologram.heads import HeadError
from hologram.server.admission import RateLimiter
from hologram.server.auth import ApiKeys, presented_key
from hologram.server.endpoints import (
    ENDPOINTS,
    HTTP_ENDPOINTS,
    Endpoint,
    StreamReply,
    dispatch,
    ollama,
)
from hologram.server.endpoints import models as model_endpoints
from hologram.server.endpoints.common import ChunkStream
from hologram.server.errors import APIError, describe_failure, from_head_error, shutting_down
from hologram.server.metrics import CONTENT_TYPE_LATEST, Metrics
from hologram.server.origin import HostPolicy, OriginPolicy
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
#: Response headers a page of an allowed origin may read.
EXPOSED_HEADERS = ["X-Request-Id", "x-hologram-ignored-params", "Retry-After"]
RATE_EXEMPT_PATHS = frozenset({"/health", "/metrics"})
ROUTES = frozenset({"/", "/health", "/metrics", "/v1/models", "/v1/models/<path:model_id>",
                    "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/ws",
                    "/tokenize", "/detokenize", "/apply-template", "/api/tags", "/api/version",
                    "/api/show", "/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})
#: Routes that answer errors in Ollama's shape, ``{"error": "message"}``.
OLLAMA_PREFIX = "/api/"


def get_service(app: Quart) -> Service:
    service = app.extensions["hologram"]
    assert isinstance(service, Service)
    return service


def _json_response(payload: dict[str, Any] | BaseModel, status: int = 200,
                   headers: dict[str, str] | None = None) -> Response:
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return Response(json.dumps(data, ensure_ascii=False), status=status, headers=headers,
                    mimetype="application/json")


def _error_response(err: APIError, path: str | None = None) -> Response:
    """The error in OpenAI's shape, or Ollama's (``{"error": "message"}``) on its routes."""
    if path is not None and path.startswith(OLLAMA_PREFIX):
        return _json_response({"error": err.message}, err.status, err.headers)
    return _json_response(err.body().dump(), err.status, err.headers)


_PARAM_SAFE = re.compile(r"[A-Za-z0-9_.]{1,64}")


def _error_label(err: APIError) -> str:
    """What the access log says of an error: status, code and parameter name, never the
    message (it may quote the request)."""
    label = f"{err.status} {err.code or err.type}"
    if err.param and _PARAM_SAFE.fullmatch(err.param):
        label += f" ({err.param})"
    return label


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_path(body: dict[str, Any]) -> str | None:
    """The dotted path of the first string (value or key) holding a lone surrogate (JSON
    allows ``"\\ud800"``; no tokenizer, header or log can take it), else None. Iterative: the
    body may be nested as deep as the JSON parser allows."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "body"
        elif isinstance(value, dict):
            for k, v in reversed(value.items()):
                if _SURROGATE.search(k):
                    return path or "body"
                stack.append((f"{path}.{k}" if path else k, v))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}", v) for i, v in reversed(list(enumerate(value))))
    return None


def _load_json(data: bytes | str) -> dict[str, Any]:
    if not data:
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}",
                       code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply", code="invalid_json") \
            from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    bad = _surrogate_path(body)
    if bad is not None:
        param = bad if _PARAM_SAFE.fullmatch(bad) else bad.split(".", 1)[0][:64]
        raise APIError(400, "a string in the request holds a lone UTF-16 surrogate (such as "
                       "\\ud800), which is not text", param=param, code="invalid_value")
    return body


async def read_json() -> dict[str, Any]:
    """The JSON object body of a POST. ``Content-Type: application/json`` (or ``+json``) is
    required: a page of another site can send a form or ``text/plain`` body without asking
    the browser's permission, but not a JSON one."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        shown = f"not {mimetype[:100]}" if mimetype else "and the request has none"
        raise APIError(415, f"Content-Type must be application/json, {shown}",
                       code="unsupported_media_type")
    data = await request.get_data(as_text=False)
    g.body_read = True
    return _load_json(data)


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
    keys = ApiKeys(settings.api_keys)
    limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
    hosts = HostPolicy(settings.host, settings.allowed_hosts)
    origins = OriginPolicy(settings.allowed_origins)
    if origins.any or origins.origins:
        # CORS headers (and preflight answers) for the listed origins only; every other
        # Origin is refused before a route runs (see _guard).
        cors(app, allow_origin=["*"] if origins.any else origins.origins,
             allow_methods=["GET", "POST", "OPTIONS"], expose_headers=EXPOSED_HEADERS,
             max_age=600)
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

    def _rate_limit(identity: str) -> None:
        if limiter is None:
            return
        wait = limiter.check(identity)
        if wait is not None:
            metrics.rejected.labels("rate_limited").inc()
            raise APIError(
                429, f"rate limit exceeded: at most {limiter.per_minute} requests per "
                f"minute; retry in {RateLimiter.retry_after(wait)} s",
                "rate_limit_error", None, "rate_limit_exceeded",
                {"Retry-After": RateLimiter.retry_after(wait)},
            )

    def _guard(path: str, method: str, headers: Any, remote: str | None) -> str:
        """Host (400) and Origin (403) checks, authentication (401), then the rate limit
        (429) keyed by the API key, or by the client address when the server has no keys.
        A failed authentication counts against its address. Returns the request's rate-limit
        identity."""
        host = headers.get("Host")
        if not hosts.allows(host):
            raise APIError(400, f"Host {str(host)[:100]!r} is not allowed; the server answers "
                           "to its own address and the names given with --allowed-hosts",
                           "invalid_request_error", None, "host_not_allowed")
        origin = headers.get("Origin")
        if not origins.allows(origin, host):
            raise APIError(403, f"Origin {str(origin)[:100]!r} is not allowed; start the "
                           "server with --allowed-origins to let a web page use it",
                           "permission_error", None, "origin_not_allowed")
        identity = "ip:" + (remote or "?")
        if path in PUBLIC_PATHS or method == "OPTIONS":
            return identity
        given = presented_key(headers)
        if keys:
            if not keys.check(given):
                _rate_limit(identity)  # failed attempts use up the address's allowance
                raise APIError(401, "Incorrect or missing API key; send it as "
                               "'Authorization: Bearer KEY'", "authentication_error", None,
                               "invalid_api_key")
            assert given is not None
            identity = ApiKeys.identity(given)
        if path not in RATE_EXEMPT_PATHS:
            _rate_limit(identity)
        if service.state == "shutting_down":
            metrics.rejected.labels("shutting_down").inc()
            raise APIError(503, "the server is shutting down", "server_error", None,
                           "shutting_down")
        return identity

    @app.before_request
    async def _before() -> None:
        rid = request.headers.get("X-Request-Id") or secrets.token_hex(8)
        rid = "".join(c for c in rid if c.isalnum() or c in "-_.:")[:128] or secrets.token_hex(8)
        g.rlog = RequestLog(rid, request.method, request.path, request.remote_addr or "?")
        _guard(request.path, request.method, request.headers, request.remote_addr)

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
        if not g.get("body_read") and (request.content_length or
                                       "Transfer-Encoding" in request.headers):
            # Answered without reading the body (refused early): the connection cannot be
            # reused, and saying so spares the client a request on a closing connection.
            response.headers["Connection"] = "close"
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
            "interrupted": rlog.interrupted,
        }))

    # -- errors ----------------------------------------------------------------------------

    @app.errorhandler(APIError)
    async def _api_error(err: APIError) -> Response:
        rlog: RequestLog | None = g.get("rlog")
        if rlog is not None:
            rlog.error = _error_label(err)
        return _error_response(err, request.path if has_request_context() else None)

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
        rlog: RequestLog | None = g.get("rlog")
        log.error("request %s failed: %s", rlog.request_id if rlog else "?",
                  describe_failure(err))
        return await _api_error(APIError(500, "internal server error", "server_error"))

    # -- streaming ------------------------------------------------------------------------

    def _stream_response(chunks: ChunkStream, rlog: RequestLog, headers: dict[str, str],
                         mimetype: str, encode: Callable[[list[str]], bytes],
                         encode_error: Callable[[APIError], bytes], trailer: bytes) -> Response:
        """A streamed answer: each batch of chunk texts through ``encode``; a failure, or a
        shutdown that cut the generation short, ends it with ``encode_error``; then ``trailer``.
        A client that goes away cancels the generation (and is logged as cancelled)."""
        rlog.stream = True
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"

        async def body() -> AsyncGenerator[bytes, None]:
            error: APIError | None = None
            try:
                async with contextlib.aclosing(chunks) as it:
                    async for texts in it:
                        data = encode(texts)  # SSE: no texts is a keep-alive comment
                        if data:
                            yield data
            except asyncio.CancelledError:
                rlog.cancelled = True
                _log_access(rlog, endpoint)
                raise
            except APIError as exc:
                error = exc
            except HeadError as exc:
                error = from_head_error(exc)
            except Exception as exc:  # noqa: BLE001 - logged (without user content), answered 500
                log.error("stream of request %s failed: %s", rlog.request_id,
                          describe_failure(exc))
                error = APIError(500, "internal server error", "server_error")
            if error is None and rlog.interrupted:
                # Shutdown: every choice got its last chunk; say why the stream ends here.
                error = shutting_down("the generation")
            if error is not None:
                rlog.error = _error_label(error)
                yield encode_error(error)
            if trailer:
                yield trailer
            _log_access(rlog, endpoint)

        response = Response(body(), mimetype=mimetype,
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                     **headers})
        response.timeout = None  # no response timeout on streams
        return response

    def sse_response(chunks: ChunkStream, rlog: RequestLog, headers: dict[str, str]) -> Response:
        """OpenAI's server-sent events: an error is one last ``data:`` event, then ``[DONE]``."""
        return _stream_response(chunks, rlog, headers, "text/event-stream", encode_events,
                                lambda e: encode_event(e.body().dump()), DONE)

    def ndjson_response(chunks: ChunkStream, rlog: RequestLog,
                        headers: dict[str, str]) -> Response:
        """A stream as NDJSON (Ollama): one JSON text per line; an error ends it with an
        ``{"error": "message"}`` line."""
        return _stream_response(
            chunks, rlog, headers, "application/x-ndjson",
            lambda texts: "".join(t + "\n" for t in texts).encode("utf-8"),
            lambda e: (json.dumps({"error": e.message}, ensure_ascii=False) + "\n").encode(),
            b"")

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

    @app.get("/api/tags")
    async def ollama_tags() -> Response:
        return _json_response(ollama.tags(service))

    @app.get("/api/version")
    async def ollama_version() -> Response:
        return _json_response(ollama.version())

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
            if isinstance(reply, ollama.NDJSONReply):
                return ndjson_response(reply.chunks, rlog, headers)
            if isinstance(reply, StreamReply):
                return sse_response(reply.chunks, rlog, headers)
            return _json_response(reply.body, headers=headers)

        return route

    for ep in (*ENDPOINTS.values(), *HTTP_ENDPOINTS.values()):
        app.add_url_rule(ep.path, ep.name.replace("/", "_"), _post_route(ep), methods=["POST"])

    # -- websocket ------------------------------------------------------------------------

    @app.before_websocket
    async def _before_ws() -> None:
        ws: Websocket = websocket
        rid = secrets.token_hex(8)
        g.rlog = RequestLog(rid, "WS", ws.path, ws.remote_addr or "?")
        try:
            g.identity = _guard(ws.path, "GET", ws.headers, ws.remote_addr)
        except APIError as err:
            abort(_error_response(err))

    async def _next_message() -> str | bytes | None:
        """The next message, or None once the server is shutting down (an idle socket is
        closed at once; a busy one after its request)."""
        if service.stopping.is_set():
            return None
        receive = asyncio.ensure_future(websocket.receive())
        stop = asyncio.ensure_future(service.stopping.wait())
        try:
            await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not receive.done():
                receive.cancel()
        if receive.done() and not receive.cancelled():
            return receive.result()
        return None

    async def _ws_request(raw: str | bytes, rlog: RequestLog) -> None:
        """Answer one message: its chunks or its response, or its error; never raises but
        for cancellation (the socket closed)."""
        try:
            if service.state == "shutting_down":
                raise shutting_down("the request")
            _rate_limit(g.identity)  # every message is a request
            body = _load_json(raw)
            name = str(body.pop("endpoint", ""))[:64].strip("/").removeprefix("v1/")
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
                if rlog.interrupted:
                    raise shutting_down("the generation")
            else:
                await websocket.send(json.dumps(reply.body))
            rlog.status = 200
            return
        except APIError as err:
            api = err
        except HeadError as herr:
            api = from_head_error(herr)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged (without user content), answered 500
            log.error("websocket request %s failed: %s", rlog.request_id,
                      describe_failure(exc))
            api = APIError(500, "internal server error", "server_error")
        rlog.status, rlog.error = api.status, _error_label(api)
        await websocket.send(json.dumps(api.body().dump()))

    @app.websocket("/v1/ws")
    @cors_exempt  # the Origin check is _guard's, for every upgrade
    async def ws_route() -> None:
        await websocket.accept()
        while True:
            raw = await _next_message()
            if raw is None:
                await websocket.close(1001, "server shutting down")
                return
            rlog = RequestLog(secrets.token_hex(8), "WS", "/v1/ws", websocket.remote_addr or "?")
            rlog.stream = True
            try:
                await _ws_request(raw, rlog)
            except asyncio.CancelledError:
                rlog.cancelled = True
                _log_access(rlog, "/v1/ws")
                raise
            await websocket.send(json.dumps({"done": True}))
            _log_access(rlog, "/v1/ws")

    return app
