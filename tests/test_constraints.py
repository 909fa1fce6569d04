"""Structured output from the Python API: ``Engine.generate``/``stream`` with ``grammar=`` from
:mod:`hologram.constraints`, on the real default model."""

from __future__ import annotations

import json
import re
from typing import Any

import hologram
import jsonschema  # type: ignore[import-untyped]
import pytest
from hologram import constraints
from hologram.sampling import SamplingParams

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "year", "genres"],
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "genres": {"type": "array", "maxItems": 3,
                   "items": {"enum": ["drama", "comedy", "horror", "action"]}},
    },
}


def test_generate_with_json_schema(smollm2: hologram.Engine) -> None:
    grammar = constraints.json_schema(SCHEMA)
    outs = set()
    for seed in (1, 2, 3):
        r = smollm2.generate("A film, as JSON: ", max_tokens=120, temperature=0.9, seed=seed,
                             grammar=grammar)
        assert r.finish_reason == "stop", r.text
        jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(r.text))
        outs.add(r.text)
    assert len(outs) > 1
    # Streamed: the same tokens as generate with the same seed.
    s = smollm2.stream("A film, as JSON: ", max_tokens=120, temperature=0.9, seed=1,
                       grammar=grammar)
    streamed = "".join(s)
    again = smollm2.generate("A film, as JSON: ", max_tokens=120, temperature=0.9, seed=1,
                             grammar=grammar)
    assert streamed == again.text


def test_builders(smollm2: hologram.Engine) -> None:
    # Any object: nothing bounds its strings, so the small model may wander in one until
    # max_tokens ("length"); every document it finishes is an object.
    done = 0
    for seed in range(1, 7):
        r = smollm2.generate("Some JSON: ", max_tokens=200, temperature=0.9, seed=seed,
                             grammar=constraints.json_object())
        if r.finish_reason == "stop":
            done += 1
            assert isinstance(json.loads(r.text), dict)
        else:
            assert r.text.startswith("{") and r.completion_tokens == 200
    assert done >= 3
    r = smollm2.generate("Date: ", max_tokens=20, temperature=0.9, seed=7,
                         grammar=constraints.regex(r"20[0-9]{2}/(0[1-9]|1[0-2])/[0-3][0-9]"))
    assert re.fullmatch(r"20\d\d/\d\d/\d\d", r.text), r.text
    r = smollm2.generate("Pick: ", max_tokens=20, temperature=0.9, seed=7,
                         grammar=constraints.lark('start: "red" | "green" | "blue"'))
    assert r.text in ("red", "green", "blue")
    assert r.finish_reason == "stop"
    # The lenient mode ignores keywords llguidance does not implement.
    loose = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
             "maxItems": 3, "uniqueItems": True}
    with pytest.raises(hologram.InvalidArgumentError, match="uniqueItems"):
        smollm2.check_grammar(constraints.json_schema(loose))
    r = smollm2.generate("Digits: ", max_tokens=30, temperature=0.9, seed=7,
                         grammar=constraints.json_schema(loose, strict=False))
    assert all(0 <= x <= 9 for x in json.loads(r.text))


def test_sampling_params_pass_the_grammar() -> None:
    g = constraints.regex("a+")
    assert SamplingParams.build(grammar=g).engine_kwargs()["grammar"] == g
    assert SamplingParams().engine_kwargs()["grammar"] is None


@pytest.mark.parametrize("bad", [
    "{not json",
    constraints.lark("start: /[/"),
    constraints.json_schema({"type": "object", "properties": {"a": {"type": "nope"}}}),
])
def test_invalid_grammar_raises(smollm2: hologram.Engine, bad: str) -> None:
    with pytest.raises(hologram.InvalidArgumentError, match="invalid grammar"):
        smollm2.generate("x", max_tokens=5, grammar=bad)
    with pytest.raises(hologram.InvalidArgumentError, match="invalid grammar"):
        smollm2.stream("x", max_tokens=5, grammar=bad)


def test_builder_argument_types() -> None:
    with pytest.raises(TypeError):
        constraints.json_schema([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        constraints.regex(3)  # type: ignore[arg-type]
    # x-guidance given in the schema wins over the compact layout.
    g = json.loads(constraints.json_schema({"type": "object",
                                            "x-guidance": {"whitespace_flexible": True}}))
    assert g["grammars"][0]["json_schema"]["x-guidance"] == {"whitespace_flexible": True}
    assert constraints.regex("a/b\\/c") == constraints.lark("start: /a\\/b\\/c/")


def test_max_tokens_cuts_a_document(smollm2: hologram.Engine) -> None:
    r = smollm2.generate("JSON: ", max_tokens=5, temperature=0.9, seed=1,
                         grammar=constraints.json_schema(SCHEMA))
    assert r.finish_reason == "length"
    assert r.text.startswith('{"title": ')
