"""Random-weight llama models of real shapes, for speed measurements only (the weights are
noise: the text they generate means nothing). Model files are written outside the repository
and never committed.

    python benches/make_shapes.py --llama-bin LLAMA_CPP_BUILD/bin            # TinyLlama shape
    python benches/make_shapes.py --llama-bin DIR --q4-0 --7b --out DIR

Each shape is written as F16 (or F32: --src-type f32) with `gguf.GGUFWriter`, tensor by tensor
from a fixed seed (weights normal * 0.02, norm weights 1), then turned into Q4_K_M (and Q4_0
with --q4-0) by llama.cpp's `llama-quantize`, as a user's file would be made. The vocabulary
and tokenizer metadata are copied from the default SmolLM2 model, so the files load anywhere
(vocab 49152, not TinyLlama's 32000: the embedding and output matrices are 1.5x TinyLlama's).

Shapes (llama architecture, untied output matrix as TinyLlama has):
- tinyllama: 2048 wide, 22 layers, 32 heads, 4 KV heads, FFN 5632 (1.17 B parameters with this
  vocabulary; F16 2.2 GiB, Q4_K_M 684 MiB, Q4_0 655 MiB);
- 7b (--7b): 4096 wide, 32 layers, 32 heads, 8 KV heads, FFN 14336 (7.38 B; F16 13.8 GiB,
  Q4_K_M about 4.2 GiB).
--layers N keeps a shape's width but writes N layers (a quick check of the 7B shape; the file
name says so).

The F16 source is deleted after quantizing unless --keep-src; existing outputs are kept unless
--force. --verify loads each output with hologram and generates a few tokens, and runs
`llama-bench -p 16 -n 4` on it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np

DEFAULT_OUT = Path("/tmp/hologram-shapes")


@dataclass(frozen=True)
class Shape:
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    rope_base: float


SHAPES = {
    "tinyllama": Shape("tinyllama-1.1b", 2048, 22, 32, 4, 5632, 2048, 10000.0),
    "7b": Shape("llama-7b", 4096, 32, 32, 8, 14336, 4096, 500000.0),
}

# What llama-quantize calls the formats, and our file-name suffixes.
QUANTS = {"q4_k_m": "Q4_K_M", "q4_0": "Q4_0"}


def vocab_source() -> Path:
    import hologram

    return Path(hologram.default_model_path())


def tokenizer_fields(
    path: Path,
) -> list[tuple[str, Any, gguf.GGUFValueType, gguf.GGUFValueType | None]]:
    """Every `tokenizer.*` key of the GGUF file at `path` (tokens, scores, types, merges,
    special ids, model, pre, chat template...), as (key, value, type, array item type)."""
    r = gguf.GGUFReader(path)
    out = []
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = gguf.GGUFValueType(f.types[0])
        sub = gguf.GGUFValueType(f.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        out.append((key, f.contents(), vtype, sub))
    return out


def n_vocab_of(fields: list[tuple[str, Any, gguf.GGUFValueType, gguf.GGUFValueType | None]]) -> int:
    for key, val, _, _ in fields:
        if key == "tokenizer.ggml.tokens":
            return len(val)
    raise SystemExit("the vocabulary source has no tokenizer.ggml.tokens")


def tensor_plan(s: Shape, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape = (rows, cols)) in llama.cpp's order; 1-D tensors are norm weights."""
    head_dim = s.n_embd // s.n_head
    kv = s.n_head_kv * head_dim
    plan: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, s.n_embd))]
    for i in range(s.n_layer):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (s.n_embd,)),
            (b + "attn_q.weight", (s.n_embd, s.n_embd)),
            (b + "attn_k.weight", (kv, s.n_embd)),
            (b + "attn_v.weight", (kv, s.n_embd)),
            (b + "attn_output.weight", (s.n_embd, s.n_embd)),
            (b + "ffn_norm.weight", (s.n_embd,)),
            (b + "ffn_gate.weight", (s.n_ff, s.n_embd)),
            (b + "ffn_up.weight", (s.n_ff, s.n_embd)),
            (b + "ffn_down.weight", (s.n_embd, s.n_ff)),
        ]
    plan += [("output_norm.weight", (s.n_embd,)), ("output.weight", (n_vocab, s.n_embd))]
    return plan


def write_source(s: Shape, path: Path, src_type: str, seed: int, vocab: Path) -> None:
    """Write the unquantized model tensor by tensor (never the whole model in memory)."""
    fields = tokenizer_fields(vocab)
    n_vocab = n_vocab_of(fields)
    dtype = np.float16 if src_type == "f16" else np.float32
    w = gguf.GGUFWriter(path, "llama")
    w.add_type("model")
    w.add_name(f"random {s.name} shape (hologram benches)")
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_dimension_count(s.n_embd // s.n_head)
    w.add_rope_freq_base(s.rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if src_type == "f16" else gguf.LlamaFileType.ALL_F32
    )
    for key, val, vtype, sub in fields:
        w.add_key_value(key, val, vtype, sub)
    plan = tensor_plan(s, n_vocab)
    for name, shape in plan:
        dt = np.dtype(np.float32) if len(shape) == 1 else np.dtype(dtype)
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0 = time.perf_counter()
    for i, (name, shape) in enumerate(plan):
        if len(shape) == 1:
            arr = np.ones(shape, dtype=np.float32)
        else:
            # One generator per tensor: the same seed gives the same tensor whatever came before.
            rng = np.random.default_rng([seed, i])
            arr = rng.standard_normal(shape, dtype=np.float32)
            arr *= np.float32(0.02)
            if dtype != np.float32:
                arr = arr.astype(dtype)
        w.write_tensor_data(arr)
        if i % 20 == 0 or i == len(plan) - 1:
            print(
                f"  {i + 1}/{len(plan)} tensors ({time.perf_counter() - t0:.0f} s)", file=sys.stderr
            )
    w.close()


def quantize(llama_bin: Path, src: Path, dst: Path, qtype: str, threads: int) -> None:
    exe = llama_bin / "llama-quantize"
    if not exe.exists():
        raise SystemExit(f"{exe} not found (build llama.cpp with --target llama-quantize)")
    tmp = dst.with_suffix(".part")
    cmd = [str(exe), str(src), str(tmp), qtype, str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"llama-quantize failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    tmp.rename(dst)


def verify(path: Path, llama_bin: Path | None) -> None:
    import hologram

    eng = hologram.Engine(path, n_ctx=64, n_threads=1, n_seq_max=1)
    r = eng.generate([1, 100, 200, 300], max_tokens=4, temperature=0.0, ignore_eos=True)
    print(
        f"  hologram: {eng.architecture}, n_vocab {eng.n_vocab}, n_embd {eng.n_embd}, "
        f"generated {r.token_ids}"
    )
    del eng
    if llama_bin is not None:
        cmd = [
            str(llama_bin / "llama-bench"),
            "-m",
            str(path),
            "-p",
            "16",
            "-n",
            "4",
            "-t",
            "1",
            "-r",
            "1",
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        rows = [ln for ln in p.stdout.splitlines() if ln.startswith("|")]
        if p.returncode != 0 or not rows:
            raise SystemExit(
                f"llama-bench failed on {path}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
            )
        for ln in rows:
            print("  llama-bench " + ln)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--llama-bin",
        type=Path,
        required=True,
        help="llama.cpp build's bin/ (llama-quantize, llama-bench)",
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    ap.add_argument(
        "--7b", dest="big", action="store_true", help="also the 7B shape (F16 source 13.8 GiB)"
    )
    ap.add_argument("--only-7b", action="store_true", help="the 7B shape only")
    ap.add_argument("--q4-0", action="store_true", help="also Q4_0 files")
    ap.add_argument(
        "--src-type",
        choices=["f16", "f32"],
        default="f16",
        help="type of the unquantized source (f32 doubles its size)",
    )
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2, help="llama-quantize threads")
    ap.add_argument(
        "--vocab-from", type=Path, help="GGUF to copy the tokenizer from (default: SmolLM2)"
    )
    ap.add_argument("--keep-src", action="store_true", help="keep the unquantized source file")
    ap.add_argument("--force", action="store_true", help="rewrite files that exist")
    ap.add_argument(
        "--verify",
        action="store_true",
        help="load each output with hologram (4 tokens) and run llama-bench -p 16 -n 4",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the shapes' sizes, write nothing")
    ap.add_argument("--layers", type=int, help="write this many layers instead of the shape's")
    a = ap.parse_args()

    out = a.out.resolve()
    repo = Path(__file__).resolve().parent.parent
    if out == repo or repo in out.parents:
        raise SystemExit(f"--out {out} is inside the repository: model files are never committed")
    out.mkdir(parents=True, exist_ok=True)
    vocab = a.vocab_from or vocab_source()
    keys = ["7b"] if a.only_7b else ["tinyllama"] + (["7b"] if a.big else [])
    shapes = [SHAPES[k] for k in keys]
    if a.layers:
        shapes = [replace(s, name=f"{s.name}-L{a.layers}", n_layer=a.layers) for s in shapes]
    quants = ["q4_k_m"] + (["q4_0"] if a.q4_0 else [])
    if a.dry_run:
        n_vocab = n_vocab_of(tokenizer_fields(vocab))
        for s in shapes:
            plan = tensor_plan(s, n_vocab)
            n = sum(int(np.prod(sh)) for _, sh in plan)
            width = 2 if a.src_type == "f16" else 4
            print(
                f"{s.name}: {len(plan)} tensors, {n / 1e9:.2f} B parameters, "
                f"{a.src_type} source {n * width / 2**30:.1f} GiB, vocab {n_vocab}"
            )
        return

    made: list[Path] = []
    for s in shapes:
        src = out / f"{s.name}-random-{a.src_type}.gguf"
        targets = {q: out / f"{s.name}-random-{q}.gguf" for q in quants}
        todo = [q for q, p in targets.items() if a.force or not p.exists()]
        if todo:
            if a.force or not src.exists():
                print(f"writing {src}", file=sys.stderr)
                write_source(s, src, a.src_type, a.seed, vocab)
            for q in todo:
                print(f"llama-quantize {src.name} -> {targets[q].name}", file=sys.stderr)
                t0 = time.perf_counter()
                quantize(a.llama_bin, src, targets[q], QUANTS[q], a.threads)
                print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            if not a.keep_src:
                src.unlink()
        made += targets.values()
        if a.keep_src and src.exists():
            made.append(src)

    for p in made:
        print(f"{p}\t{p.stat().st_size / 2**20:.0f} MiB")
        if a.verify and p.stem.split("-")[-1] in QUANTS:
            verify(p, a.llama_bin)


if __name__ == "__main__":
    main()
