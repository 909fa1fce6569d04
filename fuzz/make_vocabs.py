"""Write the small real vocabularies (GGUF containers with tokenizer metadata only, saved as
``.vocab`` files: they hold no weights) the tokenizer fuzz targets and their regression tests use.

Each output is a GGUF file with tokenizer metadata only (no tensors), cut from a real model's
vocabulary so the fuzzers exercise real token texts, scores, types and merges at a size that is
fine to commit (tens of KiB):

* ``vocab/bpe-smollm2.vocab``: byte-level BPE (``gpt2``, pre ``smollm``), the first 3000 ids of
  SmolLM2-135M-Instruct (17 control tokens, the 256 byte characters, the first merges' results)
  and every merge whose two sides and result are kept;
* ``vocab/spm-gemma3.vocab``: SentencePiece (``llama``, no space prefix) from gemma-3-270m: the
  first 2500 ids (control, user-defined, the 256 ``<0xNN>`` byte tokens, the best-scored pieces)
  plus ``▁`` and the user-defined whitespace/markup tokens at the end of its vocabulary;
* ``vocab/spm-llama.vocab``: SentencePiece with ``add_space_prefix`` (LLaMA's 32000-token
  vocabulary, as llama.cpp ships it in ``models/ggml-vocab-llama-spm.gguf``), first 2500 ids
  and ``▁``;
* ``vocab/wpm-minilm.vocab``: WordPiece (``bert``), the first 5000 ids of all-MiniLM-L6-v2.

Usage: ``python fuzz/make_vocabs.py SMOLLM2.gguf GEMMA3.gguf LLAMA_SPM.gguf MINILM.gguf``
(SmolLM2 is ``hologram.default_model_path()``). The outputs are committed; rerun only to change
them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gguf

OUT = Path(__file__).resolve().parent / "vocab"
ID_KEYS = (
    "bos_token_id",
    "eos_token_id",
    "eot_token_id",
    "eom_token_id",
    "unknown_token_id",
    "padding_token_id",
    "seperator_token_id",
    "cls_token_id",
    "mask_token_id",
)
BOOL_KEYS = (
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix",
    "hologram.tokenizer.do_lower_case",
    "hologram.tokenizer.strip_accents",
)


def _field(r: gguf.GGUFReader, key: str) -> Any:
    f = r.fields.get(key)
    return None if f is None else f.contents()


def write_subset(src: str, dst: Path, keep_ids: list[int], note: str) -> None:
    r = gguf.GGUFReader(src)
    tokens: list[str] = _field(r, "tokenizer.ggml.tokens")
    scores: list[float] | None = _field(r, "tokenizer.ggml.scores")
    types: list[int] | None = _field(r, "tokenizer.ggml.token_type")
    merges: list[str] | None = _field(r, "tokenizer.ggml.merges")
    new_id = {old: new for new, old in enumerate(keep_ids)}
    kept = [tokens[i] for i in keep_ids]
    kept_set = set(kept)

    w = gguf.GGUFWriter(str(dst), arch=_field(r, "general.architecture"))
    vt = gguf.GGUFValueType
    w.add_string("general.name", f"hologram fuzz vocabulary: {note}")
    w.add_string("tokenizer.ggml.model", _field(r, "tokenizer.ggml.model"))
    pre = _field(r, "tokenizer.ggml.pre")
    if pre is not None:
        w.add_string("tokenizer.ggml.pre", pre)
    w.add_key_value("tokenizer.ggml.tokens", kept, vt.ARRAY, sub_type=vt.STRING)
    if scores is not None:
        w.add_key_value(
            "tokenizer.ggml.scores", [scores[i] for i in keep_ids], vt.ARRAY, sub_type=vt.FLOAT32
        )
    if types is not None:
        w.add_key_value(
            "tokenizer.ggml.token_type", [types[i] for i in keep_ids], vt.ARRAY, sub_type=vt.INT32
        )
    if merges is not None:
        ms = []
        for m in merges:
            a, b = m.split(" ", 1)
            if a in kept_set and b in kept_set and a + b in kept_set:
                ms.append(m)
        w.add_key_value("tokenizer.ggml.merges", ms, vt.ARRAY, sub_type=vt.STRING)
    for k in ID_KEYS:
        v = _field(r, f"tokenizer.ggml.{k}")
        if v is not None and v in new_id:
            w.add_uint32(f"tokenizer.ggml.{k}", new_id[v])
    for k in BOOL_KEYS:
        v = _field(r, k)
        if v is not None:
            w.add_bool(k, bool(v))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{dst.name}: {len(kept)} tokens, {dst.stat().st_size} bytes")


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__)
        return 2
    smollm2, gemma3, llama_spm, minilm = argv[1:]
    OUT.mkdir(exist_ok=True)
    write_subset(smollm2, OUT / "bpe-smollm2.vocab", list(range(3000)), "SmolLM2 BPE, first 3000")
    n_gemma = len(gguf.GGUFReader(gemma3).fields["tokenizer.ggml.tokens"].data)
    # + "▁" (236743 in gemma3, 29871 in LLaMA): the escaped space alone is a token in both.
    gemma_ids = list(range(2500)) + [236743] + list(range(255968, 256001))
    assert n_gemma > 256001
    write_subset(gemma3, OUT / "spm-gemma3.vocab", gemma_ids, "gemma3 SentencePiece, subset")
    write_subset(llama_spm, OUT / "spm-llama.vocab", list(range(2500)) + [29871], "LLaMA SPM, 2500")
    write_subset(minilm, OUT / "wpm-minilm.vocab", list(range(5000)), "MiniLM WordPiece, 5000")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
