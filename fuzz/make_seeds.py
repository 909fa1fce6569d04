"""Write the seed corpus of the GGUF fuzz targets: small (< 4 KiB) valid files from
``gguf.GGUFWriter`` that reach every stage of loading (container, tokenizer, model config,
weights), plus a few container-only variants (version 2, explicit alignment, every metadata
value type, every tensor type hologram parses).

Usage: ``python fuzz/make_seeds.py`` (writes ``fuzz/corpus/gguf_bytes/*``, then the same files are
the bases the ``gguf_patch`` target mutates: it embeds them from that directory by name).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

OUT = Path(__file__).resolve().parent / "corpus" / "gguf_bytes"
VT = gguf.GGUFValueType
E, FF, NV, NCTX = 8, 8, 10, 16

B2U = {}


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def gpt2_tokens(w: gguf.GGUFWriter) -> int:
    b2u = _bytes_to_unicode()
    toks = [b2u[b] for b in b"helo wr"] + ["he", "ll", "Ġw"] + ["<|endoftext|>", "<|im_end|>"]
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "smollm")
    w.add_key_value("tokenizer.ggml.tokens", toks, VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value(
        "tokenizer.ggml.token_type", [1] * (len(toks) - 2) + [3, 3], VT.ARRAY, sub_type=VT.INT32
    )
    w.add_key_value("tokenizer.ggml.merges", ["h e", "l l", "Ġ w"], VT.ARRAY, sub_type=VT.STRING)
    w.add_uint32("tokenizer.ggml.bos_token_id", len(toks) - 2)
    w.add_uint32("tokenizer.ggml.eos_token_id", len(toks) - 1)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    return len(toks)


def spm_tokens(w: gguf.GGUFWriter, space_prefix: bool = True) -> int:
    toks = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "▁", "a", "b", "▁a", "ab", "<b>"]
    types = [2, 3, 3, 6, 6, 1, 1, 1, 1, 1, 4]
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_key_value("tokenizer.ggml.tokens", toks, VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value(
        "tokenizer.ggml.scores",
        [0.0, 0, 0, 0, 0, -1, -2, -3, -0.5, -0.25, 0],
        VT.ARRAY,
        sub_type=VT.FLOAT32,
    )
    w.add_key_value("tokenizer.ggml.token_type", types, VT.ARRAY, sub_type=VT.INT32)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_uint32("tokenizer.ggml.unknown_token_id", 0)
    w.add_bool("tokenizer.ggml.add_space_prefix", space_prefix)
    return len(toks)


def wpm_tokens(w: gguf.GGUFWriter) -> int:
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁a", "▁ab", "b", "##", "▁.", "▁é"]
    w.add_string("tokenizer.ggml.model", "bert")
    w.add_key_value("tokenizer.ggml.tokens", toks, VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value(
        "tokenizer.ggml.token_type", [3, 2, 3, 3, 3] + [1] * 6, VT.ARRAY, sub_type=VT.INT32
    )
    w.add_uint32("tokenizer.ggml.unknown_token_id", 1)
    w.add_uint32("tokenizer.ggml.bos_token_id", 2)
    w.add_uint32("tokenizer.ggml.eos_token_id", 3)
    w.add_uint32("tokenizer.ggml.cls_token_id", 2)
    w.add_uint32("tokenizer.ggml.seperator_token_id", 3)
    w.add_uint32("tokenizer.ggml.padding_token_id", 0)
    w.add_bool("hologram.tokenizer.do_lower_case", True)
    return len(toks)


def _rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) / 4


def decoder(w: gguf.GGUFWriter, arch: str, nv: int, dtype: str = "F32") -> None:
    w.add_uint32(f"{arch}.context_length", NCTX)
    w.add_uint32(f"{arch}.embedding_length", E)
    w.add_uint32(f"{arch}.block_count", 1)
    w.add_uint32(f"{arch}.feed_forward_length", FF)
    w.add_uint32(f"{arch}.attention.head_count", 2)
    w.add_uint32(f"{arch}.attention.head_count_kv", 1)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    if arch == "gemma3":
        w.add_uint32(f"{arch}.attention.sliding_window", 4)
    hd = E // 2

    def mat(name: str, rows: int, cols: int, seed: int) -> None:
        data = _rand((rows, cols), seed)
        if dtype == "F16":
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, data)

    mat("token_embd.weight", nv, E, 1)
    w.add_tensor("output_norm.weight", np.ones(E, np.float32))
    p = "blk.0."
    w.add_tensor(p + "attn_norm.weight", np.ones(E, np.float32))
    mat(p + "attn_q.weight", 2 * hd, E, 2)
    mat(p + "attn_k.weight", hd, E, 3)
    mat(p + "attn_v.weight", hd, E, 4)
    mat(p + "attn_output.weight", E, 2 * hd, 5)
    w.add_tensor(p + "ffn_norm.weight", np.ones(E, np.float32))
    mat(p + "ffn_gate.weight", FF, E, 6)
    mat(p + "ffn_up.weight", FF, E, 7)
    mat(p + "ffn_down.weight", E, FF, 8)
    if arch == "gemma3":
        for n, size in (
            ("attn_q_norm", hd),
            ("attn_k_norm", hd),
            ("post_attention_norm", E),
            ("post_ffw_norm", E),
        ):
            w.add_tensor(p + n + ".weight", np.zeros(size, np.float32))


def bert(w: gguf.GGUFWriter, nv: int) -> None:
    a = "bert"
    w.add_uint32(f"{a}.context_length", 4)
    w.add_uint32(f"{a}.embedding_length", 4)
    w.add_uint32(f"{a}.block_count", 1)
    w.add_uint32(f"{a}.feed_forward_length", 4)
    w.add_uint32(f"{a}.attention.head_count", 2)
    w.add_float32(f"{a}.attention.layer_norm_epsilon", 1e-12)
    w.add_bool(f"{a}.attention.causal", False)
    w.add_uint32(f"{a}.pooling_type", 1)
    w.add_uint32("tokenizer.ggml.token_type_count", 2)
    e = 4
    w.add_tensor("token_embd.weight", _rand((nv, e), 1))
    w.add_tensor("position_embd.weight", _rand((4, e), 2))
    w.add_tensor("token_types.weight", _rand((2, e), 3))
    w.add_tensor("token_embd_norm.weight", np.ones(e, np.float32))
    w.add_tensor("token_embd_norm.bias", np.zeros(e, np.float32))
    p = "blk.0."
    for i, n in enumerate(("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down")):
        w.add_tensor(p + n + ".weight", _rand((e, e), 10 + i))
        w.add_tensor(p + n + ".bias", np.zeros(e, np.float32))
    for n in ("attn_output_norm", "layer_output_norm"):
        w.add_tensor(p + n + ".weight", np.ones(e, np.float32))
        w.add_tensor(p + n + ".bias", np.zeros(e, np.float32))


def every_value_type(w: gguf.GGUFWriter) -> None:
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 700)
    w.add_int16("t.i16", -700)
    w.add_uint32("t.u32", 70000)
    w.add_int32("t.i32", -70000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", 2.5)
    for name, sub, vals in (
        ("u8", VT.UINT8, [1, 2]),
        ("i8", VT.INT8, [-1, 2]),
        ("u16", VT.UINT16, [1, 2]),
        ("i16", VT.INT16, [-1, 2]),
        ("u32", VT.UINT32, [1, 2]),
        ("i32", VT.INT32, [-1, 2]),
        ("f32", VT.FLOAT32, [0.5, -1.0]),
        ("bool", VT.BOOL, [True, False]),
        ("str", VT.STRING, ["a", ""]),
        ("u64", VT.UINT64, [1, 2]),
        ("i64", VT.INT64, [-1, 2]),
        ("f64", VT.FLOAT64, [0.25, 3.0]),
    ):
        w.add_key_value(f"t.arr_{name}", vals, VT.ARRAY, sub_type=sub)


def quant_tensors(w: gguf.GGUFWriter) -> None:
    """One tensor of each block type hologram reads, 32 (or 256) elements each."""
    x32 = _rand((32,), 1)
    w.add_tensor("q.f32", x32)
    w.add_tensor("q.f16", x32.astype(np.float16))
    for qt in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16"):
        t = gguf.GGMLQuantizationType[qt]
        w.add_tensor(f"q.{qt.lower()}", gguf.quants.quantize(x32, t), raw_dtype=t)
    x256 = _rand((256,), 2)
    for qt in ("Q4_K", "Q6_K"):
        t = gguf.GGMLQuantizationType[qt]
        try:
            w.add_tensor(f"q.{qt.lower()}", gguf.quants.quantize(x256, t), raw_dtype=t)
        except NotImplementedError:
            pass


def write(name: str, arch: str, body: Callable[[gguf.GGUFWriter], None], **kw: object) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "f.gguf"
        w = gguf.GGUFWriter(str(tmp), arch, **kw)  # type: ignore[arg-type]
        body(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        data = tmp.read_bytes()
    if len(data) > 4096:
        raise SystemExit(f"{name}: {len(data)} bytes, over the 4096-byte max_len")
    (OUT / name).write_bytes(data)
    print(f"{name}: {len(data)} bytes")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    write("llama-bpe", "llama", lambda w: decoder(w, "llama", gpt2_tokens(w)))
    write("llama-spm-f16", "llama", lambda w: decoder(w, "llama", spm_tokens(w), "F16"))
    write("gemma3-spm", "gemma3", lambda w: decoder(w, "gemma3", spm_tokens(w, False)))
    write("bert-wpm", "bert", lambda w: bert(w, wpm_tokens(w)))
    write("vocab-bpe", "llama", gpt2_tokens)
    write("vocab-spm", "llama", spm_tokens)
    write("vocab-wpm", "bert", wpm_tokens)
    write("values", "test", every_value_type)
    write("tensors", "test", quant_tensors)
    write("tensors-align64", "test", lambda w: (w.add_custom_alignment(64), quant_tensors(w)))
    # The same metadata as a version-2 file (identical layout for these types).
    v3 = (OUT / "values").read_bytes()
    (OUT / "values-v2").write_bytes(v3[:4] + (2).to_bytes(4, "little") + v3[8:])
    print(f"values-v2: {len(v3)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
