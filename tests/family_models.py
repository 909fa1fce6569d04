"""Tiny random-weight models of every decoder family hologram runs, written with
``gguf.GGUFWriter`` from a fixed seed, in each family's GGUF layout (tensor names, fused tensors,
biases, norms, hyper-parameter keys), with SmolLM2's real tokenizer copied from its GGUF file
(``hologram.default_model_path()``) and the ``tokenizer.ggml.pre`` each family declares.

Each family is written twice from the same float32 weights: ``f32`` (every tensor F32) and
``q8_0`` (every matrix Q8_0, quantized by ``gguf.quants``; norms, biases and RoPE factors F32).
Regeneration is bit-identical (numpy ``default_rng(SEED)``, fixed draw order);
``Built.digest`` hashes a model's tensors and keys so a test can check that it runs the very
model the committed llama.cpp reference (``tests/data/families_llamacpp.npz``, made by
``tests/make_family_reference.py``) was computed on.

The families and what each exercises:

| name | architecture | exercises |
|---|---|---|
| llama | llama | GQA, RoPE NORM, untied output (SmolLM2 / TinyLlama shape), pre ``smollm`` |
| llama3 | llama | ``rope_freqs.weight`` (Llama 3.1 "llama3" scaling), pre ``llama-bpe`` |
| mistral | llama | linear RoPE scaling, 1 KV head, ``attention.sliding_window`` (4096), pre ``gpt-2`` |
| qwen2 | qwen2 | q/k/v biases, YaRN scaling, tied output, pre ``deepseek-r1-qwen`` |
| qwen3 | qwen3 | per-head q/k RMSNorm, head size set apart (``key_length``), tied, pre ``qwen2`` |
| phi2 | phi2 | LayerNorm with bias, fused qkv with bias, partial RoPE NEOX, GELU, parallel attention and FFN, output bias, pre ``phi-2`` |
| phi3 | phi3 | fused qkv, fused gate-up, partial RoPE, LongRoPE factors (long: context 256 > 64), attn_factor, pre ``default`` |
| gemma2 | gemma2 | attention and final soft-capping, alternating sliding-window layers, post-norms, GeGLU, head size 32, pre ``default`` |
| gemma3 | gemma3 | q/k norms, sliding-window layer with its own RoPE base, linear scaling of global layers, pre ``default`` |
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240611
QUANTS = ("f32", "q8_0")
# The context of the reference runs (phi3 chooses its LongRoPE factors by it).
N_CTX = 256

# About 160 tokens: words, contractions, digits, punctuation, runs of spaces and newlines, code
# and non-ASCII text, so that the pre-tokenizers split it differently.
TEXT = (
    "The quick brown fox didn't jump over the lazy dog; it's 3:45 PM and we'll see why.\n\n"
    "In 2023, roughly 1,234,567 people visited the café in Zürich (up 12.5% from 2022).  "
    "They're   spacing  things out!\n"
    "def area(r):\n    return 3.14159 * r ** 2  # circle\n\n"
    "日本語のテキスト and emoji 🚀🔥 mixed with CamelCaseWords, HTTPServer, and x86_64.\n"
    "Q: What's 17 + 25? A: 42. I'd say it's simple, isn't it?\t\tTabs\tand\r\nCRLF too...\n"
    "The end: we've seen a lot, y'all — more than 100000 tokens' worth?"
)

# More strings whose token ids are checked against llama.cpp's, with each family's
# pre-tokenizer: (text, parse_special).
TOKENIZE_TEXTS: tuple[tuple[str, bool], ...] = (
    ("", False),
    ("Hello world's  end 123456!!\n\n x", False),
    ("I'M 12345 ok?\r\n  done", False),
    ("  two  spaces  between   ", False),
    ("Tabs\tand\nnewlines\n\n\nmany", False),
    ("CamelCaseIdentifierWithNumbers123 HTTPServer getX", False),
    ("Ünïcödé àccents: café, naïve, Straße", False),
    ("x = [1, 2, 3]; y = {'a': 1}\n", False),
    ("日本語のテキスト 😀🚀 and ❤️", False),
    ("\u00a0non-breaking\u00a0space\u3000x", False),
    ("def f(x):\n    return x**2  # square\n", False),
    ("don't won't can't shouldn't've DON'T", False),
    ("1234567890 12.5% $100,000.00 3.14159", False),
    ("<|im_start|>user\nhi there<|im_end|>\n", False),
    ("<|im_start|>user\nhi there<|im_end|>\n", True),
)


@dataclass(frozen=True)
class Family:
    name: str
    arch: str
    pre: str
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int | None = None  # written as attention.key_length/value_length when set
    n_ff: int = 128
    rope_dims: int | None = None  # default: the head size
    tied: bool = False
    # Extra {arch}.* keys: (suffix, value, GGUFValueType name).
    keys: tuple[tuple[str, Any, str], ...] = ()
    # Scale of the q and k projections (sharper attention), of the output matrix (logit spread).
    qk_gain: float = 1.4
    out_gain: float = 6.0
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def hd(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def n_rot(self) -> int:
        return self.rope_dims or self.hd


def _llama3_rope_freqs(n_rot: int, base: float, factor: float, old_ctx: int) -> np.ndarray:
    """Llama 3.1's rope_freqs, as convert_hf_to_gguf computes them (low 1, high 4)."""
    low_wl, high_wl = old_ctx / 1.0, old_ctx / 4.0
    out = []
    for i in range(n_rot // 2):
        freq = base ** (-2.0 * i / n_rot)
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - 1.0) / (4.0 - 1.0)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llama", "llama", "smollm"),
        Family(
            "llama3",
            "llama",
            "llama-bpe",
            keys=(("rope.freq_base", 10000.0, "FLOAT32"),),
            extra={"rope_freqs": (10000.0, 8.0, 64)},
        ),
        Family(
            "mistral",
            "llama",
            "gpt-2",
            n_head_kv=1,
            keys=(
                ("rope.scaling.type", "linear", "STRING"),
                ("rope.scaling.factor", 2.0, "FLOAT32"),
                ("attention.sliding_window", 4096, "UINT32"),
            ),
        ),
        Family(
            "qwen2",
            "qwen2",
            "deepseek-r1-qwen",
            tied=True,
            keys=(
                ("rope.freq_base", 10000.0, "FLOAT32"),
                ("rope.scaling.type", "yarn", "STRING"),
                ("rope.scaling.factor", 4.0, "FLOAT32"),
                ("rope.scaling.original_context_length", 64, "UINT32"),
            ),
            extra={"qkv_bias": 0.5},
        ),
        Family(
            "qwen3",
            "qwen3",
            "qwen2",
            head_dim=32,
            tied=True,
            keys=(("rope.freq_base", 1000000.0, "FLOAT32"),),
            extra={"qk_norm": True},
        ),
        Family(
            "phi2",
            "phi2",
            "phi-2",
            n_head_kv=4,
            rope_dims=8,
            extra={"phi2": True},
        ),
        Family(
            "phi3",
            "phi3",
            "default",
            rope_dims=12,
            keys=(
                ("rope.scaling.attn_factor", 1.1902380714238083, "FLOAT32"),
                ("rope.scaling.original_context_length", 64, "UINT32"),
                ("attention.sliding_window", 2047, "UINT32"),
            ),
            extra={"phi3": True},
        ),
        Family(
            "gemma2",
            "gemma2",
            "default",
            head_dim=32,
            tied=True,
            keys=(
                ("attention.sliding_window", 24, "UINT32"),
                ("attn_logit_softcapping", 1.5, "FLOAT32"),
                ("final_logit_softcapping", 15.0, "FLOAT32"),
            ),
            extra={"gemma": True},
        ),
        Family(
            "gemma3",
            "gemma3",
            "default",
            tied=True,
            keys=(
                ("rope.freq_base", 1000000.0, "FLOAT32"),
                ("rope.scaling.type", "linear", "STRING"),
                ("rope.scaling.factor", 8.0, "FLOAT32"),
                ("attention.sliding_window", 24, "UINT32"),
                ("attention.sliding_window_pattern", 2, "UINT32"),
            ),
            extra={"gemma": True, "qk_norm": True},
        ),
    ]
}


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer() -> list[tuple[str, Any, Any, Any]]:
    """The ``tokenizer.*`` keys of SmolLM2's GGUF as ``(key, value, type, sub_type)``, except
    ``tokenizer.ggml.pre`` and the chat template."""
    import gguf
    import hologram

    r = gguf.GGUFReader(str(hologram.default_model_path()))
    vt = gguf.GGUFValueType
    out: list[tuple[str, Any, Any, Any]] = []
    for f in r.fields.values():
        if not f.name.startswith("tokenizer.") or f.name in (
            "tokenizer.ggml.pre",
            "tokenizer.chat_template",
        ):
            continue
        t = f.types[0]
        if t == vt.ARRAY:
            sub = f.types[-1]
            if sub == vt.STRING:
                val: Any = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                val = [f.parts[i].tolist()[0] for i in f.data]
            out.append((f.name, val, t, sub))
        elif t == vt.STRING:
            out.append((f.name, bytes(f.parts[f.data[0]]).decode("utf-8"), t, None))
        else:
            out.append((f.name, f.parts[f.data[0]].tolist()[0], t, None))
    return out


def _tensors(fam: Family, n_vocab: int) -> dict[str, np.ndarray]:
    """The float32 weights of ``fam`` in file order, numpy layout ``(rows, cols)``."""
    rng = np.random.default_rng(SEED + sum(map(ord, fam.name)))
    e, ff, hd, x = fam.n_embd, fam.n_ff, fam.hd, fam.extra
    nq, nkv = fam.n_head * hd, fam.n_head_kv * hd

    def mat(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * (gain / math.sqrt(cols))).astype(np.float32)

    def vec(n: int, mean: float = 1.0, sd: float = 0.1) -> np.ndarray:
        return (mean + sd * rng.standard_normal(n)).astype(np.float32)

    t: dict[str, np.ndarray] = {}
    # Untied: embedding rows of unit scale; tied: the output matrix doubles as the embedding.
    t["token_embd.weight"] = mat(n_vocab, e, fam.out_gain if fam.tied else math.sqrt(e))
    if "rope_freqs" in x:
        t["rope_freqs.weight"] = _llama3_rope_freqs(fam.n_rot, *x["rope_freqs"])
    if x.get("phi3"):
        half = fam.n_rot // 2
        t["rope_factors_long.weight"] = (1.0 + 6.0 * rng.random(half)).astype(np.float32)
        t["rope_factors_short.weight"] = (1.0 + 0.2 * rng.random(half)).astype(np.float32)
    phi2 = x.get("phi2", False)
    for i in range(fam.n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = vec(e)
        if phi2:
            t[p + "attn_norm.bias"] = vec(e, 0.0, 0.2)
        if phi2 or x.get("phi3"):
            q, k, v = mat(nq, e, fam.qk_gain), mat(nkv, e, fam.qk_gain), mat(nkv, e)
            t[p + "attn_qkv.weight"] = np.concatenate([q, k, v])
            if phi2:
                t[p + "attn_qkv.bias"] = vec(nq + 2 * nkv, 0.0, 0.3)
        else:
            t[p + "attn_q.weight"] = mat(nq, e, fam.qk_gain)
            t[p + "attn_k.weight"] = mat(nkv, e, fam.qk_gain)
            t[p + "attn_v.weight"] = mat(nkv, e)
            if "qkv_bias" in x:
                t[p + "attn_q.bias"] = vec(nq, 0.0, x["qkv_bias"])
                t[p + "attn_k.bias"] = vec(nkv, 0.0, x["qkv_bias"])
                t[p + "attn_v.bias"] = vec(nkv, 0.0, x["qkv_bias"])
        if x.get("qk_norm"):
            t[p + "attn_q_norm.weight"] = vec(hd, 1.0, 0.3)
            t[p + "attn_k_norm.weight"] = vec(hd, 1.0, 0.3)
        t[p + "attn_output.weight"] = mat(e, nq)
        if phi2:
            t[p + "attn_output.bias"] = vec(e, 0.0, 0.2)
        if x.get("gemma"):
            # Large: the post-normed sub-blocks must count next to the scaled embedding.
            t[p + "post_attention_norm.weight"] = vec(e, 4.0, 0.5)
        if not phi2:
            t[p + "ffn_norm.weight"] = vec(e)
        if phi2:
            t[p + "ffn_up.weight"] = mat(ff, e)
            t[p + "ffn_up.bias"] = vec(ff, 0.0, 0.2)
        elif x.get("phi3"):
            t[p + "ffn_up.weight"] = np.concatenate([mat(ff, e), mat(ff, e)])
        else:
            t[p + "ffn_gate.weight"] = mat(ff, e)
            t[p + "ffn_up.weight"] = mat(ff, e)
        t[p + "ffn_down.weight"] = mat(e, ff)
        if phi2:
            t[p + "ffn_down.bias"] = vec(e, 0.0, 0.2)
        if x.get("gemma"):
            t[p + "post_ffw_norm.weight"] = vec(e, 4.0, 0.5)
    t["output_norm.weight"] = vec(e)
    if phi2:
        t["output_norm.bias"] = vec(e, 0.0, 0.2)
    if not fam.tied:
        t["output.weight"] = mat(n_vocab, e, fam.out_gain)
    if phi2:
        t["output.bias"] = vec(n_vocab, 0.0, 0.5)
    return t


def _hparams(fam: Family, n_vocab: int) -> list[tuple[str, Any, str]]:
    eps_key = (
        "attention.layer_norm_epsilon" if fam.arch == "phi2" else "attention.layer_norm_rms_epsilon"
    )
    hp: list[tuple[str, Any, str]] = [
        ("context_length", N_CTX, "UINT32"),
        ("embedding_length", fam.n_embd, "UINT32"),
        ("block_count", fam.n_layer, "UINT32"),
        ("feed_forward_length", fam.n_ff, "UINT32"),
        ("attention.head_count", fam.n_head, "UINT32"),
        ("attention.head_count_kv", fam.n_head_kv, "UINT32"),
        (eps_key, 1e-5 if fam.arch != "gemma3" else 1e-6, "FLOAT32"),
        ("rope.dimension_count", fam.n_rot, "UINT32"),
        ("vocab_size", n_vocab, "UINT32"),
    ]
    if fam.head_dim is not None:
        hp += [
            ("attention.key_length", fam.head_dim, "UINT32"),
            ("attention.value_length", fam.head_dim, "UINT32"),
        ]
    return hp + list(fam.keys)


@dataclass
class Built:
    """One generated model, in memory: what ``write_family_model`` writes."""

    arch: str
    pre: str
    # (key, value, GGUFValueType name) of the model's own keys, in file order.
    kv: list[tuple[str, Any, str]]
    # name -> (data to write, ggml type name): float32 arrays or Q8_0 bytes.
    tensors: dict[str, tuple[np.ndarray, str]]

    def digest(self) -> str:
        """sha256 of the keys and tensors (names, types, shapes, bytes): what the logits depend
        on (besides the tokenizer, whose output the tests compare), independent of how the
        writer lays the file out."""
        h = hashlib.sha256(repr((self.arch, self.pre, self.kv)).encode())
        for tname, (data, ty) in self.tensors.items():
            h.update(repr((tname, ty, data.shape, str(data.dtype))).encode())
            h.update(np.ascontiguousarray(data).tobytes())
        return h.hexdigest()

    def weights(self) -> dict[str, np.ndarray]:
        """Every tensor as float64 in numpy layout (Q8_0 dequantized by ``gguf.quants``)."""
        import gguf

        out: dict[str, np.ndarray] = {}
        for tname, (data, ty) in self.tensors.items():
            if ty == "Q8_0":
                q8 = gguf.GGMLQuantizationType.Q8_0
                out[tname] = gguf.quants.dequantize(data, q8).astype(np.float64)
            else:
                out[tname] = data.astype(np.float64)
        return out

    def meta(self) -> dict[str, Any]:
        """``general.architecture`` and the model keys, as a GGUF reader returns them."""
        m: dict[str, Any] = {"general.architecture": self.arch, "tokenizer.ggml.pre": self.pre}
        m.update({k: v for k, v, _ in self.kv})
        return m


def build_family_model(
    name: str,
    quant: str,
    *,
    arch: str | None = None,
    pre: str | None = None,
    keys: dict[str, Any] | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
) -> Built:
    """Family ``name`` (a key of ``FAMILIES``) with weights ``quant`` (``f32`` or ``q8_0``).
    Variants for tests: ``arch`` under another ``general.architecture``, ``pre`` with another
    pre-tokenizer, ``keys`` overriding ``{arch}.*`` values (same types), ``extra_tensors``
    added as F32."""
    import gguf

    fam = FAMILIES[name]
    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r} (expected one of {QUANTS})")
    tok = smollm2_tokenizer()
    n_vocab = next(len(v) for k, v, _, _ in tok if k == "tokenizer.ggml.tokens")
    arch = arch or fam.arch
    hp = _hparams(fam, n_vocab)
    for suffix, val in (keys or {}).items():
        if not any(s == suffix for s, _, _ in hp):
            raise KeyError(f"{name} has no key {suffix!r} to override")
        hp = [(s, val if s == suffix else v, t) for s, v, t in hp]
    kv = [(f"{arch}.{s}", v, t) for s, v, t in hp]
    q8 = gguf.GGMLQuantizationType.Q8_0
    tensors: dict[str, tuple[np.ndarray, str]] = {}
    for tname, data in _tensors(fam, n_vocab).items():
        if quant == "q8_0" and data.ndim == 2:
            tensors[tname] = (gguf.quants.quantize(data, q8), "Q8_0")
        else:
            tensors[tname] = (data, "F32")
    for tname, data in (extra_tensors or {}).items():
        tensors[tname] = (data.astype(np.float32), "F32")
    return Built(arch, fam.pre if pre is None else pre, kv, tensors)


def write_family_model(path: str | Path, name: str, quant: str, **variant: Any) -> Path:
    """Write ``build_family_model(name, quant, **variant)`` with SmolLM2's tokenizer to
    ``path``; the same call always writes the same bytes."""
    import gguf

    m = build_family_model(name, quant, **variant)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vt = gguf.GGUFValueType
    w = gguf.GGUFWriter(str(path), m.arch)
    # Not the family's name: llama.cpp sets token attributes by model name ("phi3" expects
    # Phi-3's special tokens in the vocabulary).
    w.add_key_value("general.name", "hologram tiny test model", vt.STRING)
    w.add_key_value("general.file_type", 0 if quant == "f32" else 7, vt.UINT32)
    for key, val, tname in m.kv:
        w.add_key_value(key, val, vt[tname])
    w.add_key_value("tokenizer.ggml.pre", m.pre, vt.STRING)
    for key, val, t, sub in smollm2_tokenizer():
        w.add_key_value(key, val, t, sub_type=sub)
    for tname, (data, ty) in m.tensors.items():
        if ty == "F32":
            w.add_tensor(tname, data)
        else:
            w.add_tensor(tname, data, raw_dtype=gguf.GGMLQuantizationType[ty])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def family_models(outdir: str | Path) -> Callable[[str, str], Path]:
    """A writer that caches: ``get(name, quant)`` writes the model once under ``outdir``."""
    outdir = Path(outdir)

    @functools.cache
    def get(name: str, quant: str) -> Path:
        return write_family_model(outdir / f"{name}-{quant}.gguf", name, quant)

    return get
