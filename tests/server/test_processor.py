"""The engine's processor seen from a real server on loopback: batched generations are
reproducible, a full KV pool never fails or truncates a request, many clients all complete,
and a client that leaves frees its KV blocks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from .conftest import Server, metric_sum, start_server


def _stream_text(client: httpx.Client, base: str, body: dict[str, Any]) -> tuple[str, str]:
    """Text and finish reason of a streamed completion (asserts it ends with [DONE])."""
    parts: list[str] = []
    finish = ""
    done = False
    with client.stream("POST", base + "/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line:
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            for c in chunk["choices"]:
                parts.append(c["text"])
                finish = c["finish_reason"] or finish
    assert done, "stream ended without [DONE]"
    return "".join(parts), finish


async def _astream(client: httpx.AsyncClient, base: str, body: dict[str, Any]
                   ) -> tuple[str, str, bool]:
    parts: list[str] = []
    finish = ""
    done = False
    async with client.stream("POST", base + "/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line:
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            for c in json.loads(data)["choices"]:
                parts.append(c["text"])
                finish = c["finish_reason"] or finish
    return "".join(parts), finish, done


def _kv_idle(base: str, limit: float) -> None:
    t0 = time.monotonic()
    while True:
        free = metric_sum(base, "hologram_kv_blocks_free")
        total = metric_sum(base, "hologram_kv_blocks_total")
        running = metric_sum(base, "hologram_sequences_running")
        if total > 0 and free == total and running == 0:
            return
        assert time.monotonic() - t0 < limit, (free, total, running)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def small_pool(server_logs: Path) -> Iterator[Server]:
    """A server whose KV pool (256 tokens) is far smaller than its 8 clients need."""
    srv = start_server(["--ctx", "256", "--kv-tokens", "256", "--parallel", "8",
                        "--threads", "2"], server_logs)
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


PROMPTS = [f"Story {i}: the {w} of the old town was" for i, w in
           enumerate(["baker", "clock", "river", "mayor", "bridge", "school", "market", "bell"])]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_seeded_text_same_alone_and_among_seven_others(server: Server,
                                                       temperature: float) -> None:
    body = {"prompt": PROMPTS[0], "max_tokens": 48, "temperature": temperature, "seed": 11,
            "ignore_eos": True}
    with httpx.Client(timeout=120) as c:
        alone, _ = _stream_text(c, server.v1, body)

    async def crowd() -> list[tuple[str, str, bool]]:
        async with httpx.AsyncClient(timeout=120) as ac:
            others = [{"prompt": p, "max_tokens": 40 + 3 * i, "temperature": 0.8,
                       "seed": i, "ignore_eos": True} for i, p in enumerate(PROMPTS[1:])]
            tasks = [_astream(ac, server.v1, b) for b in others]
            # The request of interest starts after the others are running.
            first = asyncio.gather(*tasks)
            await asyncio.sleep(0.2)
            mine = await _astream(ac, server.v1, body)
            return [mine, *await first]

    results = asyncio.run(crowd())
    assert results[0][0] == alone
    assert all(done for _, _, done in results)


def test_pool_exhaustion_completes_every_request(small_pool: Server) -> None:
    """8 streams that together need ~6x the KV pool: all end complete (finish_reason
    "length", every token), through preemption; none fails or is cut short."""
    body = {"max_tokens": 120, "temperature": 0, "ignore_eos": True}

    async def run() -> list[tuple[str, str, bool]]:
        async with httpx.AsyncClient(timeout=300) as ac:
            return await asyncio.gather(*[_astream(ac, small_pool.v1, {**body, "prompt": p})
                                          for p in PROMPTS])

    results = asyncio.run(run())
    assert all(done and finish == "length" for _, finish, done in results), results
    assert metric_sum(small_pool.base, "hologram_preemptions_total") > 0
    # Each equals the same request alone.
    with httpx.Client(timeout=120) as c:
        alone, _ = _stream_text(c, small_pool.v1, {**body, "prompt": PROMPTS[3]})
    assert results[3][0] == alone
    _kv_idle(small_pool.base, 5.0)


def test_32_concurrent_clients_all_end_with_done(server: Server) -> None:
    async def run() -> list[tuple[str, str, bool]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=300, limits=limits) as ac:
            return await asyncio.gather(*[
                _astream(ac, server.v1, {"prompt": f"Client {i} says", "max_tokens": 24,
                                         "temperature": 0.5, "seed": i})
                for i in range(32)])

    results = asyncio.run(run())
    assert len(results) == 32
    assert all(done and finish in ("stop", "length") for _, finish, done in results)
    _kv_idle(server.base, 5.0)


def test_disconnect_frees_kv_blocks_within_a_second(server: Server) -> None:
    _kv_idle(server.base, 10.0)
    with requests.post(server.v1 + "/completions", stream=True, timeout=60, json={
            "prompt": "Count: 1, 2, 3,", "max_tokens": 900, "stream": True,
            "ignore_eos": True}) as r:
        assert r.status_code == 200, r.text
        # Read through one live iterator: breaking out of a for loop over iter_lines() closes
        # the generator, and with it the connection (the server then cancels at once).
        lines = r.iter_lines()
        got = 0
        while got < 5:
            got += bool(next(lines))
        assert metric_sum(server.base, "hologram_kv_blocks_free") < metric_sum(
            server.base, "hologram_kv_blocks_total")
    _kv_idle(server.base, 1.0)


def test_engine_metrics_exposed(server: Server) -> None:
    text = requests.get(server.base + "/metrics", timeout=10).text
    for name in ("hologram_sequences_running", "hologram_queue_depth",
                 "hologram_kv_blocks_used", "hologram_kv_blocks_free",
                 "hologram_preemptions_total", "hologram_batch_rows_bucket",
                 "hologram_engine_steps_total"):
        assert name in text, name
    assert metric_sum(server.base, "hologram_engine_steps_total") > 0
