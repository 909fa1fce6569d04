"""Prometheus metrics, in a registry owned by one app (so several apps can share a process)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.started = time.time()
        self.requests = Counter(
            "hologram_requests", "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"], registry=r,
        )
        self.prompt_tokens = Counter(
            "hologram_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "hologram_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.ttft = Histogram(
            "hologram_time_to_first_token_seconds",
            "Time from request arrival to the first generated token",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.itl = Histogram(
            "hologram_inter_token_latency_seconds", "Time between consecutive generated tokens",
            ["model"], buckets=_ITL_BUCKETS, registry=r,
        )
        self.queue_time = Histogram(
            "hologram_queue_time_seconds", "Time a request waited for a generation slot",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.e2e = Histogram(
            "hologram_request_duration_seconds", "Request latency, arrival to last byte",
            ["endpoint"], buckets=_E2E_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "hologram_queue_depth", "Requests waiting for a generation slot", ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "hologram_requests_in_flight", "Generations currently holding a slot", ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "hologram_rejected_requests", "Requests refused for capacity (reason: queue_full, "
            "rate_limited, shutting_down)", ["reason"], registry=r,
        )
        self.cancelled = Counter(
            "hologram_cancelled_requests", "Generations stopped because the client went away",
            ["model"], registry=r,
        )
        uptime = Gauge("hologram_uptime_seconds", "Seconds since the server started", registry=r)
        uptime.set_function(lambda: time.time() - self.started)
        ProcessCollector(registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
