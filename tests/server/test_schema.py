"""Every response (and every stream chunk) validates against the official OpenAI schemas
(openai/openai-openapi ``components.schemas``, $refs resolved)."""

from __future__ import annotations

import json
from typing import Any

import requests

from .conftest import SchemaValidator, Server, sse_events

HELLO = [{"role": "user", "content": "Hello!"}]


def _stream(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with requests.post(server.v1 + path, json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == b"[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_models_schema(server: Server, openai_schema: SchemaValidator, model_id: str) -> None:
    openai_schema.validate("ListModelsResponse", requests.get(server.v1 + "/models").json())
    openai_schema.validate("Model", requests.get(server.v1 + f"/models/{model_id}").json())


def test_completion_schema(server: Server, openai_schema: SchemaValidator,
                           model_id: str) -> None:
    extra: dict[str, Any]
    for extra in ({}, {"logprobs": 2}, {"logprobs": 1, "echo": True}, {"n": 2}):
        body: dict[str, Any] = {"model": model_id, "prompt": "Once upon a time",
                                "max_tokens": 5, **extra}
        r = requests.post(server.v1 + "/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        data = r.json()
        openai_schema.validate("CreateCompletionResponse", data)
        assert all("logprobs" in c for c in data["choices"])
        chunks = _stream(server, "/completions",
                         {**body, "stream": True, "stream_options": {"include_usage": True}})
        for chunk in chunks:
            openai_schema.validate("_CompletionChunk", chunk)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]
        ids = {c["id"] for c in chunks}
        assert len(ids) == 1


def test_chat_schema(server: Server, openai_schema: SchemaValidator, model_id: str) -> None:
    extras: list[dict[str, Any]] = [{}, {"logprobs": True, "top_logprobs": 2}, {"n": 2},
                                    {"logprobs": True}]
    for extra in extras:
        body: dict[str, Any] = {"model": model_id, "messages": HELLO, "max_tokens": 5, **extra}
        r = requests.post(server.v1 + "/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        data = r.json()
        openai_schema.validate("CreateChatCompletionResponse", data)
        for choice in data["choices"]:
            assert "logprobs" in choice and choice["message"]["refusal"] is None
        for usage in (False, True):
            stream_body = {**body, "stream": True,
                           "stream_options": {"include_usage": usage}}
            chunks = _stream(server, "/chat/completions", stream_body)
            for chunk in chunks:
                openai_schema.validate("CreateChatCompletionStreamResponse", chunk)
            n = int(extra.get("n", 1))
            with_choices = [c for c in chunks if c["choices"]]
            reasons = [c["choices"][0]["finish_reason"] for c in with_choices]
            assert sum(r is not None for r in reasons) == n
            firsts = [c for c in with_choices if "role" in c["choices"][0]["delta"]]
            assert len(firsts) == n
            assert all(f["choices"][0]["delta"] == {"role": "assistant", "content": ""}
                       for f in firsts)
            if usage:
                assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]
                assert all(c["usage"] is None for c in chunks[:-1])
            else:
                assert all("usage" not in c for c in chunks)


def test_embedding_schema(server: Server, openai_schema: SchemaValidator,
                          model_id: str) -> None:
    bodies: list[dict[str, Any]] = [
        {"input": "Hello"}, {"input": ["a", "b"], "dimensions": 8},
        {"input": "x", "encoding_format": "base64"}, {"input": [[28, 29], [30]]}]
    for body in bodies:
        r = requests.post(server.v1 + "/embeddings", json={"model": model_id, **body})
        assert r.status_code == 200, r.text
        if body.get("encoding_format") == "base64":
            assert isinstance(r.json()["data"][0]["embedding"], str)
            continue
        openai_schema.validate("CreateEmbeddingResponse", r.json())


def test_error_schema(server: Server, openai_schema: SchemaValidator) -> None:
    for r in (
        requests.post(server.v1 + "/chat/completions", json={"messages": []}),
        requests.get(server.v1 + "/models/nope"),
        requests.post(server.v1 + "/completions", json={"prompt": "x", "temperature": 9}),
        requests.get(server.base + "/nope"),
    ):
        assert r.status_code >= 400
        openai_schema.validate("ErrorResponse", r.json())
