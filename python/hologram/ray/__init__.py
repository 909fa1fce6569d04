"""hologram on Ray Serve (the optional extra ``hologram[ray]``; nothing else imports Ray).

* ``hologram-serve --ray --replicas N ...`` (:func:`run`) starts Ray (or joins a cluster with
  ``--ray-address``), serves N replicas behind Ray Serve's HTTP proxy on ``--host``/``--port``
  and shuts it all down on SIGTERM/SIGINT.
* :func:`app_builder` is the application builder for Ray's own config files
  (``import_path: hologram.ray:app_builder``, see ``deploy/ray-serve.yaml``); its ``args`` are
  ``hologram-serve``'s long flags without the dashes (``model: [a.gguf, b.gguf]``,
  ``threads: 1``, ``replicas: 2``, ``ray_router: prefix``...).
* :func:`build_app` makes the application from settings.

The application has two deployments: ``hologram`` (the replicas, each a whole hologram server
running in-process) and ``ingress`` (what the proxy calls; it picks the replica per request,
see :mod:`hologram.ray.router`). Every response names its replica in ``X-Hologram-Replica``;
``GET /metrics`` answers every replica's metrics, each sample labelled ``replica="<id>"``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from hologram.server.settings import ServerSettings

__all__ = ["RayOptions", "app_builder", "build_app", "run"]

log = logging.getLogger("hologram.ray")

#: Name of the Serve application ``hologram-serve --ray`` runs.
APP_NAME = "hologram"
REPLICA_DEPLOYMENT = "hologram"
#: Object store of a local Ray instance: hologram passes only small messages through it.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024
#: Requests a replica may hold beyond --parallel + --max-queue (see build_app).
ONGOING_SLACK = 4


@dataclass
class RayOptions:
    replicas: int = 1
    address: str | None = None
    #: CPUs Ray reserves per replica (None: --threads, else 1).
    replica_cpus: float | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    router: str = "prefix"
    imbalance: int = 8

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RayOptions:
        return cls(replicas=args.replicas, address=args.ray_address,
                   replica_cpus=args.replica_cpus, min_replicas=args.min_replicas,
                   max_replicas=args.max_replicas,
                   target_ongoing_requests=args.target_ongoing_requests,
                   router=args.ray_router, imbalance=args.ray_imbalance)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None


def _prepare(settings: ServerSettings, options: RayOptions) -> float:
    """The CPUs per replica; gives the engine that many threads unless --threads says."""
    cpus = options.replica_cpus
    if cpus is None:
        cpus = float(settings.n_threads or 1)
    if settings.n_threads is None:
        settings.n_threads = max(1, int(cpus))
    return cpus


def build_app(settings: ServerSettings, options: RayOptions) -> Any:
    """The Ray Serve application (``serve.run`` it, or return it from a builder)."""
    from ray import serve

    from hologram.ray.deployments import HologramIngress, HologramReplica

    cpus = _prepare(settings, options)
    replica_options: dict[str, Any] = {
        "name": REPLICA_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": cpus},
        # hologram admits parallel + max_queue generations itself and answers 503 beyond (in
        # OpenAI's shape); the slack lets that 503, /health and /metrics through.
        "max_ongoing_requests": settings.parallel + settings.max_queue + ONGOING_SLACK,
        "max_queued_requests": -1,
        "graceful_shutdown_timeout_s": settings.shutdown_timeout,
        "graceful_shutdown_wait_loop_s": 0.5,
        "health_check_period_s": 10,
        "request_router_config": {
            "request_router_class": "hologram.ray.router.HologramRouter",
            "request_router_kwargs": {"mode": options.router, "imbalance": options.imbalance},
        },
    }
    if options.autoscaling:
        low = options.min_replicas if options.min_replicas is not None else 1
        high = options.max_replicas if options.max_replicas is not None else \
            max(low, options.replicas)
        replica_options["autoscaling_config"] = {
            "min_replicas": low, "max_replicas": high,
            "initial_replicas": min(max(options.replicas, low), high),
            "target_ongoing_requests": options.target_ongoing_requests or
            max(1, settings.parallel // 2),
        }
    else:
        replica_options["num_replicas"] = options.replicas
        if options.target_ongoing_requests is not None:
            log.warning("--target-ongoing-requests applies with --min-replicas/--max-replicas")
    replica = serve.deployment(**replica_options)(HologramReplica)
    ingress = serve.deployment(
        name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=100_000, graceful_shutdown_timeout_s=settings.shutdown_timeout,
        graceful_shutdown_wait_loop_s=0.5)(HologramIngress)
    expected = replica_options["autoscaling_config"]["initial_replicas"] \
        if options.autoscaling else options.replicas
    return ingress.bind(replica.bind(settings), REPLICA_DEPLOYMENT, settings.max_body_bytes,
                        expected)


def _parse(argv: list[str]) -> tuple[ServerSettings, RayOptions]:
    from hologram.server.cli import _settings_from_args, build_parser

    args = build_parser().parse_args(argv)
    return _settings_from_args(args), RayOptions.from_args(args)


def app_builder(args: dict[str, Any]) -> Any:
    """Application builder for Ray Serve config files: ``args`` holds hologram-serve's long
    flags without dashes (``-`` or ``_`` between words); a list repeats the flag, ``true``
    gives a bare flag. ``host``/``port`` of the proxy come from the file's ``http_options``."""
    argv: list[str] = []
    for key, value in (args or {}).items():
        flag = "--" + str(key).replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                argv.append(flag)
            elif item is not False and item is not None:
                argv += [flag, str(item)]
    settings, options = _parse(argv)
    return build_app(settings, options)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(settings: ServerSettings, options: RayOptions) -> int:
    """``hologram-serve --ray``: serve until SIGTERM/SIGINT, then drain and exit 0."""
    try:
        import ray
        from ray import serve
    except ImportError:
        print("hologram-serve: error: --ray needs Ray Serve: pip install 'hologram[ray]'",
              file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    if (options.min_replicas is not None and options.max_replicas is not None
            and options.min_replicas > options.max_replicas):
        print("hologram-serve: error: --min-replicas is above --max-replicas", file=sys.stderr,
              flush=True)
        return 2
    port = settings.port or _free_port(settings.host)
    settings.port = port
    try:  # Ray's proxy would only log a busy port; say it now, in one line
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((settings.host, port))
    except OSError as exc:
        print(f"hologram-serve: error: cannot listen on {settings.host}:{port}: "
              f"{exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    local = options.address is None
    try:
        app = build_app(settings, options)
        if local:
            needed = _prepare(settings, options) * max(options.replicas,
                                                       options.max_replicas or 0)
            ray.init(num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)),
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=options.address, logging_level=logging.WARNING)
        # After ray.init, whose own SIGTERM handler would end the process at once.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        serve.start(http_options={"host": settings.host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
    except Exception as exc:  # noqa: BLE001 - a start-up failure is one line and exit 1
        print(f"hologram-serve: error: Ray Serve did not start: {exc}", file=sys.stderr,
              flush=True)
        _stop(local)
        return 1
    log.info("listening on http://%s:%s (Ray Serve, %s replicas, %s routing)", settings.host,
             port, "auto" if options.autoscaling else options.replicas, options.router)
    while not stop.wait(0.5):
        pass
    log.info("shutting down: finishing in-flight requests (up to %.0f s)",
             settings.shutdown_timeout)
    t0 = time.monotonic()
    _drain(serve, settings.shutdown_timeout)
    _stop(local)
    log.info("stopped in %.1f s", time.monotonic() - t0)
    return 0


def _drain(serve: Any, timeout: float) -> None:
    """As the single server on SIGTERM: new requests get 503, what runs may finish (streams
    still running shortly before ``timeout`` end cleanly), then the deployments go."""
    deadline = time.monotonic() + timeout
    try:
        ingress = serve.get_app_handle(APP_NAME)
        told = ingress.begin_shutdown.remote(timeout).result(timeout_s=10)
        log.info("draining %d replicas", told)
        while time.monotonic() < deadline:
            if ingress.requests_in_flight.remote().result(timeout_s=5) == 0:
                break
            time.sleep(0.2)
    except Exception as exc:  # noqa: BLE001 - shutting down anyway
        log.warning("draining: %s", exc)


def _stop(local: bool) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        if local:
            serve.shutdown()  # type: ignore[no-untyped-call]
        else:
            serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 - shutting down anyway
        log.warning("stopping Ray Serve: %s", exc)
    ray.shutdown()
