"""Streaming behaviour: SSE framing, WebSocket, client disconnects, concurrency, metrics."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import requests
import websockets

from .conftest import Server, metric_sum

HELLO = [{"role": "user", "content": "Hello!"}]


def wait_idle(base: str, limit: float = 2.0) -> None:
    t0 = time.monotonic()
    while metric_sum(base, "hologram_requests_in_flight") != 0:
        assert time.monotonic() - t0 < limit, f"generation still running after {limit} s"
        time.sleep(0.05)


def test_sse_framing_raw(server: Server) -> None:
    with requests.post(server.v1 + "/chat/completions", stream=True, timeout=60,
                       json={"messages": HELLO, "stream": True, "max_tokens": 8}) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = r.raw.read()
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    for frame in frames[:-2]:
        assert frame.startswith(b"data: {") and b"\n" not in frame


def test_disconnect_cancels_generation(server: Server) -> None:
    base = server.base
    wait_idle(base)
    cancelled_before = metric_sum(base, "hologram_cancelled_requests_total")
    with requests.post(server.v1 + "/completions", stream=True, timeout=60, json={
            "prompt": "Count: 1, 2, 3,", "max_tokens": 800, "stream": True,
            "ignore_eos": True}) as r:
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line:
                got += 1
            if got >= 3:
                break
        assert metric_sum(base, "hologram_requests_in_flight") == 1
    t0 = time.monotonic()
    while metric_sum(base, "hologram_requests_in_flight") != 0:
        assert time.monotonic() - t0 < 2.0, "generation still running 2 s after disconnect"
        time.sleep(0.05)
    assert metric_sum(base, "hologram_cancelled_requests_total") == cancelled_before + 1
    # the server is still serving
    r2 = requests.post(server.v1 + "/completions", json={"prompt": "Hi", "max_tokens": 2},
                       timeout=60)
    assert r2.status_code == 200


def test_non_stream_disconnect_cancels(server: Server) -> None:
    base = server.base
    try:
        httpx.post(server.v1 + "/completions", timeout=0.5, json={
            "prompt": "Count: 1, 2, 3,", "max_tokens": 800, "ignore_eos": True})
    except httpx.TimeoutException:
        pass
    t0 = time.monotonic()
    while metric_sum(base, "hologram_requests_in_flight") != 0:
        assert time.monotonic() - t0 < 2.0, "generation still running 2 s after disconnect"
        time.sleep(0.05)


def test_concurrent_streams(server: Server) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, str | None, str | None]:
        parts = []
        finish: str | None = None
        last: str | None = None
        async with client.stream("POST", server.v1 + "/chat/completions", json={
                "messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 6,
                "stream": True}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                last = line[6:]
                if last.startswith("{"):
                    choices = json.loads(last)["choices"]
                    if choices:
                        parts.append(choices[0]["delta"].get("content", ""))
                        finish = choices[0]["finish_reason"] or finish
            return "".join(parts), finish, last

    async def run() -> list[tuple[str, str | None, str | None]]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(6)))

    results = asyncio.run(run())
    assert len(results) == 6
    for _, finish, last in results:
        assert finish in ("stop", "length"), results
        assert last == "[DONE]", results


def test_health_responsive_during_generation(server: Server) -> None:
    done = threading.Event()

    def gen() -> None:
        requests.post(server.v1 + "/completions", timeout=60,
                      json={"prompt": "x", "max_tokens": 60, "ignore_eos": True})
        done.set()

    t = threading.Thread(target=gen)
    t.start()
    worst = 0.0
    while not done.is_set():
        t0 = time.monotonic()
        assert requests.get(server.base + "/health", timeout=5).status_code == 200
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.02)
    t.join()
    assert worst < 0.5, f"/health took {worst:.3f} s while generating"


def test_websocket(server: Server, model_id: str) -> None:
    async def run() -> None:
        uri = f"ws://127.0.0.1:{server.port}/v1/ws"
        async with websockets.connect(uri) as ws:
            await ws.send(json.dumps({"endpoint": "chat/completions", "messages": HELLO,
                                      "max_tokens": 5,
                                      "stream_options": {"include_usage": True}}))
            msgs = []
            while True:
                m = json.loads(await ws.recv())
                msgs.append(m)
                if m.get("done"):
                    break
            assert msgs[0]["object"] == "chat.completion.chunk"
            assert msgs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert msgs[-2]["choices"] == [] and msgs[-2]["usage"]["completion_tokens"] <= 5
            assert msgs[-1] == {"done": True}
            # a second request on the same socket: text completion
            await ws.send(json.dumps({"endpoint": "/v1/completions", "model": model_id,
                                      "prompt": "Once", "max_tokens": 3}))
            msgs = []
            while True:
                m = json.loads(await ws.recv())
                msgs.append(m)
                if m.get("done"):
                    break
            assert msgs[0]["object"] == "text_completion"
            assert msgs[-2]["choices"][0]["finish_reason"] in ("stop", "length")
            # errors are in-band and the socket stays usable
            await ws.send(json.dumps({"endpoint": "chat/completions", "messages": []}))
            err = json.loads(await ws.recv())
            assert err["error"]["param"] == "messages"
            assert json.loads(await ws.recv()) == {"done": True}
            await ws.send("not json")
            assert "error" in json.loads(await ws.recv())
            assert json.loads(await ws.recv()) == {"done": True}

    asyncio.run(run())


def test_websocket_disconnect_cancels(server: Server) -> None:
    async def run() -> None:
        uri = f"ws://127.0.0.1:{server.port}/v1/ws"
        async with websockets.connect(uri) as ws:
            await ws.send(json.dumps({"endpoint": "completions", "prompt": "1, 2,",
                                      "max_tokens": 800, "ignore_eos": True}))
            for _ in range(3):
                await ws.recv()

    asyncio.run(run())
    t0 = time.monotonic()
    while metric_sum(server.base, "hologram_requests_in_flight") != 0:
        assert time.monotonic() - t0 < 2.0
        time.sleep(0.05)


def test_metrics_change(server: Server) -> None:
    base = server.base
    gen0 = metric_sum(base, "hologram_generation_tokens_total")
    prompt0 = metric_sum(base, "hologram_prompt_tokens_total")
    ttft0 = metric_sum(base, "hologram_time_to_first_token_seconds_count")
    text = requests.get(base + "/metrics", timeout=10).text
    assert "hologram_uptime_seconds" in text and "hologram_queue_depth" in text
    assert "hologram_inter_token_latency_seconds_bucket" in text
    req0 = metric_sum(base, "hologram_requests_total")
    for _ in range(3):
        r = requests.post(server.v1 + "/completions", timeout=60, json={
            "prompt": "Hello world", "max_tokens": 5, "ignore_eos": True})
        assert r.status_code == 200
        n_prompt = r.json()["usage"]["prompt_tokens"]
    assert metric_sum(base, "hologram_generation_tokens_total") == gen0 + 15
    assert metric_sum(base, "hologram_prompt_tokens_total") == prompt0 + 3 * n_prompt
    assert metric_sum(base, "hologram_time_to_first_token_seconds_count") == ttft0 + 3
    assert metric_sum(base, "hologram_requests_total") >= req0 + 4
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(base + "/metrics", timeout=10).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ok = [s for s in fams["hologram_requests"].samples
          if s.labels.get("endpoint") == "/v1/completions" and s.labels.get("status") == "200"]
    assert ok and ok[0].value >= 3
    assert fams["hologram_uptime_seconds"].samples[0].value > 0
