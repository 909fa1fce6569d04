"""Tool (function) calling: what the model is told about the tools, the grammar that forces a
call, and the parsing of the calls out of the generated text.

Formats (chosen from the chat template, see :func:`tool_format`):

* ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call
  (Hermes, Qwen 2.5/3, SmolLM3; also hologram's fallback prompt for templates that do not use
  ``tools``);
* ``llama3``: the whole answer is ``{"name": ..., "parameters": {...}}`` (optionally after
  ``<|python_tag|>``; several calls separated by ``;``);
* ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.

When a template does not use the ``tools`` variable, :func:`fallback_messages` rewrites the chat
for it: a system-prompt section that lists the tools (as JSON) and asks for Hermes-style
``<tool_call>`` blocks, assistant tool calls written as those blocks, and tool results as a
user turn of ``<tool_response>`` blocks.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMATS",
    "ParsedCall",
    "ToolCall",
    "ToolStreamParser",
    "fallback_messages",
    "new_call_id",
    "parse_tool_calls",
    "tool_format",
    "tool_grammar",
]

FORMATS = ("hermes", "llama3", "mistral")

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_TAG = "[TOOL_CALLS]"

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """A tool-call id in OpenAI's shape (``call_`` and 24 letters and digits)."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ToolCall:
    """A tool call of an earlier assistant turn (``arguments`` as the client sent it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedCall:
    """A tool call found in generated text: ``arguments`` is a JSON text."""

    name: str
    arguments: str


def tool_format(template_source: str) -> str:
    """The tool-call format the chat template's model writes, from the markers in the
    template; ``hermes`` when none is found (and for the fallback prompt)."""
    if MISTRAL_TAG in template_source:
        return "mistral"
    if HERMES_OPEN in template_source:
        return "hermes"
    if PYTHON_TAG in template_source or "ipython" in template_source:
        return "llama3"
    return "hermes"


def _arguments_value(arguments: str) -> Any:
    """Arguments as templates expect them (HF convention: a dict), the text if it is no
    JSON object."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


def template_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """An assistant turn's ``tool_calls`` as chat templates read them."""
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": _arguments_value(c.arguments)}}
            for c in calls]


# -- the fallback prompt ------------------------------------------------------------------------

_FALLBACK_HEADER = (
    "# Tools\n\n"
    "You can call functions to help answer the user. The available functions, as JSON "
    "signatures, are inside <tools></tools> tags:\n<tools>\n"
)
_FALLBACK_FOOTER = (
    "\n</tools>\n\n"
    "To call a function, answer with a JSON object holding its name and arguments inside "
    "<tool_call></tool_call> tags, one block per call:\n"
    "<tool_call>\n"
    '{"name": "<function name>", "arguments": {<arguments as JSON>}}\n'
    "</tool_call>\n"
    "A function's result comes back inside <tool_response></tool_response> tags."
)


def fallback_system_section(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system-prompt section that describes ``tools`` (OpenAI-shaped) to a model whose
    template does not use them."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return _FALLBACK_HEADER + lines + _FALLBACK_FOOTER


def hermes_block(name: str, arguments: str) -> str:
    args = _arguments_value(arguments)
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{HERMES_OPEN}\n{body}\n{HERMES_CLOSE}"


def fallback_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """``messages`` (dicts: role, content, optional tool_calls / tool_call_id) rewritten for a
    template that knows only system, user and assistant turns: the tools in the system prompt,
    assistant tool calls as ``<tool_call>`` blocks, tool results as a user turn of
    ``<tool_response>`` blocks (consecutive results in one turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "tool":
            block = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        item = {k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")}
        calls = m.get("tool_calls") or []
        if calls:
            blocks = "\n".join(hermes_block(c["function"]["name"],
                                            json.dumps(c["function"]["arguments"])
                                            if isinstance(c["function"]["arguments"], dict)
                                            else c["function"]["arguments"])
                               for c in calls)
            item["content"] = (item["content"] + "\n" if item["content"] else "") + blocks
        out.append(item)
    for item in out:
        item.pop("_tool_results", None)
    if tools:
        section = fallback_system_section(tools)
        if out and out[0]["role"] == "system":
            first = out[0]["content"]
            out[0] = {**out[0], "content": (first + "\n\n" if first else "") + section}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


# -- the grammar that forces a call ----------------------------------------------------------------

#: JSON layout inside forced calls (as hologram.constraints: compact, one space after , and :).
_JSON_LAYOUT: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


def _parameters(function: Mapping[str, Any]) -> dict[str, Any]:
    params = function.get("parameters")
    if params is None:  # OpenAI: no parameters = an empty parameter list
        return {"type": "object", "properties": {}, "additionalProperties": False}
    return dict(params)


def call_schema(functions: Sequence[Mapping[str, Any]], args_key: str = "arguments",
                lenient: bool = False) -> dict[str, Any]:
    """The JSON schema of one call ``{"name": ..., args_key: {...}}`` to one of
    ``functions`` (OpenAI ``function`` objects)."""
    options = {**_JSON_LAYOUT, "lenient": lenient}
    alternatives = [
        {"type": "object",
         "properties": {"name": {"const": f["name"]}, args_key: _parameters(f)},
         "required": ["name", args_key], "additionalProperties": False}
        for f in functions
    ]
    schema: dict[str, Any] = (alternatives[0] if len(alternatives) == 1
                              else {"anyOf": alternatives})
    return {**schema, "x-guidance": options}


def _lark_string(text: str) -> str:
    return json.dumps(text)


def tool_grammar(fmt: str, functions: Sequence[Mapping[str, Any]], parallel: bool,
                 lenient: bool = False, max_calls: int = 4) -> str:
    """A Lark grammar (llguidance's dialect) whose texts are one call (or, with
    ``parallel``, 1 to ``max_calls`` calls) to one of ``functions`` in format ``fmt``; each
    call's arguments match that function's ``parameters`` schema."""
    args_key = "parameters" if fmt == "llama3" else "arguments"
    schema = json.dumps(call_schema(functions, args_key, lenient), ensure_ascii=False)
    item = "block" if fmt == "hermes" else "call"
    sep = {"mistral": ", ", "llama3": "; "}.get(fmt, "\n")
    calls = f"{item} ({_lark_string(sep)} {item}){{0,{max_calls - 1}}}" if parallel else item
    if fmt == "mistral":
        body = f"start: {_lark_string(MISTRAL_TAG + '[')} {calls} \"]\"\n"
    else:
        body = f"start: {calls}\n"
    if fmt == "hermes":
        body += (f"block: {_lark_string(HERMES_OPEN + chr(10))} call "
                 f"{_lark_string(chr(10) + HERMES_CLOSE)}\n")
    return body + f"call: %json {schema}\n"


# -- parsing -----------------------------------------------------------------------------------

_HERMES_BLOCK = re.compile(re.escape(HERMES_OPEN) + r"(.*?)(?:" + re.escape(HERMES_CLOSE)
                           + r"|\Z)", re.DOTALL)


def _call_from(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")
               ) -> ParsedCall | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args: Any = {}
    for key in args_keys:
        if key in obj:
            args = obj[key]
            break
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(name=name, arguments=json.dumps(args, ensure_ascii=False))


def _json_values(text: str) -> list[Any] | None:
    """The JSON values ``text`` is made of (separated by whitespace, ``;`` or ``,``), or
    None when it is anything else."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n;,":
            pos += 1
        if pos >= n:
            return values
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        values.append(value)


def _parse_hermes(text: str) -> tuple[str, list[ParsedCall]]:
    calls: list[ParsedCall] = []
    content: list[str] = []
    last = 0
    for m in _HERMES_BLOCK.finditer(text):
        values = _json_values(m.group(1).strip())
        parsed = [_call_from(v) for v in values] if values else []
        if not parsed or any(p is None for p in parsed):
            continue  # not a call: it stays in the content
        content.append(text[last:m.start()])
        calls.extend(p for p in parsed if p is not None)
        last = m.end()
    content.append(text[last:])
    return "".join(content), calls


def _parse_json_calls(body: str, args_keys: tuple[str, ...]) -> list[ParsedCall] | None:
    values = _json_values(body)
    if not values:
        return None
    flat: list[Any] = []
    for v in values:
        flat.extend(v if isinstance(v, list) else [v])
    calls = [_call_from(v, args_keys) for v in flat]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def parse_tool_calls(text: str, fmt: str) -> tuple[str, list[ParsedCall]]:
    """The calls in ``text`` (written in format ``fmt``) and the text outside them. Text that
    does not parse as a call stays content."""
    if fmt == "hermes":
        return _parse_hermes(text)
    # Mistral: [TOOL_CALLS] then a JSON list; Llama 3: <|python_tag|> (optional) then JSON.
    json_formats = {
        "mistral": (MISTRAL_TAG, "[", ("arguments", "parameters")),
        "llama3": (PYTHON_TAG, "{", ("parameters", "arguments")),
    }
    if fmt in json_formats:
        tag, opening, arg_keys = json_formats[fmt]
        stripped = text.strip()
        if stripped.startswith(tag):
            stripped = stripped[len(tag):]
        elif not stripped.startswith(opening):
            return text, []
        calls = _parse_json_calls(stripped, arg_keys)
        return ("", calls) if calls else (text, [])
    raise ValueError(f"unknown tool-call format {fmt!r}")


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


class ToolStreamParser:
    """Incremental form of :func:`parse_tool_calls` for streaming: :meth:`feed` takes text as
    it is generated and gives back the content that is safe to send and the calls completed so
    far; text that may be the start of a call is held back until it is known."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._buf = ""  # held back
        self._whole = fmt != "hermes"  # llama3 / mistral: a call is the whole answer
        self._decided = False  # llama3 / mistral: whether the answer is a call is known
        self._in_call = False

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        self._buf += text
        if self._whole:
            if not self._decided:
                head = self._buf.lstrip()
                if not head:
                    return "", []
                marker = MISTRAL_TAG if self.fmt == "mistral" else PYTHON_TAG
                could_be = (head.startswith(("{", "[", marker)) or marker.startswith(head))
                if not could_be:
                    self._decided = True
                    self._whole = False  # plain content from here on
                    self.fmt = "plain"
                else:
                    return "", []
            if self.fmt == "plain":
                out, self._buf = self._buf, ""
                return out, []
            return "", []
        # hermes
        content: list[str] = []
        calls: list[ParsedCall] = []
        while True:
            if not self._in_call:
                at = self._buf.find(HERMES_OPEN)
                if at < 0:
                    keep = _partial_suffix(self._buf, HERMES_OPEN)
                    content.append(self._buf[:len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    break
                content.append(self._buf[:at])
                self._buf = self._buf[at:]
                self._in_call = True
            end = self._buf.find(HERMES_CLOSE)
            if end < 0:
                break
            block = self._buf[:end + len(HERMES_CLOSE)]
            self._buf = self._buf[end + len(HERMES_CLOSE):]
            self._in_call = False
            rest, found = _parse_hermes(block)
            content.append(rest)
            calls.extend(found)
        return "".join(content), calls

    def finish(self) -> tuple[str, list[ParsedCall]]:
        """The end of the text: what was held back, as content or calls."""
        buf, self._buf = self._buf, ""
        if self.fmt == "plain":
            return buf, []
        return parse_tool_calls(buf, self.fmt)
