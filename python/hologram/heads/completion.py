"""Completion head: prompt text, token ids or chat messages in; text or a stream of deltas out.

Generations run on the model's engine thread, which batches all of them: starting one only
queues it. A :class:`CompletionStream` is read by blocking (``next_delta``, from any thread) or
by polling (``poll_deltas``, for event loops woken by the engine's notify fd), and may be closed
from any thread.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hologram import _core
from hologram.heads.base import (
    ContextLengthError,
    InvalidInputError,
    translate_engine_error,
)
from hologram.heads.chat_template import ChatTemplate, fallback_template
from hologram.heads.tools import ToolCall, fallback_messages, template_tool_calls, tool_format
from hologram.sampling import SamplingDefaults, SamplingParams

__all__ = [
    "ChatMessage",
    "Completion",
    "CompletionHead",
    "CompletionStream",
    "Delta",
    "Prompt",
    "SamplingParams",
    "TokenInfo",
    "TopToken",
]

#: Characters per context token beyond which a text prompt is refused before tokenizing.
MAX_CHARS_PER_CTX_TOKEN = 256
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class TopToken:
    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenInfo:
    """One token with, when asked for, its log-probability and the top alternatives."""

    id: int
    token: str
    bytes: bytes
    logprob: float | None
    top: tuple[TopToken, ...] = ()


@dataclass(frozen=True)
class Delta:
    """What one decode step releases: ``text`` may be "" (held back) and ``token`` is the
    sampled token. The step that ends a generation only to flush held-back text (a partial
    stop string, an incomplete UTF-8 character) has ``token`` None: it is no generated token
    and has no logprobs entry."""

    text: str
    token: TokenInfo | None


@dataclass(frozen=True)
class Prompt:
    """A tokenized prompt. ``text`` is the prompt as text (for ``echo``)."""

    ids: list[int]
    text: str


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn. An assistant turn may carry the ``tool_calls`` it made; a ``tool`` turn
    is the result of the call ``tool_call_id``."""

    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tokens: list[TokenInfo] = field(default_factory=list)


def _escape_all(value: Any, escape: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with ``escape`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(k) if isinstance(k, str) else k: _escape_all(v, escape)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_all(v, escape) for v in value]
    return value


def _token_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class CompletionStream:
    """A generation running on the model's engine thread (batched with every other one).

    Blocking readers call :meth:`next_delta`; event loops call :meth:`poll_deltas` when the
    engine's notify fd says the stream (:attr:`id`) has news. :meth:`close` may be called from
    any thread at any time: the generation is cancelled and its KV blocks are freed at the
    engine's next step.
    """

    def __init__(self, raw: _core.Stream, prompt_tokens: int, want_logprobs: bool) -> None:
        self._raw = raw
        self._want_logprobs = want_logprobs
        self.prompt_tokens = prompt_tokens

    @property
    def id(self) -> int:
        return int(self._raw.id)

    @property
    def completion_tokens(self) -> int:
        return int(self._raw.completion_tokens)

    @property
    def finish_reason(self) -> str | None:
        return self._raw.finish_reason

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the engine's prefix cache (known once finished)."""
        return int(self._raw.cached_tokens)

    @property
    def done(self) -> bool:
        """The generation has ended (or was closed) and every delta has been read."""
        return bool(self._raw.done)

    def next_delta(self) -> Delta | None:
        """Wait for the next token. None once the generation has finished or was closed."""
        try:
            step = self._raw.next_step()
        except _core.HologramError as exc:
            raise translate_engine_error(exc) from None
        if step is None:
            return None
        return Delta(text=step.text, token=None if step.flush else self._token_info(step))

    def poll_deltas(self) -> list[Delta]:
        """The deltas that have arrived, without waiting (possibly none)."""
        try:
            steps = self._raw.poll()
        except _core.HologramError as exc:
            raise translate_engine_error(exc) from None
        return [Delta(text=s.text, token=None if s.flush else self._token_info(s))
                for s in steps]

    def _token_info(self, step: _core.Step) -> TokenInfo:
        data = bytes(step.token_bytes)
        top: tuple[TopToken, ...] = ()
        if self._want_logprobs:
            top = tuple(
                TopToken(token=t.text, bytes=bytes(t.bytes), logprob=float(t.logprob))
                for t in step.top_logprobs
            )
        logprob = None if step.logprob is None else float(step.logprob)
        return TokenInfo(id=int(step.token), token=_token_text(data), bytes=data,
                         logprob=logprob, top=top)

    def __iter__(self) -> Iterator[Delta]:
        while True:
            delta = self.next_delta()
            if delta is None:
                return
            yield delta

    def close(self) -> None:
        """Stop the generation (its KV blocks are freed at the next step). Idempotent."""
        self._raw.close()

    def __enter__(self) -> CompletionStream:  # noqa: PYI034
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


class CompletionHead:
    """Text and chat completion over one :class:`hologram.Engine`."""

    def __init__(self, engine: _core.Engine, template_timeout_s: float = 2.0,
                 sampling_flags: Mapping[str, float | int | None] | None = None,
                 chat_template: str | None = None) -> None:
        """``chat_template`` (Jinja2 source) replaces the model file's template."""
        self.engine = engine
        #: Values requests leave unset: the flags, else the file's, else llama.cpp's.
        self.defaults = SamplingDefaults.resolve(engine, sampling_flags)
        #: The chat template was given (``chat_template``), not the model file's.
        self.template_override = bool(chat_template)
        self.n_ctx = int(engine.n_ctx)
        self.n_vocab = int(engine.n_vocab)
        #: The beginning-of-sequence token, if the model has one.
        self.bos_id: int | None = engine.bos_id
        self.template = ChatTemplate(
            chat_template or engine.chat_template,
            bos_token=engine.bos_token,
            eos_token=engine.eos_token,
            timeout_s=template_timeout_s,
            fallback=fallback_template(str(engine.architecture)),
        )
        #: How tools reach the model: ``template`` (its chat template renders ``tools``) or
        #: ``fallback`` (hologram's system-prompt section, see :mod:`hologram.heads.tools`).
        self.tool_prompt = "template" if self.template.uses_tools else "fallback"
        #: The tool-call format the model writes (``hermes``, ``llama3``, ``mistral``).
        self.tool_format = (tool_format(self.template.source) if self.template.uses_tools
                            else "hermes")

    # -- engine thread -----------------------------------------------------------------------

    @property
    def notify_fd(self) -> int | None:
        """Readable when some stream of this engine has new deltas (see ``take_ready``)."""
        return self.engine.notify_fd

    def take_ready(self) -> list[int]:
        """Ids of the streams with new deltas since the last call."""
        return list(self.engine.take_ready())

    def engine_stats(self) -> dict[str, Any]:
        """The engine thread's gauges and counters (``_core.Engine.stats``)."""
        return dict(self.engine.stats())

    # -- prompts ---------------------------------------------------------------------------

    def check_token_ids(self, ids: Sequence[int], param: str = "prompt") -> list[int]:
        out: list[int] = []
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.n_vocab:
                raise InvalidInputError(
                    f"token id {t!r} is not in the vocabulary (0..{self.n_vocab - 1})",
                    param,
                    "invalid_token",
                )
            out.append(int(t))
        return out

    def _check_text_length(self, text: str, param: str) -> None:
        limit = self.n_ctx * MAX_CHARS_PER_CTX_TOKEN
        if len(text) > limit:
            raise ContextLengthError(
                f"This model's maximum context length is {self.n_ctx} tokens; the {param} is "
                f"{len(text)} characters, far more than can fit.",
                param,
            )

    def encode_prompt(
        self, prompt: str | Sequence[int], param: str = "prompt", parse_special: bool = False
    ) -> Prompt:
        """Tokenize a text prompt (BOS added as the model asks; control-token text such as
        ``<|im_start|>`` becomes those tokens only with ``parse_special``), or validate a
        token-id prompt."""
        if isinstance(prompt, str):
            self._check_text_length(prompt, param)
            try:
                ids = list(self.engine.tokenize(prompt, add_special=True,
                                                parse_special=parse_special))
            except _core.HologramError as exc:
                raise translate_engine_error(exc, param) from None
            text = prompt
        else:
            ids = self.check_token_ids(prompt, param)
            text = self.engine.detokenize(ids) if ids else ""
        if not ids:
            raise InvalidInputError(f"the {param} is empty: it must contain at least one token",
                                    param, "empty_prompt")
        return Prompt(ids=ids, text=text)

    def render_chat(
        self,
        messages: Sequence[ChatMessage],
        add_generation_prompt: bool = True,
        escape: Callable[[str], str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Render messages with the model's chat template (ChatML when it has none).
        ``escape`` is applied to every text of the messages and tools (contents, names, tool
        definitions and call arguments) before rendering.

        ``tools`` (OpenAI-shaped tool definitions) and the messages' tool calls and results go
        to the template itself when it uses ``tools``; otherwise the chat is rewritten for it
        (:func:`hologram.heads.tools.fallback_messages`)."""
        if not messages:
            raise InvalidInputError("messages must contain at least one message", "messages")
        esc: Callable[[str], str] = escape if escape is not None else (lambda t: t)
        rendered: list[dict[str, Any]] = []
        has_tool_turns = False
        for i, m in enumerate(messages):
            if m.role not in CHAT_ROLES:
                raise InvalidInputError(
                    f"messages[{i}].role {m.role!r} is not supported; use one of "
                    + ", ".join(CHAT_ROLES),
                    f"messages.{i}.role",
                )
            role = "system" if m.role == "developer" else m.role
            item: dict[str, Any] = {"role": role, "content": esc(m.content)}
            if m.name is not None:
                item["name"] = esc(m.name)
            if m.tool_calls:
                item["tool_calls"] = _escape_all(template_tool_calls(m.tool_calls), esc)
                has_tool_turns = True
            if m.role == "tool":
                item["tool_call_id"] = esc(m.tool_call_id or "")
                has_tool_turns = True
            rendered.append(item)
        tool_list = None if tools is None else _escape_all([dict(t) for t in tools], esc)
        if self.template.uses_tools:
            return self.template.render(rendered, add_generation_prompt=add_generation_prompt,
                                        tools=tool_list or None)
        if tool_list or has_tool_turns:
            rendered = fallback_messages(rendered, tool_list)
        return self.template.render(rendered, add_generation_prompt=add_generation_prompt)

    def encode_chat(self, messages: Sequence[ChatMessage],
                    tools: Sequence[Mapping[str, Any]] | None = None) -> Prompt:
        """Render (with ``tools``, see :meth:`render_chat`) and tokenize a chat. Only the template's own markup may produce control
        tokens: control-token text inside a message (``<|im_start|>`` typed by a user) is
        tokenized as plain text, so no message can close its turn or open another role's.

        Each control-token text in a content or name is swapped for a per-request placeholder
        before rendering (so the template sees ordinary text and may transform it as it likes),
        and the rendered text is tokenized in segments: the placeholders' original texts with
        special-token parsing off, everything else with it on."""
        nonce = str(secrets.randbelow(10**18))  # digits: survive upper()/lower()
        originals: list[str] = []

        def escape(text: str) -> str:
            found = self.engine.control_texts_in(text)
            if not found:
                return text
            pattern = re.compile("|".join(re.escape(t) for t in found))  # longest first

            def placeholder(m: re.Match[str]) -> str:
                originals.append(m.group(0))
                return f"\ue000{nonce}:{len(originals) - 1}\ue001"

            return pattern.sub(placeholder, text)

        rendered = self.render_chat(messages, escape=escape, tools=tools)
        segments: list[tuple[str, bool]] = []
        if originals:
            parts = re.split(f"\ue000{nonce}:(\\d+)\ue001", rendered)
            for k, part in enumerate(parts):
                if k % 2 == 0:
                    if part:
                        segments.append((part, True))
                else:
                    segments.append((originals[int(part)], False))
        else:
            segments.append((rendered, True))
        text = "".join(s for s, _ in segments)
        self._check_text_length(text, "messages")
        bos = self.engine.bos_token
        add_special = not (bos and text.startswith(bos))
        try:
            ids = list(self.engine.tokenize_segments(segments, add_special=add_special))
        except _core.HologramError as exc:
            raise translate_engine_error(exc, "messages") from None
        if not ids:
            raise InvalidInputError("the rendered chat prompt is empty", "messages")
        return Prompt(ids=ids, text=text)

    def resolve_max_tokens(
        self,
        n_prompt: int,
        max_tokens: int | None,
        param: str = "max_tokens",
        prompt_param: str = "prompt",
    ) -> int:
        """The number of tokens to allow; raises ContextLengthError (with the numbers) when
        the prompt plus ``max_tokens`` does not fit."""
        if max_tokens is None:
            room = self.n_ctx - n_prompt
            if room < 1:
                raise ContextLengthError(
                    f"This model's maximum context length is {self.n_ctx} tokens. However, "
                    f"your prompt is {n_prompt} tokens, which leaves no room for a completion.",
                    prompt_param,
                )
            return room
        if n_prompt + max_tokens > self.n_ctx:
            raise ContextLengthError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you "
                f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the prompt, "
                f"{max_tokens} for the completion). Please reduce the prompt or {param}.",
                param,
            )
        return max_tokens

    # -- generation ------------------------------------------------------------------------

    def check_grammar(self, grammar: str, param: str = "response_format") -> None:
        """Compile a structured-output grammar (``hologram.constraints``) now, so a bad one
        is an :class:`InvalidInputError` naming the problem before anything is queued (the
        compiled grammar is kept for the generation that follows)."""
        try:
            self.engine.check_grammar(grammar)
        except _core.InvalidArgumentError as exc:
            raise InvalidInputError(str(exc), param, "invalid_grammar") from None
        except _core.HologramError as exc:
            raise translate_engine_error(exc, param) from None

    def sampling(self, **values: Any) -> SamplingParams:
        """Sampling settings for one request: ``values`` (None = unset) over this model's
        defaults (``self.defaults``)."""
        return SamplingParams.build(self.defaults, **values)

    def start(
        self, prompt: Prompt, params: SamplingParams, group: int | None = None
    ) -> CompletionStream:
        """Queue a generation on the engine thread. Generations started with the same
        ``group`` (the ``n`` choices of one prompt) read the prompt once and share it."""
        max_tokens = self.resolve_max_tokens(len(prompt.ids), params.max_tokens)
        try:
            raw = self.engine.stream(prompt.ids, max_tokens=max_tokens, group=group,
                                     **params.engine_kwargs())
        except _core.HologramError as exc:
            raise translate_engine_error(exc) from None
        return CompletionStream(raw, len(prompt.ids), params.logprobs is not None)

    def complete(
        self,
        prompt: Prompt,
        params: SamplingParams,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Generate to the end (blocking). When ``cancel`` is set the generation stops after
        the current token and the result so far is returned."""
        texts: list[str] = []
        tokens: list[TokenInfo] = []
        with self.start(prompt, params) as stream:
            for delta in stream:
                texts.append(delta.text)
                if params.logprobs is not None and delta.token is not None:
                    tokens.append(delta.token)
                if cancel is not None and cancel.is_set():
                    break
            return Completion(
                text="".join(texts),
                finish_reason=stream.finish_reason or "stop",
                prompt_tokens=stream.prompt_tokens,
                completion_tokens=stream.completion_tokens,
                tokens=tokens,
            )

    def prompt_logprobs(self, ids: Sequence[int], top: int) -> list[TokenInfo]:
        """Logprob of each prompt token given the ones before it (the first has None),
        computed in the engine a few rows at a time (no prompt x vocabulary array)."""
        try:
            rows = self.engine.prompt_logprobs(list(ids), top)
        except _core.HologramError as exc:
            raise translate_engine_error(exc, "prompt") from None
        out: list[TokenInfo] = []
        for i, t in enumerate(ids):
            data = bytes(self.engine.token_to_bytes(t))
            if i == 0:
                out.append(TokenInfo(id=t, token=_token_text(data), bytes=data, logprob=None))
                continue
            lp, alts = rows[i - 1]
            out.append(TokenInfo(
                id=t, token=_token_text(data), bytes=data, logprob=float(lp),
                top=tuple(TopToken(token=a.text, bytes=bytes(a.bytes), logprob=float(a.logprob))
                          for a in alts) if top > 0 else (),
            ))
        return out
