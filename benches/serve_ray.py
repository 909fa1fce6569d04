"""hologram on Ray Serve: what prefix-aware routing buys, and what a replica costs in memory.

Starts ``hologram-serve --ray --replicas 2 --threads 1`` (a local Ray instance, loopback only)
once per configuration and, for each, sends ``--requests`` chat completions (``--concurrency``
at a time) whose system prompt is one of 4 distinct ~600-token ones, picked at random (the
same sequence for every configuration), each with its own short question. It prints the
cached-token ratio (sum of ``usage.prompt_tokens_details.cached_tokens`` over the sum of
``prompt_tokens``) and how the requests spread over the replicas (``X-Hologram-Replica``),
for ``--ray-router prefix`` against ``pow2`` (Ray Serve's power of two choices), with the
default KV cache and with ``--kv-tokens 1536`` (room for two of the system prompts per
replica, not four). After the first configuration's requests it reads each replica process's RSS and
PSS (``/proc/PID/smaps_rollup``; the weights are mmap'd, so replicas share their pages) and the
RSS of Ray's own processes.

    python benches/serve_ray.py
    python benches/serve_ray.py --requests 128 --concurrency 16 --kv-tokens 2048

Throughput and TTFT per replica count come from ``benches/serve_load.py`` pointed at a Ray
server: ``python benches/serve_load.py -t 1 --skip-long-prompt --hologram-args
"--ray --replicas 2"`` (see the README's capacity model).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 240.0
N_SYSTEMS = 4
WORDS = ("river", "stone", "window", "garden", "morning", "silver", "engine", "harbor", "winter",
         "letter", "candle", "mountain", "market", "shadow", "bridge", "lantern", "meadow",
         "thunder", "orchard", "compass", "violin", "ladder", "cellar", "forest", "kitchen",
         "signal", "planet", "feather", "copper", "mirror", "village", "tunnel", "island")


def system_prompt(k: int, n_words: int = 520) -> str:
    rng = random.Random(1000 + k)
    rules = " ".join(rng.choice(WORDS) for _ in range(n_words))
    return f"You are desk assistant {k} of the town archive. House rules: {rules}."


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def serve_exe() -> str:
    exe = Path(sys.executable).parent / "hologram-serve"
    return str(exe) if exe.is_file() else "hologram-serve"


def smaps_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def processes() -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in processes():
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def memory(root: int) -> dict[str, Any]:
    """RSS/PSS (MiB) of each replica process and the RSS of the rest of the tree."""
    tree = descendants(root)
    cmds = processes()
    replicas = [p for p in tree if "ServeReplica:hologram:hologram" in cmds.get(p, "")]
    rows = [{"pid": p, "rss_mib": smaps_kib(p).get("Rss", 0) / 1024,
             "pss_mib": smaps_kib(p).get("Pss", 0) / 1024} for p in sorted(replicas)]
    rest = sum(smaps_kib(p).get("Rss", 0) for p in tree - set(replicas)) / 1024
    rest_pss = sum(smaps_kib(p).get("Pss", 0) for p in tree - set(replicas)) / 1024
    return {"replicas": rows, "other_rss_mib": rest, "other_pss_mib": rest_pss}


async def wait_ready(client: httpx.AsyncClient, base: str, proc: subprocess.Popen[bytes],
                     log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if (await client.get(base + "/health", timeout=2)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"server not ready:\n{log.read_text()[-2000:]}")


async def drive(client: httpx.AsyncClient, base: str, plan: list[int], concurrency: int,
                max_tokens: int) -> dict[str, Any]:
    systems = [system_prompt(k) for k in range(N_SYSTEMS)]
    gate = asyncio.Semaphore(concurrency)
    prompt = cached = 0
    where: Counter[tuple[int, str]] = Counter()
    errors: list[str] = []

    async def one(i: int, k: int) -> None:
        nonlocal prompt, cached
        async with gate:
            r = await client.post(base + "/v1/chat/completions", timeout=300, json={
                "model": "hologram-completion-v1", "max_tokens": max_tokens,
                "temperature": 0,
                "messages": [{"role": "system", "content": systems[k]},
                             {"role": "user", "content": f"Question {i}: which rule is first?"}]})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            usage = r.json()["usage"]
            prompt += usage["prompt_tokens"]
            cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            where[(k, r.headers.get("x-hologram-replica", "?"))] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, k) for i, k in enumerate(plan)))
    wall = time.perf_counter() - t0
    per_system = {k: sorted(((rep, n) for (kk, rep), n in where.items() if kk == k),
                            key=lambda x: -x[1]) for k in range(N_SYSTEMS)}
    return {"prompt_tokens": prompt, "cached_tokens": cached,
            "ratio": cached / prompt if prompt else 0.0, "wall_s": wall,
            "per_system": per_system, "errors": errors}


async def measure(base: str, proc: subprocess.Popen[bytes], log: Path,
                  args: argparse.Namespace, plan: list[int]) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False,
                                 limits=httpx.Limits(max_connections=64)) as client:
        await wait_ready(client, base, proc, log)
        return await drive(client, base, plan, args.concurrency, args.max_tokens)


def run_config(router: str, kv_tokens: int | None, args: argparse.Namespace,
               plan: list[int], logs: Path, want_memory: bool) -> dict[str, Any]:
    port = free_port()
    cmd = [serve_exe(), "--ray", "--replicas", "2", "--threads", "1", "--port", str(port),
           "--ray-router", router, "--parallel", str(args.concurrency)]
    if kv_tokens is not None:
        cmd += ["--kv-tokens", str(kv_tokens)]
    log = logs / f"{router}-{kv_tokens}.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    base = f"http://{HOST}:{port}"
    try:
        out = asyncio.run(measure(base, proc, log, args, plan))
        if want_memory:
            out["memory"] = memory(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--kv-tokens", type=int, action="append", default=None, metavar="N",
                   help="KV sizes to compare besides the default (default: 1536); repeatable")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)
    plan = [rng.randrange(N_SYSTEMS) for _ in range(args.requests)]
    logs = Path(tempfile.mkdtemp(prefix="serve_ray_"))
    print(f"{args.requests} chat requests, {args.concurrency} at a time, {N_SYSTEMS} system "
          f"prompts, 2 replicas x 1 thread, {os.cpu_count()} CPUs; logs in {logs}", flush=True)
    first = True
    for kv in [None, *(args.kv_tokens or [1536])]:
        for router in ("prefix", "pow2"):
            r = run_config(router, kv, args, plan, logs, first)
            kv_name = "default" if kv is None else str(kv)
            print(f"kv {kv_name:>7}  {router:>6}: cached {r['cached_tokens']:>6} of "
                  f"{r['prompt_tokens']:>6} prompt tokens = {100 * r['ratio']:5.1f}%  "
                  f"({r['wall_s']:.1f} s)", flush=True)
            for k, spread in r["per_system"].items():
                print(f"      system {k}: " + ", ".join(f"{rep} x{n}" for rep, n in spread))
            for e in r["errors"][:5]:
                print(f"      error: {e}")
            if first and "memory" in r:
                m = r["memory"]
                for row in m["replicas"]:
                    print(f"      replica pid {row['pid']}: RSS {row['rss_mib']:.0f} MiB, "
                          f"PSS {row['pss_mib']:.0f} MiB")
                print(f"      Ray's own processes + driver: RSS {m['other_rss_mib']:.0f} MiB, "
                      f"PSS {m['other_pss_mib']:.0f} MiB")
                first = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
