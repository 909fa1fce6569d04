"""Admission control, rate limiting, and the bridge from blocking head calls to asyncio.

* :class:`Admission` -- per model, ``slots`` generations run at once (the engine's
  ``n_seq_max``); later requests wait in a FIFO queue of at most ``max_queue``; beyond that they
  are refused (503). A slot is released only when its worker thread has finished and freed the
  sequence's KV blocks, never merely because the HTTP handler went away.
* :class:`RateLimiter` -- sliding one-minute window per API key or client address (429).
* :func:`run_in_thread_events` -- run a blocking producer in a worker thread, receive its events
  on the loop; cancelling the consumer sets a ``threading.Event`` the producer polls between
  tokens.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from typing import Any

__all__ = ["END", "Admission", "QueueFull", "RateLimiter", "Ticket", "run_in_thread_events"]


class QueueFull(Exception):
    """No slot free and the wait queue is full."""


class Ticket:
    """A held generation slot; :meth:`release` is idempotent and must run on the loop."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release()


class Admission:
    def __init__(
        self,
        slots: int,
        max_queue: int,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[Ticket]] = collections.deque()
        self._on_change = on_change

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.running, self.waiting)

    def would_queue_overflow(self) -> bool:
        """True if a request arriving now would be refused."""
        return self.running >= self.slots and self.waiting >= self.max_queue

    async def acquire(self) -> Ticket:
        """Wait (FIFO) for a slot. Raises QueueFull at once when the queue is full."""
        if self.running < self.slots and not self._waiters:
            self.running += 1
            self._changed()
            return Ticket(self)
        if self.waiting >= self.max_queue:
            raise QueueFull()
        fut: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._changed()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                fut.result().release()  # granted just as we were cancelled: hand it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
                self._changed()
            raise

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(Ticket(self))  # the slot passes straight to the next waiter
                self._changed()
                return
        self.running -= 1
        self._changed()


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


END: Any = object()


async def run_in_thread_events(
    executor: Executor,
    producer: Callable[[Callable[[Any], None], threading.Event], None],
    on_done: Callable[[], None],
) -> AsyncGenerator[Any, None]:
    """Run ``producer(emit, cancel)`` in ``executor`` and yield what it emits, in order.

    When the consumer stops early (cancelled, closed) ``cancel`` is set; the producer must poll
    it. ``on_done`` runs on the loop once the producer has returned, however it ended.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def emit(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # loop closed: the consumer is gone
            cancel.set()

    def work() -> None:
        try:
            producer(emit, cancel)
        finally:
            emit(END)

    def done(_: object) -> None:
        try:
            loop.call_soon_threadsafe(on_done)
        except RuntimeError:
            pass

    future = loop.run_in_executor(executor, work)
    future.add_done_callback(done)
    try:
        while True:
            item = await queue.get()
            if item is END:
                return
            yield item
    finally:
        cancel.set()
