"""Request admission on the Python side: a queue-depth limit and rate limiting.

Scheduling proper (which sequences run, batching, KV memory, preemption) is the engine's
processor, in Rust. Here:

* :class:`QueueLimit` -- per model, at most ``limit`` requests in flight (running in the engine
  or waiting for it); beyond that a request is refused at once (503) instead of queueing.
* :class:`RateLimiter` -- sliding one-minute window per API key or client address (429).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

__all__ = ["QueueFull", "QueueLimit", "RateLimiter"]


class QueueFull(Exception):
    """The model already has as many requests in flight as it accepts."""


class QueueLimit:
    """Counts a model's requests in flight; :meth:`enter` refuses past ``limit``."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = max(1, limit)
        self.in_flight = 0
        self._on_change = on_change

    def would_overflow(self) -> bool:
        """True if a request arriving now would be refused."""
        return self.in_flight >= self.limit

    def enter(self) -> None:
        if self.would_overflow():
            raise QueueFull()
        self.in_flight += 1
        if self._on_change is not None:
            self._on_change(self.in_flight)

    def leave(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if self._on_change is not None:
            self._on_change(self.in_flight)


class RateLimiter:
    """At most ``per_minute`` requests per identity in any 60 s window."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._hits: dict[str, collections.deque[float]] = {}

    def check(self, identity: str) -> float | None:
        """Record a hit; None if allowed, else the seconds until one is allowed again."""
        now = time.monotonic()
        hits = self._hits.setdefault(identity, collections.deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(0.0, hits[0] + self.window_s - now)
        hits.append(now)
        if len(self._hits) > 10_000:  # forget idle identities
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window_s]:
                del self._hits[key]
        return None

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
