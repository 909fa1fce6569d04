"""Soak test for hologram-serve: many concurrent streams for a while, with random client
disconnects and malformed requests mixed in, on loopback only, bounded in time.

Starts its own ``hologram-serve`` on a free 127.0.0.1 port, warms it up, then runs
``--concurrency`` client loops (default 100) for ``--duration`` seconds (default 60). Each loop
repeatedly picks one of:

* a streamed chat or text completion read to its end (SSE);
* the same, abandoned after a few events (the client disconnects);
* a chat over the WebSocket ``/v1/ws``, sometimes closed mid-stream;
* a non-streamed completion or an embeddings request;
* a malformed request: broken JSON, no or wrong Content-Type, out-of-range values, a lone
  surrogate, JSON nested 100k deep, a foreign Origin or Host, an over-budget ``n``, a CR/LF
  field name, an unknown route.

It reports requests served, errors by kind (expected refusals of malformed requests apart from
unexpected ones: any 5xx, a connection error, a refusal of a valid request), streams that
ended without ``[DONE]`` / ``{"done": true}`` although the client read them to the end (must
be 0), requests still in flight once the clients are done, and the server's RSS: after
warm-up, at the end, its peak, its growth over the second half of the run (the KV cache and
buffers fill up early; a leak keeps growing) and a sample every 10 s. Finally it stops the server with SIGTERM (exit code must be
0). Exit status 1 if any stream lacked its end, anything unexpected happened, or the server
did not stop cleanly.

    python benches/soak.py                       # 100 streams, 60 s
    python benches/soak.py --duration 10 --concurrency 20 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
import websockets.exceptions

HOST = "127.0.0.1"
TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def serve_command() -> list[str]:
    exe = Path(sys.executable).parent / "hologram-serve"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "hologram.server.cli"]


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Tally:
    def __init__(self) -> None:
        self.sent: collections.Counter[str] = collections.Counter()
        self.served: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()  # expected refusals
        self.unexpected: collections.Counter[str] = collections.Counter()
        self.disconnected = 0
        self.without_end = 0
        self.examples: list[str] = []

    def bad(self, kind: str, detail: str) -> None:
        self.unexpected[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {detail[:300]}")


def error_key(r: httpx.Response) -> str:
    try:
        code = r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "?"
    return f"{r.status_code} {code}"


PROMPTS = ["Tell me about the sea.", "Write a haiku about rain.", "Count to twenty:",
           "Describe a busy market.", "What is a good name for a cat?", "Once upon a time"]


def gen_body(rng: random.Random, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": rng.randint(4, 48), "temperature": 0.8,
                            "stream": True, "seed": rng.randint(0, 10**6)}
    if rng.random() < 0.3:
        body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.15:
        body["n"] = rng.randint(2, 3)
    if chat:
        body["messages"] = [{"role": "user", "content": rng.choice(PROMPTS)}]
    else:
        body["prompt"] = rng.choice(PROMPTS)
    return body


async def sse(client: httpx.AsyncClient, base: str, rng: random.Random, tally: Tally,
              abandon: bool) -> None:
    chat = rng.random() < 0.5
    kind = ("chat" if chat else "completion") + (" abandoned" if abandon else " stream")
    tally.sent[kind] += 1
    body = gen_body(rng, chat)
    path = "/v1/chat/completions" if chat else "/v1/completions"
    stop_after = rng.randint(1, 6) if abandon else None
    async with client.stream("POST", base + path, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            key = error_key(r)
            if r.status_code == 503:
                tally.refused[key] += 1  # busy: a legitimate answer under this load
            else:
                tally.bad(f"{kind} {key}", r.text)
            return
        events = 0
        last = b""
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            events += 1
            last = line[6:].encode()
            if last.startswith(b'{"error"'):
                tally.bad(f"{kind} error event", line)
            if stop_after is not None and events >= stop_after:
                tally.disconnected += 1
                return  # leaving the block closes the connection mid-stream
        if last != b"[DONE]":
            tally.without_end += 1
            tally.bad(f"{kind} without [DONE]", last.decode(errors="replace"))
            return
    tally.served[kind] += 1


async def ws_chat(base_ws: str, rng: random.Random, tally: Tally) -> None:
    abandon = rng.random() < 0.3
    kind = "websocket abandoned" if abandon else "websocket"
    tally.sent[kind] += 1
    body = gen_body(rng, True)
    async with websockets.connect(base_ws, open_timeout=30, max_size=None) as ws:
        for _ in range(rng.randint(1, 2)):
            await ws.send(json.dumps({"endpoint": "chat/completions", **body}))
            n = 0
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                n += 1
                if "error" in msg:
                    code = msg["error"].get("code")
                    if code == "server_busy":
                        tally.refused["ws server_busy"] += 1
                    else:
                        tally.bad(f"{kind} error", json.dumps(msg))
                if msg.get("done"):
                    break
                if abandon and n >= 3:
                    tally.disconnected += 1
                    return
    tally.served[kind] += 1


async def plain(client: httpx.AsyncClient, base: str, rng: random.Random, tally: Tally) -> None:
    if rng.random() < 0.5:
        kind = "embeddings"
        r = await client.post(base + "/v1/embeddings", json={
            "model": "all-MiniLM-L6-v2",
            "input": [rng.choice(PROMPTS) for _ in range(rng.randint(1, 8))]})
    else:
        kind = "completion"
        body = gen_body(rng, False)
        body["stream"] = False
        r = await client.post(base + "/v1/completions", json=body)
    tally.sent[kind] += 1
    if r.status_code == 200:
        tally.served[kind] += 1
    elif r.status_code == 503:
        tally.refused[error_key(r)] += 1
    else:
        tally.bad(f"{kind} {error_key(r)}", r.text)


MALFORMED: list[tuple[str, str, dict[str, str], bytes, set[int]]] = [
    ("broken json", "/v1/completions", {"Content-Type": "application/json"},
     b'{"prompt": "x", ', {400}),
    ("no content type", "/v1/completions", {}, b'{"prompt": "x", "max_tokens": 1}', {415}),
    ("form body", "/v1/chat/completions", {"Content-Type": "application/x-www-form-urlencoded"},
     b"messages=hi", {415}),
    ("temperature 5", "/v1/chat/completions", {"Content-Type": "application/json"},
     b'{"messages": [{"role": "user", "content": "x"}], "temperature": 5}', {400}),
    ("lone surrogate", "/v1/completions", {"Content-Type": "application/json"},
     b'{"prompt": "a\\ud800b", "max_tokens": 1}', {400}),
    ("nested 100k", "/v1/completions", {"Content-Type": "application/json"},
     b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {400}),
    ("foreign origin", "/v1/completions",
     {"Content-Type": "application/json", "Origin": "http://evil.example"},
     b'{"prompt": "x", "max_tokens": 1}', {403}),
    ("foreign host", "/v1/completions",
     {"Content-Type": "application/json", "Host": "attacker.example"},
     b'{"prompt": "x", "max_tokens": 1}', {400}),
    ("over budget", "/v1/completions", {"Content-Type": "application/json"},
     b'{"prompt": "x", "n": 128, "max_tokens": 1000, "stream": true}', {400}),
    ("crlf field", "/v1/completions", {"Content-Type": "application/json"},
     b'{"prompt": "x", "max_tokens": 1, "a\\r\\nX-Evil: 1": 1}', {200, 503}),
    ("unknown route", "/v1/nothing", {"Content-Type": "application/json"}, b"{}", {404}),
    ("bad token id", "/v1/completions", {"Content-Type": "application/json"},
     b'{"prompt": [99999999], "max_tokens": 1}', {400}),
]


async def malformed(client: httpx.AsyncClient, base: str, rng: random.Random,
                    tally: Tally) -> None:
    name, path, headers, body, ok = rng.choice(MALFORMED)
    tally.sent["malformed"] += 1
    r = await client.post(base + path, headers=headers, content=body)
    if r.status_code in ok:
        if r.status_code == 200:
            if "X-Evil" in r.headers:
                tally.bad("header injection", name)
            tally.served["malformed (valid after all)"] += 1
        else:
            tally.refused[f"{name}: {error_key(r)}"] += 1
    else:
        tally.bad(f"malformed {name} {error_key(r)}", r.text)


async def client_loop(i: int, base: str, deadline: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed * 1000 + i)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=2)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
        while time.monotonic() < deadline:
            pick = rng.random()
            try:
                if pick < 0.55:
                    await sse(client, base, rng, tally, abandon=False)
                elif pick < 0.70:
                    await sse(client, base, rng, tally, abandon=True)
                elif pick < 0.80:
                    await ws_chat(base.replace("http://", "ws://") + "/v1/ws", rng, tally)
                elif pick < 0.88:
                    await plain(client, base, rng, tally)
                else:
                    await malformed(client, base, rng, tally)
            except (httpx.HTTPError, OSError, asyncio.TimeoutError,
                    websockets.exceptions.WebSocketException) as exc:
                tally.bad(f"connection {type(exc).__name__}", repr(exc))


async def metric(client: httpx.AsyncClient, base: str, name: str) -> float:
    text = (await client.get(base + "/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def load(args: argparse.Namespace, proc: subprocess.Popen[bytes], base: str
               ) -> dict[str, Any]:
    """Warm up, run the client loops, and measure; the report (without the exit code)."""
    async with httpx.AsyncClient(timeout=30) as c:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(base + "/health")).status_code == 200:
                    break
            if time.monotonic() - t0 > 180:
                raise SystemExit("server not healthy after 180 s")
            await asyncio.sleep(0.2)
        warm = Tally()
        await asyncio.gather(*(sse(c, base, random.Random(k), warm, False) for k in range(8)))
        rss_start = status_kib(proc.pid, "VmRSS")
        samples = [rss_start]

        async def sample() -> None:
            while True:
                await asyncio.sleep(1.0)
                samples.append(status_kib(proc.pid, "VmRSS"))

        sampler = asyncio.create_task(sample())
        tally = Tally()
        started = time.monotonic()
        deadline = started + args.duration
        await asyncio.gather(*(client_loop(i, base, deadline, args.seed, tally)
                               for i in range(args.concurrency)))
        wall = time.monotonic() - started
        t1 = time.monotonic()
        in_flight = await metric(c, base, "hologram_requests_in_flight")
        while in_flight and time.monotonic() - t1 < 5:
            await asyncio.sleep(0.1)
            in_flight = await metric(c, base, "hologram_requests_in_flight")
        sampler.cancel()
        rss_end = status_kib(proc.pid, "VmRSS")
        peak = status_kib(proc.pid, "VmHWM")
    return {
        "duration_s": round(wall, 1), "concurrency": args.concurrency,
        "sent": dict(tally.sent), "sent_total": sum(tally.sent.values()),
        "served": dict(tally.served), "served_total": sum(tally.served.values()),
        "client_disconnects": tally.disconnected,
        "refused_as_expected": dict(tally.refused),
        "unexpected": dict(tally.unexpected), "unexpected_total": sum(tally.unexpected.values()),
        "streams_without_end": tally.without_end,
        "in_flight_after": in_flight,
        "rss_mib": {"after_warmup": round(rss_start / 1024, 1),
                    "end": round(rss_end / 1024, 1),
                    "growth": round((rss_end - rss_start) / 1024, 1),
                    "max_sampled": round(max(samples) / 1024, 1),
                    # the second half of the run: a leak keeps growing, warm-up does not
                    "growth_second_half": round(
                        (rss_end - samples[len(samples) // 2]) / 1024, 1),
                    "every_10s": [round(v / 1024) for v in samples[::10]],
                    "peak_hwm": round(peak / 1024, 1)},
        "examples": tally.examples,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--concurrency", type=int, default=100,
                   help="concurrent client loops (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-args", default="--ctx 1024 --parallel 16 --max-queue 128 "
                   "--threads 2", help="extra hologram-serve arguments")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args()
    if args.duration > 3600 or args.concurrency > 1000:
        p.error("bounded: at most 3600 s and 1000 clients")
    port = free_port()
    base = f"http://{HOST}:{port}"
    cmd = [*serve_command(), "--host", HOST, "--port", str(port), *shlex.split(args.server_args)]
    with tempfile.NamedTemporaryFile(prefix="hologram-soak-", suffix=".log",
                                     delete=False) as log:
        print("server:", " ".join(cmd), f"(log {log.name})", flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            report = asyncio.run(load(args, proc, base))
            proc.send_signal(signal.SIGTERM)
            report["server_exit_code"] = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = (report["streams_without_end"] == 0 and not report["unexpected"]
          and report["in_flight_after"] == 0 and report["server_exit_code"] == 0)
    print("OK" if ok else "FAILED", flush=True)
    if ok:
        os.unlink(log.name)
    else:
        print(f"server log: {log.name}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
