"""Streaming-read memory bandwidth of this machine, and the decode ceiling it puts on a model.

    python benches/bandwidth.py                   # GB/s with 1 and 2 threads
    python benches/bandwidth.py -t 2 model.gguf   # and the tg ceiling of each model, in t/s

Bandwidth: each thread sums its share of a 1 GiB int64 array (`--size-mib`) with numpy, which
releases the GIL, so T threads read T disjoint parts at once; the best of `-r` passes is kept
(1 GB = 1e9 bytes). numpy's int64 sum runs at the speed of a hand-written AVX2 streaming read:
on the AVX-512 EPYC it measured 19.2 / 30.1 GB/s (1 / 2 threads) against 20.0 / 31.8 GB/s for
a C loop of 256-bit loads, both on the loaded machine.

Ceiling: one decoded token reads every weight once, so tokens/s <= bandwidth / bytes per token,
with bytes per token approximated as the file's tensor bytes minus the token-embedding table
(a token reads one row of it), the table counted in full when the output projection is tied to
it (no `output.weight`). Left out: the KV cache and activations (a few MB at tg128's <= 136
positions), and an engine's own weight layout (hologram repacks some formats at load into a
slightly larger copy; it still reads about the same bytes).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MIB = 1024


def measure(threads: int, size_mib: int = DEFAULT_MIB, reps: int = 10) -> float:
    """Best streaming-read bandwidth over `reps` passes, in GB/s (1e9 bytes/s)."""
    n = size_mib * 2**20 // 8
    a = np.ones(n, dtype=np.int64)  # written once: every page is resident
    parts = np.array_split(a, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(np.sum, parts))  # warm-up (threads started, TLB)
        for _ in range(reps):
            t0 = time.perf_counter()
            total = sum(ex.map(np.sum, parts))
            dt = time.perf_counter() - t0
            if total != n:
                raise RuntimeError("bandwidth: wrong sum")
            best = max(best, a.nbytes / dt / 1e9)
    return best


def bytes_per_token(model: str | Path) -> tuple[int, str]:
    """Approximate bytes one decode step reads from `model`'s weights, and how it was counted."""
    import gguf

    r = gguf.GGUFReader(model)
    sizes = {t.name: int(t.n_bytes) for t in r.tensors}
    total = sum(sizes.values())
    embd = sizes.get("token_embd.weight", 0)
    if "output.weight" in sizes or embd == 0:
        return total - embd, "tensor bytes minus token_embd"
    return total, "tensor bytes, token_embd in full: the output is tied to it"


def ceiling(bandwidth_gbs: float, model: str | Path) -> float:
    """Decode tokens/s the bandwidth allows for `model`."""
    return bandwidth_gbs * 1e9 / bytes_per_token(model)[0]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", nargs="*", help="GGUF files to give the decode ceiling of")
    ap.add_argument(
        "-t", "--threads", type=int, action="append", help="thread counts (default 1 and 2)"
    )
    ap.add_argument("--size-mib", type=int, default=DEFAULT_MIB, help="array read per pass")
    ap.add_argument("-r", "--reps", type=int, default=10)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    out: dict[str, Any] = {"size_mib": a.size_mib, "bandwidth_gbs": {}, "models": {}}
    for t in a.threads or [1, 2]:
        bw = measure(t, a.size_mib, a.reps)
        out["bandwidth_gbs"][t] = bw
        print(f"read bandwidth, {t} thread{'s' if t > 1 else ''}: {bw:.1f} GB/s")
    for m in a.model:
        b, how = bytes_per_token(m)
        ceil = {t: bw * 1e9 / b for t, bw in out["bandwidth_gbs"].items()}
        out["models"][m] = {"bytes_per_token": b, "counted": how, "ceiling_tps": ceil}
        per = ", ".join(f"{c:.1f} t/s ({t} thr)" for t, c in ceil.items())
        print(f"{Path(m).name}: {b / 2**20:.0f} MiB per token ({how}); decode ceiling {per}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
