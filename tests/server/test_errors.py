"""Error handling over raw HTTP: OpenAI error shape, right status, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from .conftest import Server

HELLO = [{"role": "user", "content": "Hello!"}]


def check_error(r: requests.Response, status: int, param: str | None = "ANY") -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param != "ANY":
        assert err["param"] == param, err
    return dict(err)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO, "temperature": 2.5}, "temperature"),
        ({"messages": HELLO, "temperature": -0.1}, "temperature"),
        ({"messages": HELLO, "temperature": "0.5"}, "temperature"),
        ({"messages": HELLO, "top_p": 0}, "top_p"),
        ({"messages": HELLO, "top_p": 1.01}, "top_p"),
        ({"messages": HELLO, "top_k": -2}, "top_k"),
        ({"messages": HELLO, "top_k": 1.5}, "top_k"),
        ({"messages": HELLO, "n": 0}, "n"),
        ({"messages": HELLO, "n": 10_000}, "n"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"messages": HELLO, "presence_penalty": 2.01}, "presence_penalty"),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": HELLO, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": HELLO, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": HELLO, "logit_bias": {"99999999": 1}}, "logit_bias"),
        ({"messages": HELLO, "response_format": {"type": "json_schema"}}, "response_format"),
        ({"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "nope"}}}}, "response_format"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [123]}, "messages.0"),
        ({"messages": [{}]}, "messages.0.role"),
        ({"messages": [{"role": 123, "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        ({"messages": [{"role": "user", "content": 123}]}, "messages.0.content"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                      "image_url": {"url": "x"}}]}]},
         "messages.0.content.0"),
        ({}, "messages"),
    ],
)
def test_chat_validation(server: Server, body: dict[str, Any], param: str) -> None:
    r = requests.post(server.v1 + "/chat/completions", json=body, timeout=30)
    err = check_error(r, 400, param)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ({"prompt": [-1]}, "prompt"),
        ({"prompt": [49152]}, "prompt"),
        ({"prompt": [2**31]}, "prompt"),
        ({"prompt": [1.5]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({}, "prompt"),
    ],
)
def test_completion_validation(server: Server, body: dict[str, Any], param: str) -> None:
    r = requests.post(server.v1 + "/completions", json=body, timeout=30)
    check_error(r, 400, param)


@pytest.mark.parametrize(
    "body",
    [
        {"input": ""},
        {"input": []},
        {"input": [[]]},
        {"input": [-5]},
        {"input": "x", "dimensions": 0},
        {"input": "x", "dimensions": 100_000},
        {"input": "x", "encoding_format": "hex"},
        {"input": 3},
    ],
)
def test_embedding_validation(server: Server, body: dict[str, Any]) -> None:
    r = requests.post(server.v1 + "/embeddings", json=body, timeout=30)
    check_error(r, 400)


def test_context_overflow_says_the_numbers(server: Server, model_id: str) -> None:
    r = requests.post(server.v1 + "/completions", timeout=30,
                      json={"model": model_id, "prompt": "hello " * 50, "max_tokens": 1000})
    err = check_error(r, 400, "max_tokens")
    assert err["code"] == "context_length_exceeded"
    assert "1024" in err["message"] and "1000" in err["message"]
    r = requests.post(server.v1 + "/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": "hello " * 2000}]})
    err = check_error(r, 400)
    assert err["code"] == "context_length_exceeded" and "1024" in err["message"]
    r = requests.post(server.v1 + "/embeddings", timeout=30, json={"input": "hello " * 2000})
    check_error(r, 400, "input")


@pytest.mark.parametrize("data", [b"{not json", b"[]", b"42", b'"x"', b"null", b""])
def test_bad_bodies(server: Server, data: bytes) -> None:
    for path in ("/chat/completions", "/completions", "/embeddings"):
        r = requests.post(server.v1 + path, data=data, timeout=30,
                          headers={"Content-Type": "application/json"})
        check_error(r, 400)


def test_wrong_content_type(server: Server) -> None:
    r = requests.post(server.v1 + "/chat/completions", data=b'{"messages": []}', timeout=30,
                      headers={"Content-Type": "text/plain"})
    check_error(r, 415)


def test_unknown_model_and_route(server: Server) -> None:
    r = requests.post(server.v1 + "/chat/completions", timeout=30,
                      json={"model": "gpt-4", "messages": HELLO})
    err = check_error(r, 404, "model")
    assert err["code"] == "model_not_found"
    check_error(requests.get(server.v1 + "/models/gpt-4", timeout=30), 404)
    check_error(requests.get(server.v1 + "/models/..%2F..%2Fetc%2Fpasswd", timeout=30), 404)
    check_error(requests.get(server.base + "/v1/nothing-here", timeout=30), 404)
    check_error(requests.get(server.v1 + "/chat/completions", timeout=30), 405)


def test_body_too_large(server: Server) -> None:
    big = b'{"prompt": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    try:
        r = requests.post(server.v1 + "/completions", data=big, timeout=60,
                          headers={"Content-Type": "application/json"})
    except requests.ConnectionError:  # the server may close before reading everything
        pass
    else:
        check_error(r, 413)
    assert requests.get(server.base + "/health", timeout=10).status_code == 200


def test_unknown_fields_ignored_and_reported(server: Server, model_id: str) -> None:
    r = requests.post(server.v1 + "/completions", timeout=60,
                      json={"model": model_id, "prompt": "Hi", "max_tokens": 2,
                            "frobnicate": True, "user": "u1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-hologram-ignored-params"] == "frobnicate"
    assert "frobnicate" in server.log()


def test_request_id(server: Server) -> None:
    r = requests.get(server.v1 + "/models", headers={"X-Request-Id": "abc-123"}, timeout=10)
    assert r.headers["X-Request-Id"] == "abc-123"
    r = requests.get(server.v1 + "/models", timeout=10)
    assert r.headers["X-Request-Id"]
    assert '"id": "abc-123"' in server.log()


def test_many_invalid_then_valid(server: Server, model_id: str) -> None:
    with requests.Session() as s:
        for _ in range(100):
            r = s.post(server.v1 + "/completions", json={"prompt": [-1]}, timeout=10)
            assert r.status_code == 400
        r = s.post(server.v1 + "/completions", timeout=60,
                   json={"model": model_id, "prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 200


def test_text_parts_and_developer_role(server: Server, model_id: str) -> None:
    r = requests.post(server.v1 + "/chat/completions", timeout=60, json={
        "model": model_id, "max_tokens": 3, "response_format": {"type": "text"},
        "messages": [{"role": "developer", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                  {"type": "text", "text": "there"}]},
                     {"role": "assistant", "content": "Hi!"},
                     {"role": "user", "content": "Bye"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
