"""API keys, rate limiting and overload, on a server started with --api-key, --rate-limit,
--parallel 1 and --max-queue 1."""

from __future__ import annotations

import inspect
import threading

import pytest
import requests
from openai import AuthenticationError, OpenAI

from .conftest import API_KEYS, RATE_LIMIT, Server

KEY, RATE_KEY = API_KEYS
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": f"bearer{KEY}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"X-Api-Key": "nope"},
    ],
)
def test_unauthorized(guarded: Server, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
                         ("GET", "/metrics"), ("GET", "/v1/models/x"), ("GET", "/nope")):
        r = requests.request(method, guarded.base + path, headers=headers, timeout=10,
                             json={})
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.json()["error"]["type"] == "authentication_error"


def test_key_as_query_param_is_not_accepted(guarded: Server) -> None:
    r = requests.get(guarded.v1 + f"/models?api_key={KEY}", timeout=10)
    assert r.status_code == 401


def test_health_is_public(guarded: Server) -> None:
    assert requests.get(guarded.base + "/health", timeout=10).status_code == 200


def test_authorized(guarded: Server) -> None:
    client = OpenAI(base_url=guarded.v1, api_key=KEY, max_retries=0)
    model = client.models.list().data[0].id
    r = client.completions.create(model=model, prompt="Hi", max_tokens=2)
    assert r.choices[0].text is not None
    r2 = requests.get(guarded.v1 + "/models", headers={"X-Api-Key": KEY}, timeout=10)
    assert r2.status_code == 200
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=guarded.v1, api_key="bad", max_retries=0).models.list()


def test_websocket_needs_key(guarded: Server) -> None:
    import websockets.exceptions
    import websockets.sync.client as ws_client

    uri = f"ws://127.0.0.1:{guarded.port}/v1/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        ws_client.connect(uri)
    assert info.value.response.status_code == 401
    with ws_client.connect(uri, additional_headers=AUTH) as ws:
        ws.send('{"endpoint": "completions", "prompt": "Hi", "max_tokens": 1}')
        assert '"done"' in [ws.recv() for _ in range(3)][-1]


def test_compare_digest_is_used() -> None:
    from hologram.server import app

    assert "hmac.compare_digest" in inspect.getsource(app)


def test_rate_limit(guarded: Server) -> None:
    headers = {"Authorization": f"Bearer {RATE_KEY}"}
    codes = []
    with requests.Session() as s:
        for _ in range(RATE_LIMIT + 1):
            r = s.get(guarded.v1 + "/models", headers=headers, timeout=10)
            codes.append(r.status_code)
    assert codes[:RATE_LIMIT] == [200] * RATE_LIMIT
    assert codes[-1] == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # another key is unaffected, and /health is exempt
    assert requests.get(guarded.v1 + "/models", headers=AUTH, timeout=10).status_code == 200
    assert requests.get(guarded.base + "/health", timeout=10).status_code == 200


def test_overload_503(guarded: Server) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def go() -> None:
        r = requests.post(guarded.v1 + "/completions", headers=AUTH, timeout=120, json={
            "prompt": "1, 2, 3,", "max_tokens": 40, "ignore_eos": True})
        with lock:
            results.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["Retry-After"]
            assert r.json()["error"]["code"] == "server_busy"

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6  # accepted + rejected == sent
    assert results.count(200) >= 2 and results.count(503) >= 1, results
    assert set(results) <= {200, 503}
    # streamed requests beyond the queue are refused with an HTTP 503 too (before the stream)
    r = requests.post(guarded.v1 + "/completions", headers=AUTH, timeout=60,
                      json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 200
