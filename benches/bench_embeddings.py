"""Embeddings per second for all-MiniLM-L6-v2: hologram (F32 and Q8_0 GGUF) and, when it is
installed, sentence-transformers on torch CPU, side by side, with the ratio.

    python benches/bench_embeddings.py                  # threads 1 and 2, batches 1, 32, 256
    python benches/bench_embeddings.py -t 2 -b 32 -r 5 --json out.json
    python benches/bench_embeddings.py -t 1 -t 2 -b 32 -b 256 -r 3 --rounds 4   # interleaved

Workload: deterministic English-like sentences of about 16 tokens each (counted with the model's
tokenizer, [CLS] and [SEP] included; the mean is printed). A timed run embeds a fixed number of
sentences (at least `--min-sentences`, in batches of `batch`) end to end from text: tokenization
plus one pass per batch (hologram: `Engine.tokenize` + `Engine.embed_batch`; sentence-transformers:
`model.encode(batch, batch_size=len(batch), normalize_embeddings=True)`). sentences/s is the
median of `-r` runs after one warm-up; with `--rounds N` every engine runs N times in turn (ST,
hologram F32, hologram Q8_0, ST, ...) and the median is over all N x `-r` runs, so that a drift in
the machine's speed (shared vCPUs) hits every engine alike. Each engine and thread count runs in
its own subprocess (torch with `torch.set_num_threads(T)`; OMP/MKL/RAYON thread counts are capped
at T too).

Fidelity: the min / mean cosine between hologram's vectors and sentence-transformers' for all
benchmark sentences is printed (both are L2-normalized mean-pooled vectors).

sentence-transformers is a benchmark-only dependency (`pip install sentence-transformers`);
without it only hologram rows are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TARGET_TOKENS = 16  # per sentence, [CLS] and [SEP] included
SEED = 1234
ST = "sentence-transformers"

_WORD_TEXT = """
the a of and to in is was for on that with as it by at from his her they we you this be are
have had not but or one all were when there can an which their said if do will each about how
up out them then she many some so these would other into has more two like him time see could
no make than first been its who now people my made over did down only way find use may water
long little very after words called just where most know get through back much go good new
write our me man too any day same right look think also around another came come work three
word must because does part even place well such here take why things help put years different
away again off went old number great tell men say small every found still between name should
home big give air line set own under read last never us left end along while might next sound
below saw something thought both few those always looked show large often together asked house
world going want school important until form food keep children feet land side without boy once
animals life enough took sometimes four head above kind began almost live page got earth need
far hand high year mother light country father let night following picture being study second
eyes soon times story boys since white days ever paper hard near sentence better best across
during today others however sure means knew try told young miles sun ways thing whole hear
example heard several change answer room sea against top turned learn point city play toward
five using himself usually river model engine fast quiet green window morning garden table
"""
_WORDS = tuple(_WORD_TEXT.split())


def make_sentences(tokenize: Callable[[str], list[int]], n: int, seed: int = SEED) -> list[str]:
    """`n` distinct sentences, each grown word by word until it has >= TARGET_TOKENS tokens."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        words: list[str] = []
        s = ""
        while True:
            words.append(rng.choice(_WORDS))
            s = " ".join(words).capitalize() + "."
            if len(tokenize(s)) >= TARGET_TOKENS:
                break
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _workload(sentences: Sequence[str], batch: int, min_sentences: int) -> list[list[str]]:
    """The batches of one timed run: ceil(max(batch, min_sentences) / batch) batches of `batch`."""
    n_batches = max(1, -(-min_sentences // batch))
    return [
        [sentences[(i * batch + j) % len(sentences)] for j in range(batch)]
        for i in range(n_batches)
    ]


def _measure(
    embed: Callable[[list[str]], Any],
    sentences: Sequence[str],
    batches: Sequence[int],
    min_sentences: int,
    reps: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in batches:
        work = _workload(sentences, b, min_sentences)
        n = sum(len(x) for x in work)

        def run(work: list[list[str]] = work, n: int = n) -> float:
            t0 = time.perf_counter()
            for chunk in work:
                embed(chunk)
            return n / (time.perf_counter() - t0)

        run()  # warm-up
        runs = [run() for _ in range(reps)]
        out[str(b)] = {"median": statistics.median(runs), "runs": runs, "sentences_per_run": n}
    return out


def worker_hologram(a: argparse.Namespace, sentences: list[str]) -> dict[str, Any]:
    import hologram

    eng = hologram.Engine(a.model, n_threads=a.threads)

    def embed(batch: list[str]) -> npt.NDArray[np.float32]:
        return eng.embed_batch([eng.tokenize(s) for s in batch])

    res = _measure(embed, sentences, a.batch, a.min_sentences, a.reps)
    if a.emb_out:
        np.save(a.emb_out, embed(sentences))
    return {"results": res}


def worker_st(a: argparse.Namespace, sentences: list[str]) -> dict[str, Any]:
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")

    def embed(batch: list[str]) -> Any:
        return model.encode(
            batch,
            batch_size=len(batch),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    res = _measure(embed, sentences, a.batch, a.min_sentences, a.reps)
    if a.emb_out:
        np.save(a.emb_out, np.asarray(embed(sentences), dtype=np.float32))
    return {
        "results": res,
        "torch": str(torch.__version__),
        "sentence_transformers": str(sentence_transformers.__version__),
        "torch_threads": torch.get_num_threads(),
    }


def run_worker(
    engine: str,
    model: str,
    threads: int,
    a: argparse.Namespace,
    sent_file: Path,
    emb_out: Path | None,
) -> dict[str, Any] | None:
    cmd = [
        sys.executable, __file__, "--worker", engine, "--model", model, "-t", str(threads),
        "-r", str(a.reps), "--min-sentences", str(a.min_sentences), "--sentences-file", str(sent_file),
    ]  # fmt: skip
    for b in a.batch:
        cmd += ["-b", str(b)]
    if emb_out is not None:
        cmd += ["--emb-out", str(emb_out)]
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[k] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if p.returncode != 0:
        print(
            f"# {engine} (threads {threads}) failed: {p.stderr.strip().splitlines()[-3:]}",
            file=sys.stderr,
        )
        return None
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def have_st() -> bool:
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # not installed, or a broken torch install
        return False
    return True


def _cosines(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    x64 = x.astype(np.float64)
    y64 = y.astype(np.float64)
    num = (x64 * y64).sum(axis=1)
    den = np.linalg.norm(x64, axis=1) * np.linalg.norm(y64, axis=1)
    cos: npt.NDArray[np.float64] = num / den
    return cos


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "-t", "--threads", type=int, action="append", help="thread counts (default 1 and 2)"
    )
    ap.add_argument(
        "-b", "--batch", type=int, action="append", help="batch sizes (default 1, 32, 256)"
    )
    ap.add_argument(
        "-r", "--reps", type=int, default=5, help="timed runs after one warm-up (default 5)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of every engine in turn; the median is over all rounds' runs (default 1)",
    )
    ap.add_argument(
        "--min-sentences",
        type=int,
        default=32,
        help="sentences per timed run, at least (default 32)",
    )
    ap.add_argument(
        "--f32", help="hologram F32 GGUF (default: hologram.default_embedding_model_path())"
    )
    ap.add_argument("--no-q8", action="store_true", help="skip the Q8_0 conversion and its rows")
    ap.add_argument(
        "--no-st", action="store_true", help="skip sentence-transformers even if installed"
    )
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", choices=["hologram", ST], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--sentences-file", help=argparse.SUPPRESS)
    ap.add_argument("--emb-out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.batch = a.batch or [1, 32, 256]
    if a.worker:
        a.threads = a.threads[0]
        sentences: list[str] = json.loads(Path(a.sentences_file).read_text())
        fn = worker_hologram if a.worker == "hologram" else worker_st
        print(json.dumps(fn(a, sentences)))
        return

    import hologram
    from hologram.convert import convert

    threads = a.threads or [1, 2]
    f32 = a.f32 or str(hologram.default_embedding_model_path())
    load_start = _loadavg()
    t_start = time.perf_counter()

    tok_engine = hologram.Engine(f32, n_threads=1)
    sentences = make_sentences(tok_engine.tokenize, max(max(a.batch), a.min_sentences))
    n_tok = [len(tok_engine.tokenize(s)) for s in sentences]
    del tok_engine
    mean_tok = statistics.mean(n_tok)
    print(
        f"# {len(sentences)} sentences, tokens each (with [CLS]/[SEP]): mean {mean_tok:.2f}, "
        f"min {min(n_tok)}, max {max(n_tok)}; e.g. {sentences[0]!r}"
    )

    use_st = not a.no_st and have_st()
    if not use_st:
        why = "--no-st" if a.no_st else "sentence-transformers/torch is not installed"
        print(f"# {why}: hologram rows only, no ratio", file=sys.stderr)
    st_dir = str(hologram.models.minilm_source_dir())

    results: list[dict[str, Any]] = []
    cos_report: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_emb_") as td:
        tdir = Path(td)
        sent_file = tdir / "sentences.json"
        sent_file.write_text(json.dumps(sentences))
        variants: list[tuple[str, str, str]] = [("hologram", "F32", f32)]  # (engine, type, model)
        if not a.no_q8:
            q8 = tdir / "all-MiniLM-L6-v2-q8_0.gguf"
            t0 = time.perf_counter()
            convert(st_dir, q8, out_type="q8_0")
            print(
                f"# Q8_0 conversion: {time.perf_counter() - t0:.1f} s, {q8.stat().st_size / 2**20:.1f} MiB"
            )
            variants.append(("hologram", "Q8_0", str(q8)))
        if use_st:
            variants.insert(0, (ST, "F32 (torch)", st_dir))

        for t in threads:
            # Rounds alternate the engines so that each engine's runs are spread over the same
            # stretch of time (on a shared machine the speed drifts by tens of percent).
            for rnd in range(a.rounds):
                for engine, typ, model in variants:
                    first = t == threads[0] and rnd == 0
                    emb = tdir / f"emb_{engine}_{typ.split()[0]}.npy" if first else None
                    r = run_worker(engine, model, t, a, sent_file, emb)
                    if r is None:
                        continue
                    prev = next(
                        (
                            x
                            for x in results
                            if (x["engine"], x["type"], x["threads"]) == (engine, typ, t)
                        ),
                        None,
                    )
                    if prev is None:
                        results.append(
                            {"engine": engine, "type": typ, "threads": t, "model": model} | r
                        )
                        continue
                    for b, v in r["results"].items():
                        pv = prev["results"][b]
                        pv["runs"] += v["runs"]
                        pv["median"] = statistics.median(pv["runs"])

        if use_st:
            st_emb_path = tdir / f"emb_{ST}_F32.npy"
            for typ in ("F32", "Q8_0"):
                hp = tdir / f"emb_hologram_{typ}.npy"
                if st_emb_path.exists() and hp.exists():
                    cs = _cosines(np.load(hp), np.load(st_emb_path))
                    cos_report[typ] = {"min": float(cs.min()), "mean": float(cs.mean())}

    def median(engine: str, typ_prefix: str, t: int, b: int) -> float | None:
        for r in results:
            if r["engine"] == engine and r["type"].startswith(typ_prefix) and r["threads"] == t:
                v: float = r["results"][str(b)]["median"]
                return v
        return None

    print(
        f"| model | engine | type | threads | batch | sentences/s (median of {a.rounds} x {a.reps} after a warm-up each) | ratio vs {ST} |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in threads:
        for b in a.batch:
            base = median(ST, "F32", t, b)
            for r in results:
                if r["threads"] != t:
                    continue
                sps: float = r["results"][str(b)]["median"]
                ratio = "1.00x" if r["engine"] == ST else (f"{sps / base:.2f}x" if base else "")
                print(
                    f"| all-MiniLM-L6-v2 | {r['engine']} | {r['type']} | {t} | {b} | {sps:.1f} | {ratio} |"
                )
    for typ, c in cos_report.items():
        print(
            f"# cosine hologram {typ} vs {ST} over {len(sentences)} sentences: min {c['min']:.7f}, mean {c['mean']:.7f}"
        )
    st_info = next((r for r in results if r["engine"] == ST), None)
    if st_info is not None:
        print(
            f"# {ST} {st_info['sentence_transformers']}, torch {st_info['torch']} "
            f"(torch.get_num_threads() at threads={st_info['threads']}: {st_info['torch_threads']})"
        )
    load_end = _loadavg()
    elapsed = time.perf_counter() - t_start
    print(
        f"# load average at start {load_start}, at end {load_end}; nproc {os.cpu_count()}; total {elapsed:.0f} s"
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "sentences": len(sentences),
                    "mean_tokens": mean_tok,
                    "min_sentences_per_run": a.min_sentences,
                    "reps": a.reps,
                    "rounds": a.rounds,
                    "loadavg_start": load_start,
                    "loadavg_end": load_end,
                    "nproc": os.cpu_count(),
                    "cosine_vs_st": cos_report,
                    "runs": results,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
