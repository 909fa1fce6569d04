"""llama-bench-style rows for hologram and, when llama-cpp-python is importable, llama.cpp on
the same model file and thread count, in the same run, with the ratio.

    python benches/bench.py                       # default model, threads 1 and 2
    python benches/bench.py -m model.gguf -t 2 -r 5

Rows (shared/design/BENCHMARKS.md): pp512 = one forward pass over 512 prompt tokens from an
empty cache (logits of the last token only); tg128 = 128 sequential one-token passes after a
short prompt. t/s is the median of `-r` runs after one warm-up. Each engine runs in its own
subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

N_PP = 512
N_TG = 128


def _tokens(n_vocab: int, n: int, seed: int = 42) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(200, n_vocab - 200) for _ in range(n)]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_hologram(model: str, threads: int, reps: int) -> dict[str, Any]:
    import hologram

    # One engine step may read the whole 512-token prompt (llama-bench's pp512 is one pass).
    eng = hologram.Engine(model, n_ctx=N_PP + N_TG + 16, n_threads=threads, n_batch=N_PP,
                          n_seq_max=1, step_tokens=N_PP)
    rss_load = _rss_mib()
    toks = _tokens(eng.n_vocab, N_PP)
    runs = iter(range(1, 1 << 30))

    def pp() -> float:
        # Fresh tokens every run: the engine's prefix cache would otherwise serve the prompt.
        prompt = _tokens(eng.n_vocab, N_PP, seed=next(runs))
        t0 = time.perf_counter()  # the engine starts as soon as the stream is submitted
        s = eng.stream(prompt, max_tokens=1, temperature=0.0, ignore_eos=True)
        s.next_step()
        dt = time.perf_counter() - t0
        s.close()
        return N_PP / dt

    def tg() -> float:
        s = eng.stream(toks[:8], max_tokens=N_TG + 1, temperature=0.0, ignore_eos=True)
        s.next_step()  # the prompt
        t0 = time.perf_counter()
        for _ in range(N_TG):
            s.next_step()
        dt = time.perf_counter() - t0
        s.close()
        return N_TG / dt

    return _measure(pp, tg, reps) | {"rss_load_mib": rss_load, "rss_peak_mib": _rss_mib()}


def worker_llamacpp(model: str, threads: int, reps: int) -> dict[str, Any]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=model,
        n_ctx=N_PP + N_TG + 16,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=N_PP,
        n_ubatch=N_PP,
        verbose=False,
    )
    rss_load = _rss_mib()
    toks = _tokens(llm.n_vocab(), N_PP)

    def pp() -> float:
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(toks)
        return N_PP / (time.perf_counter() - t0)

    def tg() -> float:
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(toks[:8])
        t0 = time.perf_counter()
        for t in toks[8 : 8 + N_TG]:
            llm.eval([t])
        return N_TG / (time.perf_counter() - t0)

    return _measure(pp, tg, reps) | {"rss_load_mib": rss_load, "rss_peak_mib": _rss_mib()}


def _measure(pp: Any, tg: Any, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fn in (("pp512", pp), ("tg128", tg)):
        fn()  # warm-up
        runs = [fn() for _ in range(reps)]
        out[name] = {"median": statistics.median(runs), "runs": runs}
    return out


def run_worker(engine: str, model: str, threads: int, reps: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--worker", engine, "-m", model, "-t", str(threads), "-r", str(reps)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        print(f"# {engine} failed: {p.stderr.strip().splitlines()[-1:] }", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def have_llamacpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", action="append", help="GGUF file (repeatable); default: SmolLM2")
    ap.add_argument("-t", "--threads", type=int, action="append", help="thread counts (default 1 and 2)")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--worker", choices=["hologram", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    if a.worker:
        fn = worker_hologram if a.worker == "hologram" else worker_llamacpp
        print(json.dumps(fn(a.model[0], a.threads[0], a.reps)))
        return

    if not a.model:
        import hologram

        a.model = [str(hologram.default_model_path())]
    threads = a.threads or [1, 2]
    engines = ["hologram"] + (["llama.cpp"] if have_llamacpp() else [])
    if "llama.cpp" not in engines:
        print("# llama-cpp-python is not installed: hologram rows only", file=sys.stderr)
    print("| model | size | engine | threads | test | t/s (median) | ratio | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for model in a.model:
        size = f"{os.path.getsize(model) / 2**20:.0f} MiB"
        for t in threads:
            res = {e: run_worker(e, model, t, a.reps) for e in engines}
            for test in ("pp512", "tg128"):
                base = res.get("llama.cpp")
                for e in engines:
                    r = res[e]
                    if r is None:
                        continue
                    tps = r[test]["median"]
                    ratio = ""
                    if base is not None and e == "hologram":
                        ratio = f"{tps / base[test]['median']:.2f}x"
                    print(
                        f"| {Path(model).name} | {size} | {e} | {t} | {test} | {tps:.1f} | {ratio} | "
                        f"{r['rss_peak_mib']:.0f} |",
                        flush=True,
                    )
            results.append({"model": model, "threads": t, "results": res})
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
