"""Structured output (``response_format``) through the real ``openai`` client against a real
hologram-serve running the default model: every constrained output parses and validates
against its schema (jsonschema), for several prompts and seeds at temperature 0.9, streamed
and not; the regex and Lark grammar extensions; invalid formats are 400s naming the problem;
an unconstrained request beside a constrained one gets exactly its tokens."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import requests
from openai import BadRequestError, OpenAI

from .conftest import SchemaValidator, Server

PERSON: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "age", "role", "skills", "address", "active"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 16},
                   "minItems": 1, "maxItems": 3},
        "address": {
            "type": "object",
            "additionalProperties": False,
            "required": ["city", "zip"],
            "properties": {"city": {"type": "string", "maxLength": 20},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
        },
        "active": {"type": "boolean"},
        "rating": {"type": "number", "minimum": 0, "maximum": 5},
    },
}

ITEMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["items"],
    "properties": {"items": {
        "type": "array", "minItems": 1, "maxItems": 4,
        "items": {"type": "object", "additionalProperties": False,
                  "required": ["id", "label"],
                  "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 1000},
                                 "label": {"type": "string", "maxLength": 12}}}}},
}

PROMPTS = [
    "Describe a fictional employee as JSON.",
    "Give me a JSON record for a person who lives in Paris.",
    "Output JSON only: a user profile.",
]


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


def _schema_format(schema: dict[str, Any], name: str = "record") -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True}}


def _check(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema.Draft202012Validator(schema).validate(value)
    return value


@pytest.mark.parametrize("prompt", PROMPTS)
def test_chat_json_schema(client: OpenAI, model_id: str, prompt: str,
                          openai_schema: SchemaValidator) -> None:
    body: dict[str, Any] = {"model": model_id, "messages": [{"role": "user", "content": prompt}],
                            "response_format": _schema_format(PERSON), "temperature": 0.9,
                            "seed": 11 + len(prompt), "n": 3, "max_tokens": 300}
    openai_schema.validate("CreateChatCompletionRequest", body)
    r = client.chat.completions.create(**body)
    openai_schema.validate("CreateChatCompletionResponse", r.model_dump(exclude_unset=True))
    assert len(r.choices) == 3
    seen = set()
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        assert c.message.content is not None
        _check(c.message.content, PERSON)
        seen.add(c.message.content)
    assert len(seen) > 1, "three seeds at temperature 0.9 gave the same document"


def test_chat_json_schema_streamed(client: OpenAI, model_id: str) -> None:
    for seed in (3, 4):
        texts: dict[int, list[str]] = {0: [], 1: []}
        finish: dict[int, str | None] = {}
        stream = client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "A shopping list as JSON."}],
            response_format=_schema_format(ITEMS, "shopping"),  # type: ignore[arg-type]
            temperature=0.9, seed=seed, n=2, max_tokens=300, stream=True)
        for chunk in stream:
            for c in chunk.choices:
                if c.delta.content:
                    texts[c.index].append(c.delta.content)
                if c.finish_reason is not None:
                    finish[c.index] = c.finish_reason
        for i in (0, 1):
            assert finish[i] == "stop"
            _check("".join(texts[i]), ITEMS)


def test_chat_json_object(client: OpenAI, model_id: str) -> None:
    """Any JSON object. Nothing bounds its strings, so the 135M model sometimes wanders in one
    until max_tokens (``finish_reason: "length"``, as OpenAI's cut output); every document it
    finishes is an object, streamed or not."""
    messages: Any = [{"role": "user", "content": "Reply in JSON: your name and favourite colour."}]
    texts: list[tuple[str, str | None]] = []
    r = client.chat.completions.create(
        model=model_id, messages=messages, response_format={"type": "json_object"},
        temperature=0.9, seed=5, n=4, max_tokens=150)
    texts += [(c.message.content or "", c.finish_reason) for c in r.choices]
    for seed in (20, 21):
        parts: list[str] = []
        finish = None
        for chunk in client.chat.completions.create(
                model=model_id, messages=messages, response_format={"type": "json_object"},
                temperature=0.9, seed=seed, max_tokens=150, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        texts.append(("".join(parts), finish))
    done = [t for t, f in texts if f == "stop"]
    for t in done:
        assert isinstance(json.loads(t), dict), t
    for t, f in texts:
        assert f in ("stop", "length") and t.startswith("{"), t
    assert len(done) >= len(texts) // 2, texts


def test_completions_json_schema(client: OpenAI, model_id: str) -> None:
    """``/v1/completions`` takes ``response_format`` too (an extension there)."""
    fmt = _schema_format(ITEMS)
    r = client.completions.create(model=model_id, prompt="Inventory as JSON:", max_tokens=300,
                                  temperature=0.9, seed=8, n=2, extra_body={"response_format": fmt})
    for c in r.choices:
        assert c.finish_reason == "stop"
        _check(c.text, ITEMS)
    parts = [c.choices[0].text for c in client.completions.create(
        model=model_id, prompt="Inventory as JSON:", max_tokens=300, temperature=0.9, seed=9,
        stream=True, extra_body={"response_format": fmt})]
    _check("".join(parts), ITEMS)


def test_regex_and_grammar_extensions(client: OpenAI, model_id: str) -> None:
    pattern = r"[A-Z][a-z]{2,8}-[0-9]{3}"
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "A product code please."}],
            temperature=0.9, seed=seed, max_tokens=40,
            extra_body={"response_format": {"type": "regex", "regex": pattern}})
        assert r.choices[0].finish_reason == "stop"
        assert re.fullmatch(pattern, r.choices[0].message.content or ""), r.choices[0].message
    grammar = ('start: answer ", because " reason "."\n'
               'answer: "yes" | "no"\n'
               'reason: /[a-z ]{1,40}/\n')
    parts: list[str] = []
    for chunk in client.completions.create(
            model=model_id, prompt="Is the sky blue? Answer:", max_tokens=60, temperature=0.9,
            seed=4, stream=True, extra_body={"response_format": {"type": "grammar",
                                                                  "grammar": grammar}}):
        parts.append(chunk.choices[0].text)
    assert re.fullmatch(r"(yes|no), because [a-z ]{1,40}\.", "".join(parts)), parts


@pytest.mark.parametrize(("fmt", "fragment"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}},
     "frobnicate"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}, "missing"),
    ({"type": "json_schema"}, "json_schema"),
    ({"type": "regex", "regex": "[a-"}, "regex"),
    ({"type": "grammar", "grammar": "start: undefined_rule"}, "undefined_rule"),
    ({"type": "xml"}, "type"),
])
def test_invalid_response_format_is_400(server: Server, model_id: str, fmt: dict[str, Any],
                                        fragment: str, openai_schema: SchemaValidator) -> None:
    for path, extra in (("chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
                        ("completions", {"prompt": "x"})):
        resp = requests.post(f"{server.v1}/{path}", timeout=60, json={
            "model": model_id, "max_tokens": 5, "response_format": fmt, **extra})
        assert resp.status_code == 400, resp.text
        body = resp.json()
        openai_schema.validate("ErrorResponse", body)
        assert body["error"]["param"].startswith("response_format"), body
        assert fragment in body["error"]["message"], body


def test_openai_client_raises_bad_request(client: OpenAI, model_id: str) -> None:
    with pytest.raises(BadRequestError) as info:
        client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "x"}], max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {
                "name": "bad", "schema": {"type": "array", "uniqueItems": True}}})
    assert "uniqueItems" in str(info.value)


def test_capability_is_listed(client: OpenAI, model_id: str) -> None:
    card = client.models.retrieve(model_id).model_dump()
    assert "response_format" in card["meta"]["capabilities"]


def test_text_format_is_plain_generation(client: OpenAI, model_id: str) -> None:
    kw: Any = {"model": model_id, "messages": [{"role": "user", "content": "Hi"}],
               "max_tokens": 12, "temperature": 0}
    plain = client.chat.completions.create(**kw).choices[0].message.content
    text = client.chat.completions.create(**kw, response_format={"type": "text"})
    assert text.choices[0].message.content == plain


def test_unconstrained_neighbour_is_unchanged(client: OpenAI, model_id: str) -> None:
    """A greedy unconstrained request gives the same text alone and batched beside
    constrained ones (the masks never touch other sequences' rows)."""
    plain: Any = {"model": model_id, "max_tokens": 40, "temperature": 0,
                  "messages": [{"role": "user", "content": "Tell me about the sea."}]}
    alone = client.chat.completions.create(**plain).choices[0].message.content

    def constrained(seed: int) -> str:
        r = client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "JSON person"}],
            response_format=_schema_format(PERSON),  # type: ignore[arg-type]
            temperature=0.9, seed=seed, n=2, max_tokens=300)
        return r.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        first = [pool.submit(constrained, s) for s in (1, 2)]
        beside = [pool.submit(lambda: client.chat.completions.create(**plain)) for _ in range(2)]
        for f in first:
            _check(f.result(), PERSON)
        for b in beside:
            assert b.result().choices[0].message.content == alone
