"""Chat-template rendering in a locked-down Jinja2 sandbox.

GGUF files carry their chat template as a Jinja2 string (``tokenizer.chat_template``). That
string is untrusted input (CVE-2024-34359 was exactly this), so it is compiled in an
``ImmutableSandboxedEnvironment`` and rendered with a budget:

* only data is exposed: ``messages``, ``bos_token``, ``eos_token``, ``add_generation_prompt``,
  plus the helpers ``raise_exception``, ``strftime_now`` and the ``tojson`` filter;
* a wall-clock deadline is checked on every call, attribute access, loop iteration (``range``
  is replaced by a deadline-checking sequence) and output chunk;
* output size is capped, and ``*`` / ``**`` on huge operands are refused before they run;
* recursion errors, syntax errors and template-raised errors all become :class:`TemplateError`.

Rendering is synchronous; callers that run an event loop must call :meth:`ChatTemplate.render`
from a worker thread.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hologram.heads.base import TemplateError

__all__ = ["CHATML_TEMPLATE", "GEMMA_TEMPLATE", "ChatTemplate", "fallback_template"]

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


MAX_TEMPLATE_CHARS = 1 << 20  # 1 MiB of template source
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_OUTPUT_CHARS = 4 << 20  # 4 MiB of rendered prompt
MAX_RANGE = 100_000
MAX_OPERAND = 1 << 20  # refuse "x" * n and a ** b beyond this


class _Budget:
    def __init__(self, timeout_s: float, max_chars: int) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.max_chars = max_chars

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError(f"chat template rendering exceeded {self.timeout_s:g} s")


class _BoundedRange(Sequence[int]):
    """``range`` that checks the render budget on every iteration step."""

    def __init__(self, budget: _Budget, r: range) -> None:
        self._budget = budget
        self._range = r

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __iter__(self) -> Iterator[int]:
        for i in self._range:
            self._budget.check()
            yield i


def _bounded_range(budget: _Budget, *args: int) -> _BoundedRange:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateError(f"chat template range() is limited to {MAX_RANGE} items")
    return _BoundedRange(budget, r)


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox whose every call, attribute access and binary ``*``/``**`` checks a budget."""

    intercepted_binops = frozenset(["*", "**"])

    def __init__(self, budget: _Budget) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            undefined=jinja2.Undefined,
        )
        self.budget = budget

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        self.budget.check()
        if operator_ == "*":
            for seq, num in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(num, int)
                    and len(seq) * max(num, 0) > MAX_OPERAND
                ):
                    raise TemplateError("chat template tried to build an oversized value")
            return operator.mul(left, right)
        if (
            isinstance(left, (int, float))
            and isinstance(right, (int, float))
            and abs(right) > 64
            and abs(left) > 1
        ):
            raise TemplateError("chat template tried to compute an oversized power")
        return operator.pow(left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.budget.check()
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.check()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget.check()
        return super().getitem(obj, argument)


def _raise_exception(message: object = "error raised by the chat template") -> NoReturn:
    raise TemplateError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


class ChatTemplate:
    """A compiled chat template. ``source`` None means the ChatML fallback."""

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

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """Render ``messages`` (dicts with at least ``role`` and ``content``) to prompt text.

        Raises TemplateError on any failure, including budget exhaustion."""
        budget = _Budget(self.timeout_s, self.max_output_chars)
        env = _Environment(budget)
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["range"] = lambda *a: _bounded_range(budget, *a)
        try:
            template = env.from_string(self.source)
            out: list[str] = []
            size = 0
            for piece in template.generate(
                messages=[dict(m) for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
            ):
                size += len(piece)
                if size > budget.max_chars:
                    raise TemplateError(
                        f"chat template output exceeded {budget.max_chars} characters"
                    )
                budget.check()
                out.append(piece)
            return "".join(out)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("chat template recursed too deeply") from None
        except SecurityError as exc:
            raise TemplateError(f"chat template attempted an unsafe operation: {exc}") from None
        except JinjaTemplateError as exc:
            raise TemplateError(f"chat template failed: {exc}") from None
        except (OverflowError, MemoryError):
            raise TemplateError("chat template exceeded its resource budget") from None
        except Exception as exc:  # noqa: BLE001 - any template bug is the template's fault
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None
