"""Prefix cache, shared prompts, budgets, keep-alive and cancellation during a long prompt, on
a real server on loopback (issue: the processor, part 2)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import Server, metric_sum, start_server

SYSTEM = ("You are a meticulous assistant for a small public library. " * 60).strip()


def _usage_cached(body: dict[str, Any]) -> int:
    return int(body["usage"]["prompt_tokens_details"]["cached_tokens"])


def _stream_usage(resp: requests.Response) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for line in resp.iter_lines():
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
    return usage


def test_shared_system_prompt_is_reused(server: Server) -> None:
    def chat(question: str, stream: bool) -> dict[str, Any]:
        body = {"messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": question}],
                "max_tokens": 4, "temperature": 0, "stream": stream,
                "stream_options": {"include_usage": True} if stream else None}
        r = requests.post(server.v1 + "/chat/completions", json=body, timeout=120,
                          stream=stream)
        assert r.status_code == 200, r.text
        return {"usage": _stream_usage(r)} if stream else dict(r.json())

    hits_before = metric_sum(server.base, "hologram_prefix_cache_hit_tokens_total")
    first = chat("Where are the maps kept?", False)
    n_prompt = first["usage"]["prompt_tokens"]
    assert n_prompt > 600
    second = chat("When does the library open?", False)
    assert _usage_cached(second) >= 512
    third = chat("Can I renew a book online?", True)
    assert _usage_cached(third) >= 512
    # Completions report it too (same text, as a raw prompt).
    for stream in (False, True):
        r = requests.post(server.v1 + "/completions", timeout=120, stream=stream, json={
            "prompt": SYSTEM + " Question " + str(stream), "max_tokens": 2, "stream": stream,
            "stream_options": {"include_usage": True} if stream else None})
        usage = _stream_usage(r) if stream else r.json()["usage"]
        assert "prompt_tokens_details" in usage
    r = requests.post(server.v1 + "/completions", timeout=120, json={
        "prompt": SYSTEM + " Question again", "max_tokens": 2})
    assert _usage_cached(r.json()) >= 512
    assert metric_sum(server.base, "hologram_prefix_cache_hit_tokens_total") >= hits_before + 1536


def test_n_choices_equal_single_seeded_requests(server: Server) -> None:
    body = {"prompt": "The harbour at dawn was", "max_tokens": 12, "temperature": 0.9,
            "seed": 5, "n": 4}
    r = requests.post(server.v1 + "/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    texts = [c["text"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]
    for i, text in enumerate(texts):
        one = requests.post(server.v1 + "/completions", timeout=120,
                            json={**body, "n": 1, "seed": 5 + i})
        assert one.json()["choices"][0]["text"] == text


def test_request_budget_refusals_give_the_numbers(server: Server) -> None:
    r = requests.post(server.v1 + "/completions", timeout=60, json={
        "prompt": "hi", "max_tokens": 1000, "n": 128})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and err["param"] == "n"
    assert "65536" in err["message"] and "128" in err["message"]
    r = requests.post(server.v1 + "/embeddings", timeout=60, json={
        "model": "all-MiniLM-L6-v2", "input": ["word " * 500] * 200})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input" and "65536" in r.json()["error"]["message"]
    # Over WebSocket the same limit applies (same dispatch).
    import websockets.sync.client as ws

    with ws.connect(f"ws://127.0.0.1:{server.port}/v1/ws") as sock:
        sock.send(json.dumps({"endpoint": "completions", "prompt": "hi", "max_tokens": 1000,
                              "n": 128}))
        msg = json.loads(sock.recv(timeout=30))
        assert msg["error"]["code"] == "request_too_large"


@pytest.fixture(scope="module")
def one_slot(server_logs: Path) -> Iterator[Server]:
    srv = start_server(["--ctx", "2048", "--parallel", "1", "--threads", "2",
                        "--sse-keepalive", "0.3", "--step-tokens", "32"], server_logs)
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


def test_keepalive_comments_while_queued(one_slot: Server) -> None:
    busy = requests.post(one_slot.v1 + "/completions", stream=True, timeout=120, json={
        "prompt": "Count:", "max_tokens": 300, "ignore_eos": True, "stream": True})
    lines = busy.iter_lines()
    next(lines)
    with requests.post(one_slot.v1 + "/completions", stream=True, timeout=120, json={
            "prompt": "Hello", "max_tokens": 2, "stream": True}) as r:
        raw = r.raw.read(12, decode_content=True)
        busy.close()
        rest = r.raw.read()
    assert raw.startswith(b": keep-alive"), raw
    assert rest.rstrip().endswith(b"data: [DONE]")


def test_cancel_during_long_prompt_frees_blocks_within_a_second(one_slot: Server) -> None:
    base = one_slot.base
    long_prompt = "The river flows past the old mill and on to the sea. " * 140  # ~1.7k tokens
    done = threading.Event()

    def send() -> None:
        try:
            requests.post(one_slot.v1 + "/completions", timeout=1.0, json={
                "prompt": long_prompt, "max_tokens": 4})
        except requests.RequestException:
            pass
        done.set()

    t = threading.Thread(target=send)
    t.start()
    t.join()
    t0 = time.monotonic()
    while True:
        used = metric_sum(base, "hologram_kv_blocks_total") - metric_sum(
            base, "hologram_kv_blocks_free")
        if used == 0 and metric_sum(base, "hologram_sequences_running") == 0:
            break
        assert time.monotonic() - t0 < 1.0, "blocks still held 1 s after the client left"
        time.sleep(0.02)


def test_flush_at_end_adds_no_logprobs_entry(server: Server) -> None:
    """Text held back at the end (a partial stop string when the model stops) is flushed
    without an extra logprobs entry or token count."""
    msgs = [{"role": "user", "content": "Say hi."}]
    base = requests.post(server.v1 + "/chat/completions", timeout=60, json={
        "messages": msgs, "max_tokens": 64, "temperature": 0}).json()
    choice = base["choices"][0]
    if choice["finish_reason"] != "stop" or len(choice["message"]["content"]) < 3:
        pytest.skip("the greedy reply did not end with the end-of-generation token")
    text = choice["message"]["content"]
    for stream in (False, True):
        body = {"messages": msgs, "max_tokens": 64, "temperature": 0, "logprobs": True,
                "stop": [text[-3:] + "\u2603"], "stream": stream,
                "stream_options": {"include_usage": True} if stream else None}
        r = requests.post(server.v1 + "/chat/completions", timeout=60, json=body, stream=stream)
        if stream:
            content, entries, usage = "", [], {}
            for line in r.iter_lines():
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    for c in chunk["choices"]:
                        content += c["delta"].get("content") or ""
                        entries += (c.get("logprobs") or {}).get("content") or []
                    usage = chunk.get("usage") or usage
        else:
            out = r.json()
            content = out["choices"][0]["message"]["content"]
            entries = out["choices"][0]["logprobs"]["content"]
            usage = out["usage"]
        assert content == text
        assert len(entries) == usage["completion_tokens"]
        assert all(e["logprob"] > -9999.0 for e in entries)
