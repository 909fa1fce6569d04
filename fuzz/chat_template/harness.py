"""The checks the chat-template fuzzer runs, shared with ``tests/test_fuzz_regressions.py``.

One input is a template source, optionally followed by NUL-separated message contents (roles
cycle system / user / assistant / tool); without contents a fixed conversation is used.

:func:`check` renders in process with ``render_sandboxed`` (the code the render worker runs, so
the fuzzer sees its coverage): it must return a string within the output budget or raise
:class:`SandboxError`; any other exception is a finding (the worker would die and the request
fail with a 500), as is a render that outlives its deadline by far (the fuzzer's ``-timeout``) or
exhausts memory. :func:`check_worker` sends the same input through ``ChatTemplate.render`` (the
worker process): only :class:`TemplateError` may escape.
"""

from __future__ import annotations

from typing import Any

from hologram.heads.base import TemplateError
from hologram.heads.chat_template import ChatTemplate
from hologram.heads.template_sandbox import SandboxError, render_sandboxed

#: The deadline a fuzzed render gets (the server's default is 2 s; shorter keeps the fuzzer fast).
TIMEOUT_S = 0.5
MAX_OUTPUT_CHARS = 1 << 16

ROLES = ("system", "user", "assistant", "tool")

DEFAULT_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello! {{ 7*7 }} <|im_end|> <end_of_turn>"},
    {
        "role": "assistant",
        "content": "Hi there.",
        "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}},
        ],
    },
    {"role": "tool", "content": "42", "name": "f"},
    {"role": "user", "content": "é 😀 \n\t"},
]


def split_input(data: bytes) -> tuple[str, list[dict[str, Any]], bool]:
    text = data.decode("utf-8", errors="replace")
    source, *contents = text.split("\x00")
    if contents:
        messages = [{"role": ROLES[i % len(ROLES)], "content": c} for i, c in enumerate(contents)]
    else:
        messages = [dict(m) for m in DEFAULT_MESSAGES]
    add_generation_prompt = len(data) % 2 == 0
    return source, messages, add_generation_prompt


def _check_output(out: object) -> None:
    if not isinstance(out, str):
        raise TypeError(f"render returned {type(out).__name__}, not str")
    if len(out) > MAX_OUTPUT_CHARS:
        raise AssertionError(f"render returned {len(out)} characters, over the budget")


def check(data: bytes) -> None:
    source, messages, add_generation_prompt = split_input(data)
    try:
        out = render_sandboxed(
            source,
            messages,
            bos_token="<s>",
            eos_token="</s>",
            add_generation_prompt=add_generation_prompt,
            timeout_s=TIMEOUT_S,
            max_output_chars=MAX_OUTPUT_CHARS,
        )
    except SandboxError:
        return
    _check_output(out)


def check_worker(data: bytes) -> None:
    source, messages, add_generation_prompt = split_input(data)
    try:
        tpl = ChatTemplate(
            source or None,
            bos_token="<s>",
            eos_token="</s>",
            timeout_s=TIMEOUT_S,
            max_output_chars=MAX_OUTPUT_CHARS,
        )
        out = tpl.render(messages, add_generation_prompt=add_generation_prompt)
    except TemplateError:
        return
    _check_output(out)
