"""Prometheus metrics, in a registry owned by one app (so several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

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
        self.e2e = Histogram(
            "hologram_request_duration_seconds", "Request latency, arrival to last byte",
            ["endpoint"], buckets=_E2E_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "hologram_requests_in_flight",
            "Requests accepted and not finished (running in the engine or queued for it)",
            ["model"], registry=r,
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
        #: Set by the service: the engine threads' stats per model, read at scrape time.
        self.engine_stats: Callable[[], dict[str, dict[str, Any]]] = dict
        r.register(_EngineCollector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    """The engine processor's gauges and counters, read from each model's engine at scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self._metrics.engine_stats()
        gauges = {
            "hologram_sequences_running": ("Sequences the engine is running (holding KV blocks)",
                                           "running"),
            "hologram_queue_depth": ("Sequences waiting in the engine's queue (new or preempted)",
                                     "waiting"),
            "hologram_kv_blocks_free": ("Free blocks of the KV cache pool", "kv_blocks_free"),
            "hologram_kv_blocks_total": ("Blocks of the KV cache pool", "kv_blocks_total"),
            "hologram_kv_blocks_cached": ("Unused KV blocks kept for prefix reuse",
                                          "kv_blocks_cached"),
        }
        for name, (doc, key) in gauges.items():
            g = GaugeMetricFamily(name, doc, labels=["model"])
            for mid, st in stats.items():
                g.add_metric([mid], float(st[key]))
            yield g
        used = GaugeMetricFamily("hologram_kv_blocks_used", "Used blocks of the KV cache pool",
                                 labels=["model"])
        for mid, st in stats.items():
            used.add_metric([mid], float(st["kv_blocks_total"] - st["kv_blocks_free"]))
        yield used
        counters = {
            "hologram_preemptions": ("Sequences preempted for KV memory (recomputed later)",
                                     "preemptions"),
            "hologram_engine_steps": ("Forward passes of the engine loop", "steps"),
            "hologram_prompt_rows": ("Prompt tokens evaluated (recomputation included)",
                                     "prompt_rows"),
            "hologram_decode_rows": ("Decode rows evaluated", "decode_rows"),
            "hologram_prefix_cache_hit_tokens": ("Prompt tokens served from the prefix cache",
                                                 "prefix_hit_tokens"),
        }
        for name, (doc, key) in counters.items():
            c = CounterMetricFamily(name, doc, labels=["model"])
            for mid, st in stats.items():
                c.add_metric([mid], float(st[key]))
            yield c
        h = HistogramMetricFamily("hologram_batch_rows", "Rows (tokens) per engine step",
                                  labels=["model"])
        for mid, st in stats.items():
            acc = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(st["batch_buckets"], st["batch_hist"], strict=False):
                acc += n
                buckets.append((str(float(bound)), acc))
            acc += st["batch_hist"][-1]
            buckets.append(("+Inf", acc))
            h.add_metric([mid], buckets, float(st["prompt_rows"] + st["decode_rows"]))
        yield h
