"""Reading the engine's generations from the event loop without blocking it.

A decoder model's engine thread (Rust) batches every running generation and fills each
stream's inbox; it never waits for Python. Its ``notify_fd`` becomes readable when some stream
has news: :class:`StreamHub` watches that fd with ``loop.add_reader`` and wakes the coroutines
reading those streams, which then take what arrived with ``poll_deltas`` (no thread per
request, no GIL taken by the engine thread). The reading loop itself is
:func:`hologram.server.generation.generate`.

:func:`run_blocking` runs blocking work (encoder embeddings) in an executor with a cancel flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Protocol, TypeVar

__all__ = ["StreamHub", "run_blocking"]

T = TypeVar("T")


class Notifier(Protocol):
    """What the hub needs of an engine (a ``CompletionHead`` provides it)."""

    @property
    def notify_fd(self) -> int | None: ...
    def take_ready(self) -> list[int]: ...


class StreamHub:
    """Wakes the readers of one engine's streams when its engine thread reports new steps."""

    def __init__(self, engine: Notifier) -> None:
        self._engine = engine
        self._waiters: dict[int, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self._engine.notify_fd
        if fd is None or self._fd is not None:
            return
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_ready)
        self._loop, self._fd = loop, fd

    def detach(self) -> None:
        if self._loop is not None and self._fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._loop = self._fd = None

    def _on_ready(self) -> None:
        # Drain the pipe first, then take the ids: an id reported after take_ready writes a
        # new byte, so nothing is missed.
        if self._fd is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.read(self._fd, 4096)
        for sid in self._engine.take_ready():
            ev = self._waiters.get(sid)
            if ev is not None:
                ev.set()

    def watch(self, stream_ids: Iterable[int], wake: asyncio.Event | None = None) -> asyncio.Event:
        """An event (``wake``, or a new one) set whenever one of these streams has news;
        ``unwatch`` them when done. The reader clears it, polls every stream, and waits on it
        only if none had news (an id reported after the poll sets it again, so nothing is
        missed)."""
        wake = wake or asyncio.Event()
        for sid in stream_ids:
            self._waiters[sid] = wake
        return wake

    def unwatch(self, stream_ids: Iterable[int]) -> None:
        for sid in stream_ids:
            self._waiters.pop(sid, None)


async def run_blocking(
    executor: Executor, fn: Callable[[threading.Event], T],
    cancel: threading.Event | None = None,
) -> T:
    """Run ``fn(cancel)`` in ``executor``; if the awaiting task is cancelled, set ``cancel``
    (``fn`` checks it between units of work) and wait for ``fn`` to return before
    re-raising, so the work never outlives its request. The caller may pass ``cancel`` to
    set it for other reasons too."""
    cancel = cancel or threading.Event()
    fut = asyncio.get_running_loop().run_in_executor(executor, fn, cancel)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(BaseException):
            await fut
        raise

