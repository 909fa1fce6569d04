"""API keys, rate limiting and overload, on a server started with --api-key, --rate-limit,
--parallel 1 and --max-queue 1."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
import websockets.sync.client as ws_client
from hologram.server.auth import ApiKeys
from openai import AuthenticationError, OpenAI

from .conftest import API_KEYS, RATE_LIMIT, Server, metric_sum, session_from

KEY, RATE_KEY, WS_KEY = API_KEYS
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    ("case", "headers"),
    list(enumerate([
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": f"bearer{KEY}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"X-Api-Key": "nope"},
    ])),
)
def test_unauthorized(guarded: Server, case: int, headers: dict[str, str]) -> None:
    # Failed authentications count against the client address: each case comes from its own.
    with session_from(f"127.0.1.{10 + case}") as s:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
                             ("GET", "/metrics"), ("GET", "/v1/models/x"), ("GET", "/nope")):
            r = s.request(method, guarded.base + path, headers=headers, timeout=10, json={})
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert r.json()["error"]["type"] == "authentication_error"


def test_failed_authentications_are_rate_limited_by_address(guarded: Server) -> None:
    """Guessing keys costs the guesser's address its allowance (issue 12, item 11)."""
    with session_from("127.0.2.1") as s:
        codes = [s.get(guarded.v1 + "/models", headers={"Authorization": f"Bearer guess{i}"},
                       timeout=10).status_code for i in range(RATE_LIMIT + 2)]
        assert codes[:RATE_LIMIT] == [401] * RATE_LIMIT, codes
        assert codes[RATE_LIMIT:] == [429, 429], codes
        r = s.get(guarded.v1 + "/models", headers={"Authorization": "Bearer guess"},
                  timeout=10)
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
        # A valid key from that address is counted under its key, not refused.
        assert s.get(guarded.v1 + "/models", headers=AUTH, timeout=10).status_code == 200
    with session_from("127.0.2.2") as other:
        r = other.get(guarded.v1 + "/models", headers={"Authorization": "Bearer guess"},
                      timeout=10)
        assert r.status_code == 401


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


def test_wrong_keys_are_refused_alike(guarded: Server) -> None:
    """A wrong key of the right length, one that differs only in its last character and one of
    another length are refused alike: same answer over HTTP, and the key check takes the same
    time for each (measured on the server's own check with a 1 MB key, where a plain string
    comparison would take ~1000 times longer for a near-miss than for an early miss)."""
    bodies = set()
    for wrong in ("x" * len(KEY), KEY[:-1] + "x", KEY + "x", KEY[:-1], "k"):
        r = requests.get(guarded.v1 + "/models", headers={"Authorization": f"Bearer {wrong}"},
                         timeout=10)
        assert r.status_code == 401
        bodies.add(r.text)
    assert len(bodies) == 1

    secret = "s" * (1 << 20)
    keys = ApiKeys([secret, "another-key"])
    candidates = {"near miss": secret[:-1] + "t", "early miss": "t" + secret[1:],
                  "one longer": secret + "s", "one shorter": secret[:-1]}

    def cost(given: str) -> float:
        best = float("inf")
        for _ in range(15):
            t0 = time.perf_counter()
            assert not keys.check(given)
            best = min(best, time.perf_counter() - t0)
        return best

    assert keys.check(secret)
    times = {name: cost(given) for name, given in candidates.items()}
    assert max(times.values()) < 1.5 * min(times.values()), times


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

    # Streamed requests beyond the queue are refused with an HTTP 503 too, before any stream:
    # fill the one slot and the one queue place with two long streams, then ask for a third.
    long_body = {"prompt": "1, 2, 3,", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with requests.Session() as s1, requests.Session() as s2:
        busy = [s.post(guarded.v1 + "/completions", headers=AUTH, timeout=120, stream=True,
                       json=long_body) for s in (s1, s2)]
        try:
            assert [b.status_code for b in busy] == [200, 200]
            t0 = time.monotonic()
            while metric_sum(guarded.base, "hologram_requests_in_flight", AUTH) < 2:
                assert time.monotonic() - t0 < 30, "the two streams never both got in flight"
                time.sleep(0.05)
            r = requests.post(guarded.v1 + "/completions", headers=AUTH, timeout=60,
                              stream=True, json={**long_body, "max_tokens": 2})
            assert r.status_code == 503, r.text
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.headers["Retry-After"]
            assert r.json()["error"]["code"] == "server_busy"
        finally:
            for b in busy:
                b.close()
    t0 = time.monotonic()
    while metric_sum(guarded.base, "hologram_requests_in_flight", AUTH) != 0:
        assert time.monotonic() - t0 < 5
        time.sleep(0.05)


def test_websocket_messages_are_rate_limited(guarded: Server) -> None:
    """Every WebSocket message counts against the rate limit, like an HTTP request (the
    upgrade counts too): with --rate-limit 40, one socket gets 39 answers, then 429s in-band,
    and stays open (issue 12, item 3)."""
    sock = socket.create_connection(("127.0.0.1", guarded.port), source_address=("127.0.3.1", 0))
    uri = f"ws://127.0.0.1:{guarded.port}/v1/ws"
    codes: list[int | None] = []
    with ws_client.connect(uri, sock=sock,
                           additional_headers={"Authorization": f"Bearer {WS_KEY}"}) as ws:
        for _ in range(RATE_LIMIT + 3):
            ws.send(json.dumps({"endpoint": "embeddings", "input": "x"}))
            first = json.loads(ws.recv(timeout=30))
            assert json.loads(ws.recv(timeout=30)) == {"done": True}
            if "error" in first:
                assert first["error"]["code"] == "rate_limit_exceeded", first
                assert first["error"]["type"] == "rate_limit_error"
                codes.append(429)
            else:
                assert first["object"] == "list"
                codes.append(200)
    assert codes == [200] * (RATE_LIMIT - 1) + [429] * 4, codes
