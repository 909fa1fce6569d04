"""llama-bench-style rows for hologram and, when llama-cpp-python is importable, llama.cpp on
the same model file and thread count, in the same run, with the ratio.

    python benches/bench.py                       # default model, threads 1 and 2
    python benches/bench.py -m model.gguf -m other.gguf -t 2 -r 5
    python benches/bench.py --llama-lib LLAMA_CPP_BUILD/bin -m /tmp/hologram-shapes/...gguf
    python benches/bench.py -p 64 -n 16 -r 1      # a quick check that everything runs

Rows (shared/design/BENCHMARKS.md): pp512 = one forward pass over 512 prompt tokens from an
empty cache (logits of the last token only); tg128 = 128 sequential one-token passes after a
short prompt (-p/-n change the counts). t/s is the median of `-r` runs after one warm-up. Each
engine runs in its own subprocess so its RSS is its own.

Printed with the rows: the CPU model and its SIMD flags, the kernels each engine chose
(hologram: `_core.kernel_info()` and the path each weight format of the model takes; llama.cpp:
its system info), the read bandwidth measured by `bandwidth.py` with each thread count and tg as
a fraction of the decode ceiling it implies (see bandwidth.py for the bytes-per-token
approximation), and peak and steady RSS (steady = VmRSS after the runs, the model loaded; both
include the Python interpreter and numpy, about 40 MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bandwidth

N_PP = 512
N_TG = 128


def _tokens(n_vocab: int, n: int, seed: int = 42) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(200, n_vocab - 200) for _ in range(n)]


def _rss_mib() -> float:
    """Peak RSS of this process's own address space so far (VmHWM). Not getrusage's
    ru_maxrss: Linux carries that across fork and exec, so a worker would report the
    parent's peak (the bandwidth benchmark's buffer) instead of its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return 0.0


def _rss_now() -> dict[str, float]:
    """Current RSS of this process and its anonymous / file-backed parts, MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(val.split()[0]) / 1024.0
    return {
        "rss_steady_mib": out.get("VmRSS", 0.0),
        "rss_steady_anon_mib": out.get("RssAnon", 0.0),
        "rss_steady_file_mib": out.get("RssFile", 0.0),
    }


def _rss(rss_load: float) -> dict[str, Any]:
    return {"rss_load_mib": rss_load, "rss_peak_mib": _rss_mib()} | _rss_now()


def worker_hologram(model: str, threads: int, reps: int) -> dict[str, Any]:
    import hologram
    from hologram import _core

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

    info = dict(_core.kernel_info())
    return _measure(pp, tg, reps) | _rss(rss_load) | {"kernels": info}


def worker_llamacpp(model: str, threads: int, reps: int) -> dict[str, Any]:
    import llama_cpp
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
    toks = _tokens(llm.n_vocab(), max(N_PP, N_TG + 8))

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

    sysinfo = llama_cpp.llama_print_system_info().decode(errors="replace")
    return _measure(pp, tg, reps) | _rss(rss_load) | {"kernels": {"system_info": sysinfo}}


def _measure(pp: Any, tg: Any, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fn in (("pp", pp), ("tg", tg)):
        fn()  # warm-up
        runs = [fn() for _ in range(reps)]
        out[name] = {"median": statistics.median(runs), "runs": runs}
    return out


def run_worker(engine: str, model: str, threads: int, reps: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--worker", engine, "-m", model, "-t", str(threads), "-r", str(reps),
           "-p", str(N_PP), "-n", str(N_TG)]
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


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown"


def cpu_flags() -> list[str]:
    """The SIMD flags that matter to the kernels (the issue's grep, with digits so that
    avx512_bf16 is not cut to avx512_bf)."""
    text = Path("/proc/cpuinfo").read_text()
    return sorted(set(re.findall(r"\bavx512[a-z0-9_]*|\bavx2\b|\bavx_vnni\b", text)))


def weight_formats(model: str) -> dict[str, int]:
    """Bytes of the model's matrices per GGML type, largest first (the token embedding table
    only when the output projection is tied to it: otherwise it is a row lookup)."""
    import gguf

    r = gguf.GGUFReader(model)
    names = {t.name for t in r.tensors}
    by: dict[str, int] = {}
    for t in r.tensors:
        if len(t.shape) < 2 or (t.name == "token_embd.weight" and "output.weight" in names):
            continue
        by[t.tensor_type.name] = by.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return dict(sorted(by.items(), key=lambda kv: -kv[1]))


def hologram_paths(info: dict[str, Any], formats: dict[str, int]) -> str:
    """The kernel path each weight format of the model takes, e.g. 'Q4_0 packed-vnni, Q6_K avx2'."""
    packed = set(info.get("packed_formats", [])) if info.get("packed") else set()
    packed_name = "packed-" + str(info.get("packed_kernel", "vnni" if info.get("vnni") else "avx2"))
    return ", ".join(f"{f} {packed_name if f in packed else info.get('isa', '?')}" for f in formats)


def llamacpp_features(sysinfo: str) -> str:
    """The SIMD features and repack flag llama.cpp's CPU backend reports as on."""
    on = re.findall(r"(\w+) = 1", sysinfo)
    keep = [f for f in on if f.startswith(("AVX512", "AVX_VNNI", "AMX")) or f in ("AVX2", "REPACK")]
    return " ".join(keep)


def main() -> None:
    global N_PP, N_TG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", action="append", help="GGUF file (repeatable); default: SmolLM2")
    ap.add_argument("-t", "--threads", type=int, action="append", help="thread counts (default 1 and 2)")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-p", "--n-prompt", type=int, default=N_PP, help="prompt tokens (pp row)")
    ap.add_argument("-n", "--n-gen", type=int, default=N_TG, help="generated tokens (tg row)")
    ap.add_argument("--llama-lib", help="llama.cpp's bin/ with libllama (sets LLAMA_CPP_LIB_PATH)")
    ap.add_argument("--no-llamacpp", action="store_true", help="hologram rows only")
    ap.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth measurement")
    ap.add_argument("--bw-size-mib", type=int, default=bandwidth.DEFAULT_MIB,
                    help="array size of the bandwidth measurement")
    ap.add_argument("--worker", choices=["hologram", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    N_PP, N_TG = a.n_prompt, a.n_gen
    if a.worker:
        fn = worker_hologram if a.worker == "hologram" else worker_llamacpp
        print(json.dumps(fn(a.model[0], a.threads[0], a.reps)))
        return

    if not a.model:
        import hologram

        a.model = [str(hologram.default_model_path())]
    for m in a.model:
        if not Path(m).is_file():
            raise SystemExit(f"no such model file: {m}")
    if a.llama_lib:
        os.environ["LLAMA_CPP_LIB_PATH"] = str(Path(a.llama_lib).resolve())
    threads = a.threads or [1, 2]
    engines = ["hologram"] + (["llama.cpp"] if not a.no_llamacpp and have_llamacpp() else [])
    if "llama.cpp" not in engines and not a.no_llamacpp:
        print("# llama-cpp-python is not importable (set --llama-lib?): hologram rows only",
              file=sys.stderr)
    pp_name, tg_name = f"pp{N_PP}", f"tg{N_TG}"

    machine: dict[str, Any] = {"cpu": cpu_model(), "flags": cpu_flags(), "bandwidth_gbs": {}}
    print(f"# cpu: {machine['cpu']} ({os.cpu_count()} logical CPUs)")
    print(f"# flags: {' '.join(machine['flags']) or '(none)'}")
    if not a.no_bandwidth:
        for t in threads:
            machine["bandwidth_gbs"][t] = bandwidth.measure(t, a.bw_size_mib)
        bws = ", ".join(f"{bw:.1f} GB/s ({t} thr)" for t, bw in machine["bandwidth_gbs"].items())
        print(f"# read bandwidth (benches/bandwidth.py): {bws}")

    results: list[dict[str, Any]] = []
    header_done = False
    for model in a.model:
        size = f"{os.path.getsize(model) / 2**20:.0f} MiB"
        formats = weight_formats(model)
        per_tok, how = bandwidth.bytes_per_token(model)
        weights = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in formats.items())
        print(f"# {Path(model).name}: weights {weights}; "
              f"decode reads ~{per_tok / 2**20:.0f} MiB/token ({how})")
        for t in threads:
            res = {e: run_worker(e, model, t, a.reps) for e in engines}
            if not header_done:
                for e in engines:
                    r = res[e]
                    if r is not None and e == "hologram":
                        print(f"# hologram kernel_info: {json.dumps(r['kernels'])}")
                    elif r is not None:
                        print(f"# llama.cpp system info: {r['kernels']['system_info'].strip()}")
                print("| model | size | engine | threads | test | t/s (median) | ratio "
                      "| of bw ceiling | peak RSS MiB | steady RSS MiB | kernels |")
                print("|---|---|---|---|---|---|---|---|---|---|---|")
                header_done = True
            bw = machine["bandwidth_gbs"].get(t)
            ceiling = bw * 1e9 / per_tok if bw else None
            for test, name in (("pp", pp_name), ("tg", tg_name)):
                base = res.get("llama.cpp")
                for e in engines:
                    r = res[e]
                    if r is None:
                        continue
                    tps = r[test]["median"]
                    ratio = ""
                    if base is not None and e == "hologram":
                        ratio = f"{tps / base[test]['median']:.2f}x"
                    frac = ""
                    if test == "tg" and ceiling:
                        frac = f"{tps / ceiling:.2f} of {ceiling:.1f}"
                    if e == "hologram":
                        kern = hologram_paths(r["kernels"], formats)
                    else:
                        kern = llamacpp_features(r["kernels"]["system_info"])
                    print(
                        f"| {Path(model).name} | {size} | {e} | {t} | {name} | {tps:.1f} | {ratio} "
                        f"| {frac} | {r['rss_peak_mib']:.0f} | {r['rss_steady_mib']:.0f} | {kern} |",
                        flush=True,
                    )
            results.append({"model": model, "threads": t, "n_prompt": N_PP, "n_gen": N_TG,
                            "bytes_per_token": per_tok, "ceiling_tps": ceiling, "formats": formats,
                            "machine": machine, "results": res})
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
