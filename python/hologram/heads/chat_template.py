"""Chat-template rendering in a locked-down Jinja2 sandbox, in a worker process that is killed
when its budget is over.

GGUF files carry their chat template as a Jinja2 string (``tokenizer.chat_template``): untrusted
input. :mod:`hologram.heads.template_sandbox` holds the sandbox (what a template may touch, the
deadline and size checks); this module runs it in a pool of small worker processes (the
standard library and jinja2 only, an address-space limit of
:data:`~hologram.heads.template_sandbox.WORKER_MEMORY_BYTES`), one render at a time each. A
render that is not done when its time budget ends is not waited for: its worker is killed (a
fresh one takes its place), so a hostile template costs at most its budget, whatever it does.

Rendering is synchronous; callers that run an event loop must call :meth:`ChatTemplate.render`
from a worker thread.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hologram.heads import template_sandbox
from hologram.heads.base import TemplateError
from hologram.heads.template_sandbox import (
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_TIMEOUT_S,
    MAX_TEMPLATE_CHARS,
    SandboxError,
    render_sandboxed,
    uses_variable,
)

__all__ = ["CHATML_TEMPLATE", "GEMMA_TEMPLATE", "ChatTemplate", "fallback_template"]

log = logging.getLogger("hologram.heads")

#: Used when a model file has no ``tokenizer.chat_template``.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Gemma's turn format, for Gemma files that carry no template (as llama.cpp's built-in
#: "gemma" template: a system message is folded into the first user turn).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] in ['system', 'developer'] %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '')"
    " + (message['content'] | trim) + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def fallback_template(architecture: str) -> str:
    """The template used when a model file has none: the family's own turn format where it is
    known, else ChatML."""
    if architecture.startswith("gemma"):
        return GEMMA_TEMPLATE
    return CHATML_TEMPLATE


#: Extra time a worker gets past the template's own deadline before it is killed.
KILL_GRACE_S = 0.25
#: How long a new worker may take to start (Python and jinja2 imported), outside the budget.
START_TIMEOUT_S = 30.0


class _Worker:
    """One render process: JSON lines in and out over pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", template_sandbox.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._buf = b""
        if self._read_line(time.monotonic() + START_TIMEOUT_S) != b"ready":
            self.kill()
            raise OSError("the chat-template worker did not start")

    def _read_line(self, deadline: float) -> bytes | None:
        """The next line from the worker, or None at the deadline or its end of output."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def render(self, request: str, deadline: float) -> dict[str, str] | None:
        """The worker's reply, or None if it did not answer by ``deadline`` or died."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request.encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        line = self._read_line(deadline)
        if line is None:
            return None
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class _Pool:
    """Idle workers, reused; a busy or killed one is replaced by a new one when needed."""

    def __init__(self, max_idle: int = 4) -> None:
        self.max_idle = max_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._warming = False
        self.disabled = False

    def acquire(self) -> _Worker | None:
        """A worker, or None when workers cannot be started here (render in process)."""
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.alive():
                    return w
                w.kill()
            if self.disabled:
                return None
        try:
            return _Worker()
        except OSError as exc:
            with self._lock:
                if not self.disabled:
                    log.warning("chat templates render in process (no worker: %s)", exc)
                self.disabled = True
            return None

    def release(self, w: _Worker) -> None:
        with self._lock:
            if w.alive() and len(self._idle) < self.max_idle:
                self._idle.append(w)
                return
        w.kill()

    def warm(self) -> None:
        """Start a worker in the background (ahead of a render) unless one is idle or
        starting."""
        with self._lock:
            if self._idle or self._warming or self.disabled:
                return
            self._warming = True

        def start() -> None:
            try:
                w = self.acquire()
                if w is not None:
                    self.release(w)
            finally:
                with self._lock:
                    self._warming = False

        threading.Thread(target=start, name="hologram-template-warm", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


_POOL = _Pool()
atexit.register(_POOL.close)


class ChatTemplate:
    """A chat template. ``source`` None means the fallback (ChatML unless given)."""

    def __init__(
        self,
        source: str | None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        fallback: str = CHATML_TEMPLATE,
    ) -> None:
        self.is_fallback = not source
        self.source = source if source else fallback
        if len(self.source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(
                f"chat template is {len(self.source)} characters; the limit is {MAX_TEMPLATE_CHARS}"
            )
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        #: The template reads ``tools``: tool definitions are rendered by the template itself.
        self.uses_tools = uses_variable(self.source, "tools")
        if not self.is_fallback:
            _POOL.warm()

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Render ``messages`` (dicts with at least ``role`` and ``content``) to prompt text;
        ``tools`` (OpenAI-shaped tool definitions) becomes the template's ``tools`` variable.

        Raises TemplateError on any failure, including budget exhaustion (the render is
        stopped when the budget ends)."""
        msgs = [dict(m) for m in messages]
        worker = _POOL.acquire()
        if worker is None:
            try:
                return render_sandboxed(
                    self.source, msgs, bos_token=self.bos_token, eos_token=self.eos_token,
                    add_generation_prompt=add_generation_prompt, timeout_s=self.timeout_s,
                    max_output_chars=self.max_output_chars,
                    tools=None if tools is None else [dict(t) for t in tools])
            except SandboxError as exc:
                raise TemplateError(str(exc)) from None
        body: dict[str, Any] = {
            "source": self.source, "messages": msgs, "bos_token": self.bos_token,
            "eos_token": self.eos_token, "add_generation_prompt": add_generation_prompt,
            "timeout_s": self.timeout_s, "max_output_chars": self.max_output_chars,
        }
        if tools is not None:
            body["tools"] = [dict(t) for t in tools]
        request = json.dumps(body, default=str)
        reply = worker.render(request, time.monotonic() + self.timeout_s + KILL_GRACE_S)
        if reply is None:
            alive = worker.alive()
            worker.kill()
            _POOL.warm()  # a replacement, started outside the next render's budget
            if alive:
                raise TemplateError(
                    f"chat template rendering exceeded {self.timeout_s:g} s (stopped)")
            raise TemplateError("chat template exceeded its resource budget (worker ended)")
        _POOL.release(worker)
        if "error" in reply:
            raise TemplateError(reply["error"])
        return reply["text"]
