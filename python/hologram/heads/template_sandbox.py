"""The chat-template sandbox: a locked-down Jinja2 environment with a budget, and the render
worker process that runs it.

GGUF files carry their chat template as a Jinja2 string (``tokenizer.chat_template``). That
string is untrusted input (CVE-2024-34359 was exactly this), so it is compiled in an
``ImmutableSandboxedEnvironment`` and rendered with a budget:

* only data is exposed: ``messages``, ``bos_token``, ``eos_token``, ``add_generation_prompt``,
  ``tools`` (when the request has tools), plus the helpers ``raise_exception``, ``strftime_now`` and the ``tojson`` filter
  (``lipsum`` is removed);
* a wall-clock deadline is checked on every call, attribute access, loop iteration (``range``
  is replaced by a deadline-checking sequence) and output chunk;
* output size is capped; ``*`` / ``**`` on huge operands, and widths past the output cap
  (``center``, ``indent``, ``%`` / ``format`` / ``str.format`` field widths, ``ljust``...) are
  refused before they run;
* recursion errors, syntax errors and template-raised errors all become :class:`SandboxError`.

Those checks cannot see inside one long builtin operation (a loop over a long string with no
call in its body, a join of a huge list). So :mod:`hologram.heads.chat_template` renders in a
separate worker process running :func:`serve` (this file run as a script: it imports only the
standard library and jinja2), with an address-space limit, and kills it when the budget is
over: a hostile template costs at most its time budget and its worker's memory limit.
"""

from __future__ import annotations

import json
import operator
import re
import string
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import IO, Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["MAX_TEMPLATE_CHARS", "SandboxError", "render_sandboxed", "serve", "uses_variable"]


class SandboxError(Exception):
    """The template failed, raised, or exceeded its budget (the message says which)."""


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
            raise SandboxError(f"chat template rendering exceeded {self.timeout_s:g} s")


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
        raise SandboxError(f"chat template range() is limited to {MAX_RANGE} items")
    return _BoundedRange(budget, r)


#: ``%`` conversions: a width or precision of ``*`` or past the output cap is refused.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
#: The width and precision of a ``str.format`` spec.
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[_,]?(?:\.(\d+))?")
#: str / bytes methods whose first argument is an output width.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else 0


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox whose every call, attribute access and binary operator checks a budget, and
    that refuses to build a value larger than the output cap."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, budget: _Budget) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            undefined=jinja2.Undefined,
        )
        self.budget = budget
        self.globals.pop("lipsum", None)
        filters = self.filters
        plain = {name: filters[name] for name in ("center", "indent", "join", "replace",
                                                  "format", "batch", "slice", "wordwrap")}

        def width_filter(name: str, arg: int) -> Any:
            inner = plain[name]

            def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
                width = args[arg - 1] if len(args) >= arg else next(iter(kwargs.values()), 0)
                self.check_growth(value, width, per_line=name == "indent")
                return self.checked(inner(value, *args, **kwargs))

            return checked

        filters["center"] = width_filter("center", 1)
        filters["indent"] = width_filter("indent", 1)
        filters["wordwrap"] = width_filter("wordwrap", 1)

        def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
            items = list(value) if not isinstance(value, str) else value
            self.check_size(sum(len(str(x)) for x in items) + len(d) * len(items))
            return plain["join"](eval_ctx, items, d, attribute)

        filters["join"] = jinja2.pass_eval_context(join)

        def replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> Any:
            self.check_replace(str(s), str(old), str(new), count)
            return plain["replace"](eval_ctx, s, old, new, count)

        filters["replace"] = jinja2.pass_eval_context(replace)

        def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
            self.check_percent(str(value))
            return self.checked(plain["format"](value, *args, **kwargs))

        filters["format"] = format_

        def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
            if fill_with is not None:
                self.check_size(int(linecount))
            return plain["batch"](value, linecount, fill_with)

        filters["batch"] = batch

        def slice_(value: Any, slices: int, fill_with: Any = None) -> Any:
            self.check_size(int(slices))
            return plain["slice"](value, slices, fill_with)

        filters["slice"] = slice_

    # -- size checks ------------------------------------------------------------------------

    def check_size(self, n: int) -> None:
        if n > self.budget.max_chars:
            raise SandboxError("chat template tried to build an oversized value")

    def checked(self, value: Any) -> Any:
        self.check_size(_size(value))
        return value

    def check_growth(self, value: Any, width: Any, per_line: bool = False) -> None:
        if isinstance(width, str):
            width = len(width)
        if not isinstance(width, int):
            return
        lines = str(value).count("\n") + 1 if per_line else 1
        self.check_size(max(width, 0) * lines + _size(value))

    def check_replace(self, s: str, old: str, new: str, count: int | None) -> None:
        hits = len(s) + 1 if not old else s.count(old)
        if count is not None and count >= 0:
            hits = min(hits, count)
        self.check_size(len(s) + hits * max(0, len(new) - len(old)))

    def check_percent(self, fmt: str) -> None:
        for width, precision in _PERCENT_SPEC.findall(fmt):
            for n in (width, precision):
                if n == "*" or (n and int(n) > self.budget.max_chars):
                    raise SandboxError("chat template tried to format an oversized field")

    def check_format(self, fmt: str) -> None:
        try:
            fields = list(string.Formatter().parse(fmt))
        except ValueError as exc:
            raise SandboxError(f"chat template format string is invalid: {exc}") from None
        for _, _, spec, _ in fields:
            if not spec:
                continue
            if "{" in spec:
                raise SandboxError("chat template format specs may not nest fields")
            m = _FORMAT_SPEC.match(spec)
            for n in (m.groups() if m else ()):
                if n and int(n) > self.budget.max_chars:
                    raise SandboxError("chat template tried to format an oversized field")

    # -- hooks --------------------------------------------------------------------------------

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        self.budget.check()
        if operator_ == "*":
            for seq, num in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(num, int)
                    and len(seq) * max(num, 0) > MAX_OPERAND
                ):
                    raise SandboxError("chat template tried to build an oversized value")
            return operator.mul(left, right)
        if operator_ == "+":
            self.check_size(_size(left) + _size(right))
            return operator.add(left, right)
        if operator_ == "%":
            if isinstance(left, str):
                self.check_percent(left)
            return self.checked(operator.mod(left, right))
        if (
            isinstance(left, (int, float))
            and isinstance(right, (int, float))
            and abs(right) > 64
            and abs(left) > 1
        ):
            raise SandboxError("chat template tried to compute an oversized power")
        return operator.pow(left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.budget.check()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, (str, bytes)):
            name = getattr(obj, "__name__", "")
            if name in _WIDTH_METHODS and args:
                self.check_growth(owner, args[0])
            elif name == "expandtabs":
                tab = args[0] if args else kwargs.get("tabsize", 8)
                tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
                self.check_growth(owner, tabs * (tab if isinstance(tab, int) else 8))
            elif name == "join" and args:
                items = list(args[0])
                self.check_size(sum(_size(x) for x in items) + len(owner) * len(items))
                args = (items, *args[1:])
            elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
                count = args[2] if len(args) > 2 else kwargs.get("count")
                self.check_replace(owner, str(args[0]), str(args[1]),
                                   count if isinstance(count, int) else None)
            elif name in ("translate", "maketrans"):
                raise SandboxError(f"chat template may not call str.{name}")
        return self.checked(super().call(context, obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            self.check_format(value.__self__)  # str.format / format_map field widths
        return wrapped

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.check()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget.check()
        return super().getitem(obj, argument)


def _raise_exception(message: object = "error raised by the chat template") -> NoReturn:
    raise SandboxError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))[:256]


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 16):
        raise SandboxError("chat template tojson indent must be between 0 and 16")
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def render_sandboxed(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Render ``source`` in the sandbox, in this process. ``tools`` (OpenAI-shaped tool
    definitions) is the template's ``tools`` variable when given. Raises SandboxError on any
    failure, including budget exhaustion."""
    budget = _Budget(timeout_s, max_output_chars)
    env = _Environment(budget)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["range"] = lambda *a: _bounded_range(budget, *a)
    variables: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
    }
    if tools is not None:
        variables["tools"] = [dict(t) for t in tools]
    try:
        template = env.from_string(source)
        out: list[str] = []
        size = 0
        for piece in template.generate(**variables):
            size += len(piece)
            if size > budget.max_chars:
                raise SandboxError(f"chat template output exceeded {budget.max_chars} characters")
            budget.check()
            out.append(piece)
        return "".join(out)
    except SandboxError:
        raise
    except RecursionError:
        raise SandboxError("chat template recursed too deeply") from None
    except SecurityError as exc:
        raise SandboxError(f"chat template attempted an unsafe operation: {exc}") from None
    except JinjaTemplateError as exc:
        raise SandboxError(f"chat template failed: {exc}") from None
    except (OverflowError, MemoryError):
        raise SandboxError("chat template exceeded its resource budget") from None
    except Exception as exc:  # noqa: BLE001 - any template bug is the template's fault
        raise SandboxError(f"chat template failed: {type(exc).__name__}: {exc}") from None


def uses_variable(source: str, name: str) -> bool:
    """Whether the template reads the variable ``name`` (a ``Name`` node that loads it, in the
    template's syntax tree, as llama.cpp's chat-template capability detection finds it). The
    template is only parsed: nothing of it is compiled or run (no constant folding either).
    False when it does not parse."""
    from jinja2 import nodes

    try:
        tree = jinja2.Environment().parse(source)
        return any(n.name == name and n.ctx == "load" for n in tree.find_all(nodes.Name))
    except (JinjaTemplateError, RecursionError, MemoryError):
        return False


# -- the worker process -----------------------------------------------------------------------

#: The worker's address-space limit: a template that allocates past it gets a MemoryError.
WORKER_MEMORY_BYTES = 1 << 30


def serve(inp: IO[str], out: IO[str]) -> None:
    """The render worker's loop: one JSON request per line in (``source``, ``messages``,
    ``bos_token``, ``eos_token``, ``add_generation_prompt``, ``timeout_s``,
    ``max_output_chars``, optionally ``tools``), one JSON line out (``{"text": ...}`` or ``{"error": ...}``), until
    end of input."""
    for line in inp:
        try:
            req = json.loads(line)
            text = render_sandboxed(
                req["source"], req["messages"], bos_token=req["bos_token"],
                eos_token=req["eos_token"], add_generation_prompt=req["add_generation_prompt"],
                timeout_s=req["timeout_s"], max_output_chars=req["max_output_chars"],
                tools=req.get("tools"))
            reply: dict[str, str] = {"text": text}
        except SandboxError as exc:
            reply = {"error": str(exc)[:2000]}
        except MemoryError:
            reply = {"error": "chat template exceeded its memory budget"}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, never fatal here
            reply = {"error": f"chat template failed: {type(exc).__name__}"}
        try:
            encoded = json.dumps(reply)
        except MemoryError:
            encoded = json.dumps({"error": "chat template exceeded its memory budget"})
        out.write(encoded + "\n")
        out.flush()


def _main() -> None:
    import resource
    import signal

    # Ctrl-C reaches the whole process group: the server decides when its workers end (they
    # exit when it closes their input).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    _main()
