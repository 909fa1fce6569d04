"""``hologram-serve``: serve GGUF models over an OpenAI-compatible HTTP API.

Start-up failures (missing model file, unreadable GGUF, port in use) print one line to stderr
and exit non-zero. SIGTERM/SIGINT stop accepting connections and close idle WebSockets, let
in-flight requests finish, stop what still runs shortly before ``--shutdown-timeout`` seconds
(each stream ends with its last chunks, an error event and its end marker), and exit 0.
With ``--ray`` the same settings go to :mod:`hologram.ray` (replicas on Ray Serve).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import wrap_app

from hologram.heads import default_model_paths
from hologram.models import default_embedding_model_path, default_model_path
from hologram.server.app import create_app
from hologram.server.metrics import Metrics
from hologram.server.service import Service
from hologram.server.settings import (
    COMPLETION_ALIAS,
    EMBEDDING_ALIAS,
    ModelSpec,
    ServerSettings,
    model_ids,
)

__all__ = ["build_parser", "main"]

PROG = "hologram-serve"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class _Ordered(argparse.Action):
    """-m and --alias in command-line order, as ("model" | "alias", value) pairs: an alias
    belongs to the -m before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        entries = list(getattr(namespace, self.dest, None) or [])
        kind = "model" if option_string in ("-m", "--model") else "alias"
        entries.append((kind, str(values)))
        setattr(namespace, self.dest, entries)


def _ranged(kind: type[float | int], low: float, high: float, *,
            low_open: bool = False) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if math.isnan(value) or value > high or value < low or (low_open and value == low):
            shown = f"({low}" if low_open else f"[{low}"
            raise argparse.ArgumentTypeError(f"must be in {shown}, {high}], got {text}")
        return value
    return parse


def model_specs(entries: list[tuple[str, str]]) -> list[ModelSpec]:
    """The models of the command line's -m/--alias pairs (the default models without -m).
    The default chat and embedding models get their hologram-*-v1 ids too."""
    paths = [Path(v) for k, v in entries if k == "model"] or default_model_paths()
    aliases: list[list[str]] = [[] for _ in paths]
    current = 0
    seen_model = False
    for kind, value in entries:
        if kind == "model":
            current = current + 1 if seen_model else 0
            seen_model = True
        elif value.strip():
            aliases[current].append(value.strip())
    builtin: dict[Path, str] = {}
    with contextlib.suppress(OSError):
        builtin[default_model_path().resolve()] = COMPLETION_ALIAS
    with contextlib.suppress(OSError):
        emb = default_embedding_model_path()
        if emb is not None:
            builtin[emb.resolve()] = EMBEDDING_ALIAS
    specs = []
    for path, names in zip(paths, aliases, strict=True):
        extra = [builtin[path.resolve()]] if path.resolve() in builtin else []
        specs.append(ModelSpec(path, names[0] if names else None, (*names[1:], *extra)))
    return specs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve GGUF models with an OpenAI-compatible API (/v1/completions, "
        "/v1/chat/completions, /v1/embeddings, /v1/models, /health, /metrics, /v1/ws).",
    )
    p.add_argument("-m", "--model", action=_Ordered, metavar="PATH", dest="entries",
                   help="GGUF model file to serve; repeat to serve several. Default: the "
                   "default chat model (SmolLM2-135M-Instruct), plus the default embedding "
                   "model when one is installed. A model answers to its file name without "
                   ".gguf; the default chat and embedding models (by default or named with "
                   f"-m) also to {COMPLETION_ALIAS} and {EMBEDDING_ALIAS}.")
    p.add_argument("--alias", action=_Ordered, metavar="NAME", dest="entries",
                   help="another id for the model of the -m before it on the command line "
                   "(the first model when no -m precedes it); repeatable, several per model. "
                   "A model's first alias is its public id (the one responses name); its "
                   "other ids stay valid and are listed in /v1/models too.")
    p.add_argument("--chat-template", metavar="FILE", default=None,
                   help="Jinja2 chat template file used instead of the model's own (for every "
                   "chat model); a template that uses `tools` renders tool definitions itself.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1). Binding to another address "
                   "without --api-key prints a warning.")
    p.add_argument("--port", type=_non_negative, default=8000,
                   help="TCP port (default 8000; 0 picks a free port)")
    p.add_argument("--ctx", type=_positive, default=2048, metavar="N",
                   help="context window per model in tokens (default 2048)")
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="compute threads per model (default: the engine's choice)")
    p.add_argument("--parallel", type=_positive, default=16, metavar="N",
                   help="most sequences the engine runs at once per model, all batched "
                   "together in each step (default 16); more requests wait in its queue")
    p.add_argument("--kv-tokens", type=_positive, default=None, metavar="N",
                   help="size of each model's KV cache in tokens, shared by all its sequences "
                   "in blocks of 32 (default: ctx x min(parallel, 4), at least one ctx); when "
                   "it runs out the newest sequence is paused and recomputed later")
    p.add_argument("--step-tokens", type=_positive, default=128, metavar="N",
                   help="most tokens the engine processes in one step (decode rows plus "
                   "prompt chunks; default 128): lower keeps streams smoother while long "
                   "prompts are read, higher reads prompts a little faster")
    p.add_argument("--max-request-tokens", type=_positive, default=65536, metavar="N",
                   help="refuse (400) a request whose worst case costs more tokens: "
                   "(prompt + max_tokens) x n over its prompts, or all embedding input "
                   "tokens (default 65536)")
    p.add_argument("--sse-keepalive", type=float, default=5.0, metavar="SECONDS",
                   help="send an SSE comment (': keep-alive') this often while a stream "
                   "waits for its first token (default 5)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (or X-Api-Key) on every route "
                   "but /health; comma-separate several keys. Default: $HOLOGRAM_API_KEY.")
    p.add_argument("--rate-limit", type=_positive, default=None, metavar="N",
                   help="at most N requests per minute per API key (or per client address "
                   "without a key); every HTTP request, WebSocket upgrade and WebSocket "
                   "message counts, and so does a failed authentication (against its "
                   "address); excess requests get 429 with Retry-After. Default: off.")
    p.add_argument("--allowed-hosts", action="append", metavar="NAMES", default=None,
                   help="comma-separated Host names the server answers to besides "
                   "localhost, 127.0.0.1, [::1] and the --host address (a leading dot allows "
                   "subdomains, '*' any); other Hosts get 400 (DNS rebinding). Bound to "
                   "0.0.0.0 or :: without this flag, any Host is accepted.")
    p.add_argument("--allowed-origins", action="append", metavar="ORIGINS", default=None,
                   help="comma-separated browser origins (scheme://host[:port], or '*') "
                   "whose pages may call the server (CORS headers for those); a request "
                   "from any other page's Origin gets 403. Default: none, only the server's "
                   "own origin.")
    p.add_argument("--max-queue", type=_non_negative, default=64, metavar="N",
                   help="requests accepted per model beyond --parallel, waiting for the "
                   "engine (default 64); beyond that the server answers 503")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long in-flight requests may take to finish "
                   "(default 30); what still runs a second before (a quarter of it when "
                   "shorter) is stopped: each stream gets its last chunks, an error event "
                   "and its end ([DONE], {\"done\": true}), and the process exits")
    g = p.add_argument_group(
        "sampling defaults",
        "values for requests that leave them unset (and the Ollama routes' options), over "
        "each model file's general.sampling.* keys, over llama.cpp's defaults (temperature "
        "0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0, repeat_last_n 64); "
        "GET /v1/models/{id} reports those in force")
    g.add_argument("--temp", type=_ranged(float, 0.0, 2.0), default=None, metavar="T",
                   help="temperature (0 = greedy)")
    g.add_argument("--top-p", type=_ranged(float, 0.0, 1.0), default=None, metavar="P",
                   help="nucleus sampling mass (1 = off)")
    g.add_argument("--top-k", type=_ranged(int, 0, 2**31 - 1), default=None, metavar="K",
                   help="keep the K most likely tokens (0 = off)")
    g.add_argument("--min-p", type=_ranged(float, 0.0, 1.0), default=None, metavar="P",
                   help="drop tokens less likely than P x the most likely (0 = off)")
    g.add_argument("--repeat-penalty", type=_ranged(float, 0.0, 10.0, low_open=True),
                   default=None, metavar="X", help="repeat penalty (1 = off)")
    g.add_argument("--repeat-last-n", type=_ranged(int, 0, 2**31 - 1), default=None,
                   metavar="N", help="tokens the penalties look back over (0 = off)")
    g.add_argument("--seed", type=_ranged(int, 0, 2**64 - 1), default=None, metavar="N",
                   help="seed of requests that give none (choice j of n gets N + j); "
                   "default: a random seed per request")
    r = p.add_argument_group(
        "Ray Serve",
        "serve the same API from several replicas behind Ray Serve's HTTP proxy (needs the "
        "extra: pip install 'hologram[ray]'); every response names its replica in "
        "X-Hologram-Replica")
    r.add_argument("--ray", action="store_true",
                   help="run on Ray Serve: a local Ray instance (stopped on exit) unless "
                   "--ray-address names a cluster")
    r.add_argument("--replicas", type=_positive, default=1, metavar="N",
                   help="replicas, each a whole server with every model (default 1)")
    r.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster ('auto', or HEAD:6379) instead of starting one")
    r.add_argument("--replica-cpus", type=_ranged(float, 0.0, 1024.0, low_open=True),
                   default=None, metavar="C",
                   help="CPUs Ray reserves per replica (default: --threads, else 1; without "
                   "--threads the engine gets this many threads)")
    r.add_argument("--min-replicas", type=_non_negative, default=None, metavar="N",
                   help="autoscale: fewest replicas (turns autoscaling on)")
    r.add_argument("--max-replicas", type=_positive, default=None, metavar="N",
                   help="autoscale: most replicas (turns autoscaling on)")
    r.add_argument("--target-ongoing-requests", type=_ranged(float, 0.0, 1e6, low_open=True),
                   default=None, metavar="N",
                   help="autoscale: in-flight requests per replica to aim for (default "
                   "--parallel / 2)")
    r.add_argument("--ray-router", choices=["prefix", "pow2"], default="prefix",
                   help="replica choice: 'prefix' sends requests that share a long prefix "
                   "to the replica that served it (unless it is much busier), 'pow2' is Ray "
                   "Serve's power of two choices (default prefix)")
    r.add_argument("--ray-imbalance", type=_non_negative, default=8, metavar="N",
                   help="prefix routing: requests in flight a prefix's replica may have beyond "
                   "the least busy one before a request goes elsewhere (default 8)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="logging level (default info); one JSON access line per request at info")
    return p


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return code


def _settings_from_args(args: argparse.Namespace) -> ServerSettings:
    specs = model_specs(list(args.entries or []))
    sampling = {name: value for name, value in (
        ("temperature", args.temp), ("top_p", args.top_p), ("top_k", args.top_k),
        ("min_p", args.min_p), ("repeat_penalty", args.repeat_penalty),
        ("repeat_last_n", args.repeat_last_n), ("seed", args.seed)) if value is not None}
    key_text = args.api_key if args.api_key is not None else os.environ.get("HOLOGRAM_API_KEY")
    keys = [k.strip() for k in (key_text or "").split(",") if k.strip()]

    chat_template = None
    if args.chat_template is not None:
        chat_template = Path(args.chat_template).read_text(encoding="utf-8")

    def names(values: list[str] | None) -> list[str]:
        return [v.strip() for text in values or [] for v in text.split(",") if v.strip()]

    return ServerSettings(
        models=specs, host=args.host, port=args.port, n_ctx=args.ctx, n_threads=args.threads,
        parallel=args.parallel, kv_tokens=args.kv_tokens, step_tokens=args.step_tokens,
        api_keys=keys, rate_limit=args.rate_limit,
        allowed_hosts=names(args.allowed_hosts), allowed_origins=names(args.allowed_origins),
        max_queue=args.max_queue, shutdown_timeout=args.shutdown_timeout,
        max_request_tokens=args.max_request_tokens, sse_keepalive_s=args.sse_keepalive,
        sampling=sampling,
        chat_template=chat_template,
    )


async def _serve(settings: ServerSettings, config: Config, sockets: object) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0

    def on_signal() -> None:
        log = logging.getLogger("hologram.server")
        if not stop.is_set():
            log.info("shutting down: finishing in-flight requests (up to %.0f s)",
                     settings.shutdown_timeout)
        service.begin_shutdown(settings.shutdown_timeout)
        stop.set()

    def on_fatal(message: str) -> None:
        nonlocal exit_code
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        exit_code = 1
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    service = Service(settings, Metrics())
    service.on_fatal = on_fatal
    app = create_app(settings, service)
    await worker_serve(wrap_app(app, config.wsgi_max_body_size, "asgi"), config,
                       sockets=sockets,  # type: ignore[arg-type]
                       shutdown_trigger=stop.wait)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.ray:
        given = [flag for flag, value, default in (
            ("--replicas", args.replicas, 1), ("--ray-address", args.ray_address, None),
            ("--replica-cpus", args.replica_cpus, None),
            ("--min-replicas", args.min_replicas, None),
            ("--max-replicas", args.max_replicas, None),
            ("--target-ongoing-requests", args.target_ongoing_requests, None),
            ("--ray-router", args.ray_router, "prefix"),
            ("--ray-imbalance", args.ray_imbalance, 8)) if value != default]
        if given:
            return _fail(f"{', '.join(given)} need --ray", 2)
    try:
        settings = _settings_from_args(args)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), 2)
    for spec in settings.models:
        if not spec.path.is_file():
            return _fail(f"model file not found: {spec.path}", 2)
    try:
        model_ids(settings.models)
    except ValueError as exc:
        return _fail(str(exc), 2)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logging.getLogger("hologram.server").warning(
            "binding to %s without --api-key: anyone who can reach this address can use the "
            "server", settings.host)

    if args.ray:
        from hologram.ray import RayOptions, run

        return run(settings, RayOptions.from_args(args))

    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_timeout
    config.accesslog = None
    hypercorn_log = logging.getLogger("hypercorn.error")
    if args.log_level != "debug":
        hypercorn_log.setLevel(logging.WARNING)
    config.errorlog = hypercorn_log
    config.keep_alive_timeout = 5
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {reason}")
    for sock in sockets.insecure_sockets:
        addr = sock.getsockname()
        logging.getLogger("hologram.server").info(
            "listening on http://%s:%s", settings.host, addr[1])
    try:
        return asyncio.run(_serve(settings, config, sockets))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
