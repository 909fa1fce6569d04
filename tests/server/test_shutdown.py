"""Shutdown with a real SIGTERM to a real ``hologram-serve`` (issue 12, item 6): with
``--shutdown-timeout 3``, what still runs is stopped before the timeout ends, every SSE stream
gets a last chunk per choice, an error event and ``[DONE]``, every WebSocket its end, and the
process exits 0."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import requests
import websockets.exceptions
import websockets.sync.client as ws_client

from .conftest import metric_sum, start_server

TIMEOUT = 3.0
LONG = {"max_tokens": 1500, "ignore_eos": True, "temperature": 0.8}


def _sse(server_v1: str, path: str, body: dict[str, Any], out: list[Any]) -> None:
    events: list[Any] = []
    with requests.post(server_v1 + path, json={**body, "stream": True}, stream=True,
                       timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                payload = line[6:]
                events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    out.append(events)


def _ws_busy(port: int, out: list[Any]) -> None:
    msgs: list[Any] = []
    with ws_client.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        ws.send(json.dumps({"endpoint": "chat/completions", **LONG,
                            "messages": [{"role": "user", "content": "Tell me a story."}]}))
        try:
            while True:
                msgs.append(json.loads(ws.recv(timeout=30)))
        except websockets.exceptions.ConnectionClosed as exc:
            msgs.append(("closed", exc.rcvd.code if exc.rcvd else None))
    out.append(msgs)


def test_sigterm_ends_every_stream_cleanly(tmp_path: Path) -> None:
    srv = start_server(["--ctx", "2048", "--parallel", "8", "--threads", "2",
                        "--shutdown-timeout", str(TIMEOUT), "--sse-keepalive", "0.5"], tmp_path)
    stack = contextlib.ExitStack()
    try:
        results: dict[str, list[Any]] = {k: [] for k in ("chat", "completion", "ws", "plain")}
        threads = [
            threading.Thread(target=_sse, args=(srv.v1, "/chat/completions", {
                **LONG, "n": 2, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "Write a long poem."}]},
                results["chat"])),
            threading.Thread(target=_sse, args=(srv.v1, "/completions", {
                **LONG, "prompt": "Once upon a time"}, results["completion"])),
            threading.Thread(target=_ws_busy, args=(srv.port, results["ws"])),
            threading.Thread(target=lambda: results["plain"].append(requests.post(
                srv.v1 + "/completions", timeout=60, json={**LONG, "prompt": "1, 2, 3,"}))),
        ]
        idle = stack.enter_context(ws_client.connect(f"ws://127.0.0.1:{srv.port}/v1/ws"))
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while metric_sum(srv.base, "hologram_generation_tokens_total") < 40:
            assert time.monotonic() - t0 < 60, "the generations did not start"
            time.sleep(0.05)

        sigterm_at = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        # An idle WebSocket is closed at once ("going away").
        try:
            idle.recv(timeout=2)
            raise AssertionError("the idle WebSocket got a message")
        except websockets.exceptions.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1001
        assert time.monotonic() - sigterm_at < 1.0
        for t in threads:
            t.join(30)
        code = srv.proc.wait(30)
        exited = time.monotonic() - sigterm_at
    finally:
        stack.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
    assert code == 0, srv.log()[-3000:]
    assert exited < TIMEOUT + 1.0, exited

    # SSE chat, n=2 with usage: each choice's last chunk has a finish_reason, then the usage
    # chunk, an error event saying why, and [DONE].
    (events,) = results["chat"]
    assert events[-1] == "[DONE]", events[-3:]
    assert events[-2]["error"]["code"] == "shutting_down"
    assert events[-3]["choices"] == [] and events[-3]["usage"]["completion_tokens"] > 0
    finishes = {c["index"]: c["finish_reason"] for e in events[:-2] for c in e.get("choices", [])
                if c.get("finish_reason")}
    assert finishes == {0: "length", 1: "length"}, finishes
    (events,) = results["completion"]
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "shutting_down"
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    # The busy WebSocket: last chunk, the error, {"done": true}, then a 1001 close.
    (msgs,) = results["ws"]
    assert msgs[-1] == ("closed", 1001), msgs[-4:]
    assert msgs[-2] == {"done": True}
    assert msgs[-3]["error"]["code"] == "shutting_down"
    assert msgs[-4]["choices"][0]["finish_reason"] == "length"
    # A request without a stream is answered 503 (its text was not complete).
    (plain,) = results["plain"]
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "shutting_down"
