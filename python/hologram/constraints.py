"""Structured output: grammars for constrained decoding.

Each builder returns a grammar as text, llguidance's ``TopLevelGrammar`` JSON, to pass as
``grammar=`` to :meth:`hologram.Engine.generate` / :meth:`hologram.Engine.stream` or as
:attr:`hologram.sampling.SamplingParams.grammar`. The engine (llguidance, the constrained
decoder llama.cpp, vLLM and SGLang use) then lets the model pick only tokens that keep the
output inside the grammar, and ends the generation when the grammar is complete::

    import json
    from hologram import Engine, constraints, default_model_path

    engine = Engine(default_model_path())
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}},
              "required": ["name"], "additionalProperties": False}
    out = engine.generate("A person as JSON: ", max_tokens=64,
                          grammar=constraints.json_schema(schema))
    json.loads(out.text)  # {"name": ...}

An invalid grammar (malformed schema, a JSON Schema keyword llguidance does not support,
a Lark syntax error, an invalid regex) raises ``hologram.InvalidArgumentError`` naming the
problem, when the generation starts (or with :meth:`hologram.Engine.check_grammar`).

JSON output is compact with one space after ``,`` and ``:`` (``{"a": 1, "b": [1, 2]}``), as
``json.dumps`` writes it: free whitespace would let a small model wander (newline after
newline) instead of finishing the document. Give ``x-guidance`` options in the schema to
choose otherwise (see llguidance's documentation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["json_object", "json_schema", "lark", "regex"]

#: llguidance JSON options applied unless the schema has its own ``x-guidance``.
_JSON_LAYOUT: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


def _grammar(entry: dict[str, Any]) -> str:
    return json.dumps({"grammars": [entry]}, ensure_ascii=False)


def json_schema(schema: Mapping[str, Any], strict: bool = True) -> str:
    """Output: one JSON document valid against ``schema`` (a JSON Schema as a dict).

    ``strict`` (default): a keyword llguidance does not implement is an error. With
    ``strict=False`` such keywords are ignored (the rest of the schema is still enforced,
    so the output may not satisfy the ignored keywords)."""
    if not isinstance(schema, Mapping):
        raise TypeError(f"the schema must be a dict, got {type(schema).__name__}")
    body = dict(schema)
    options = dict(_JSON_LAYOUT)
    if "x-guidance" in body:
        given = body["x-guidance"]
        if not isinstance(given, Mapping):
            raise TypeError("x-guidance must be a dict")
        options = {**options, **given} if "whitespace_flexible" not in given else dict(given)
    if not strict:
        options["lenient"] = True
    body["x-guidance"] = options
    return _grammar({"json_schema": body})


def json_object() -> str:
    """Output: one JSON object (any keys and values), like OpenAI's ``json_object`` mode."""
    return json_schema({"type": "object"})


def lark(text: str) -> str:
    """Output: a text of the Lark grammar ``text`` (llguidance's Lark dialect, start rule
    ``start``; ``%json {...}`` embeds a JSON schema, ``/.../`` a regex)."""
    if not isinstance(text, str):
        raise TypeError(f"the grammar must be a str, got {type(text).__name__}")
    return _grammar({"lark_grammar": text})


def _regex_to_lark(rx: str) -> str:
    """``rx`` written to sit inside Lark's ``/.../`` (llguidance's ``regex_to_lark``)."""
    out: list[str] = []
    escaped = False
    for c in rx:
        prev, escaped = escaped, False
        if c == "/":
            out.append("\\/")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\\" and not prev:
            escaped = True
        else:
            if prev:
                out.append("\\")
            out.append(c)
    if escaped:
        out.append("\\")  # a trailing lone backslash stays (and is reported as invalid)
    return "".join(out)


def regex(pattern: str) -> str:
    """Output: a text the regular expression ``pattern`` matches as a whole (Rust ``regex``
    syntax, which is Python's ``re`` for the common constructs; no look-around or
    backreferences)."""
    if not isinstance(pattern, str):
        raise TypeError(f"the pattern must be a str, got {type(pattern).__name__}")
    return lark(f"start: /{_regex_to_lark(pattern)}/")
