"""Tiny valid llama GGUF models and the malformed-GGUF corpus of RELIABILITY.md §1.4 (G01-G38).

* ``write_valid_model(path, seed=0)`` writes a complete, valid llama-architecture model with
  ``gguf.GGUFWriter``: n_embd 64, 2 layers, 4 heads (head_dim 16), 2 KV heads, ffn 128, context 128,
  a GPT-2 style byte-level BPE vocabulary of 300 tokens (the 256 byte tokens through GPT-2's
  ``bytes_to_unicode``, 40 merges, 4 special tokens) and F32/Q8_0/Q4_0 weights drawn from a fixed
  seed. ``tokenizer="llama"`` writes the same model with a SentencePiece-style vocabulary instead.
* ``CASES`` lists every malformed variant. G01-G31 corrupt the container: they are built by
  parsing the valid file with the small parser below and patching or re-assembling fields, and
  must be rejected by the GGUF reader (``hologram.GGUFError``). G32-G38 are well-formed containers
  describing an invalid model (hyper-parameters, tokenizer arrays, special ids, token text, tensor
  shapes); they are written with ``GGUFWriter`` from a modified spec and must be rejected by the
  model loader (``hologram.ModelLoadError``).
* ``build_corpus(outdir)`` writes ``valid.gguf``, ``valid_spm.gguf``, one file per case and a
  ``manifest.tsv`` (``file<TAB>class<TAB>substrings joined by |``) that the Rust integration test
  ``rust/engine/tests/gguf_corpus.rs`` reads.

Run ``python tests/gguf_corpus.py OUTDIR`` to write the corpus, then
``HOLOGRAM_GGUF_CORPUS=OUTDIR cargo test -p hologram-engine --test gguf_corpus``.
"""

from __future__ import annotations

import copy
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# The valid model

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 128
N_CTX = 128
RMS_EPS = 1e-5
ROPE_BASE = 10000.0
N_MERGES = 40
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
N_VOCAB = 256 + N_MERGES + len(SPECIAL_TOKENS)  # 300
ARCH = "llama"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llama.cpp token types
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

# Candidate merges, in rank order; those whose parts are not (yet) tokens are skipped.
_MERGE_CANDIDATES = [
    ("Ġ", "t"),
    ("Ġ", "a"),
    ("h", "e"),
    ("i", "n"),
    ("r", "e"),
    ("o", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("Ġ", "s"),
    ("a", "t"),
    ("Ġ", "w"),
    ("Ġ", "o"),
    ("e", "n"),
    ("Ġ", "c"),
    ("i", "t"),
    ("i", "s"),
    ("a", "n"),
    ("o", "r"),
    ("e", "s"),
    ("Ġ", "b"),
    ("e", "d"),
    ("Ġ", "f"),
    ("in", "g"),
    ("Ġ", "p"),
    ("o", "u"),
    ("Ġa", "n"),
    ("a", "l"),
    ("a", "r"),
    ("Ġt", "o"),
    ("Ġ", "m"),
    ("Ġo", "f"),
    ("Ġ", "in"),
    ("Ġ", "d"),
    ("Ġ", "h"),
    ("Ġan", "d"),
    ("i", "c"),
    ("a", "s"),
    ("l", "e"),
    ("Ġ", "th"),
    ("i", "on"),
    ("l", "l"),
    ("Ġ", "l"),
    ("Ġ", "re"),
    ("e", "l"),
    ("Ġ", "n"),
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map (openai/gpt-2 encoder.py)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def gpt2_vocab() -> tuple[list[str], list[float], list[int], list[str]]:
    """tokens, scores, token types, merges of the tiny byte-level BPE vocabulary."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    known = set(tokens)
    merges: list[str] = []
    for a, b in _MERGE_CANDIDATES:
        if len(merges) == N_MERGES:
            break
        if a in known and b in known and a + b not in known:
            merges.append(f"{a} {b}")
            tokens.append(a + b)
            known.add(a + b)
    if len(merges) != N_MERGES:
        raise AssertionError("merge candidate list too short")
    tokens += SPECIAL_TOKENS
    types = [TT_NORMAL] * (256 + N_MERGES) + [TT_CONTROL] * len(SPECIAL_TOKENS)
    scores = [0.0] * 256 + [-float(i + 1) for i in range(N_MERGES)] + [0.0] * len(SPECIAL_TOKENS)
    return tokens, scores, types, merges


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary: <unk> <s> </s>, 256 <0xNN> byte tokens, pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL] + [TT_BYTE] * 256
    pieces = [
        "▁",
        "e",
        "t",
        "a",
        "o",
        "i",
        "n",
        "s",
        "h",
        "r",
        "▁t",
        "▁a",
        "he",
        "in",
        "▁the",
        "er",
        "on",
        "re",
        "▁s",
        "at",
        "en",
        "▁w",
        "or",
        "is",
        "it",
        "an",
        "es",
        "ed",
        "▁o",
        "▁c",
        "ing",
        "ou",
        "▁b",
        "al",
        "▁f",
        "ar",
        "le",
        "nd",
        "▁p",
        "▁and",
        "▁of",
    ]
    tokens += pieces
    types += [TT_NORMAL] * len(pieces)
    tokens += ["<pad>"]
    types += [TT_CONTROL]
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(pieces))] + [0.0]
    return tokens, scores, types


def default_spec(seed: int = 0, tokenizer: str = "gpt2") -> dict[str, Any]:
    """Everything ``_write_model`` writes. Model-level corpus cases edit a copy of this."""
    if tokenizer == "gpt2":
        tokens, scores, types, merges = gpt2_vocab()
        tok: dict[str, Any] = {
            "model": "gpt2",
            "pre": "default",
            "tokens": tokens,
            "scores": scores,
            "token_type": types,
            "merges": merges,
            "bos_token_id": tokens.index("<|endoftext|>"),
            "eos_token_id": tokens.index("<|endoftext|>"),
            "eot_token_id": tokens.index("<|im_end|>"),
            "padding_token_id": tokens.index("<|pad|>"),
            "add_bos_token": True,
            "add_eos_token": False,
        }
    elif tokenizer == "llama":
        tokens, scores, types = spm_vocab()
        tok = {
            "model": "llama",
            "pre": "default",
            "tokens": tokens,
            "scores": scores,
            "token_type": types,
            "merges": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "unknown_token_id": 0,
            "padding_token_id": len(tokens) - 1,
            "add_bos_token": True,
            "add_eos_token": False,
            "add_space_prefix": True,
        }
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}")
    return {
        "seed": seed,
        "hparams": {
            "context_length": N_CTX,
            "embedding_length": N_EMBD,
            "block_count": N_LAYER,
            "feed_forward_length": N_FF,
            "head_count": N_HEAD,
            "head_count_kv": N_HEAD_KV,
            "layer_norm_rms_epsilon": RMS_EPS,
            "rope_freq_base": ROPE_BASE,
            "rope_dimension_count": HEAD_DIM,
        },
        "tokenizer": tok,
        # name -> (numpy shape (outer first, i.e. reversed ggml ne), type name)
        "tensors": default_tensors(N_VOCAB if tokenizer == "gpt2" else len(tok["tokens"])),
        # Raw overrides: key -> (value, GGUFValueType name, array sub-type name or None).
        "raw_kv": {},
        "drop_kv": [],
    }


def default_tensors(n_vocab: int, n_layer: int = N_LAYER) -> dict[str, tuple[tuple[int, ...], str]]:
    kv_dim = N_HEAD_KV * HEAD_DIM
    t: dict[str, tuple[tuple[int, ...], str]] = {
        "token_embd.weight": ((n_vocab, N_EMBD), "Q8_0"),
        "output_norm.weight": ((N_EMBD,), "F32"),
        "output.weight": ((n_vocab, N_EMBD), "Q8_0"),
    }
    for i in range(n_layer):
        t[f"blk.{i}.attn_norm.weight"] = ((N_EMBD,), "F32")
        t[f"blk.{i}.attn_q.weight"] = ((N_HEAD * HEAD_DIM, N_EMBD), "Q8_0")
        t[f"blk.{i}.attn_k.weight"] = ((kv_dim, N_EMBD), "Q8_0")
        t[f"blk.{i}.attn_v.weight"] = ((kv_dim, N_EMBD), "Q4_0")
        t[f"blk.{i}.attn_output.weight"] = ((N_EMBD, N_HEAD * HEAD_DIM), "Q8_0")
        t[f"blk.{i}.ffn_norm.weight"] = ((N_EMBD,), "F32")
        t[f"blk.{i}.ffn_gate.weight"] = ((N_FF, N_EMBD), "Q4_0")
        t[f"blk.{i}.ffn_up.weight"] = ((N_FF, N_EMBD), "Q4_0")
        t[f"blk.{i}.ffn_down.weight"] = ((N_EMBD, N_FF), "Q8_0")
    return t


def _write_model(path: Path, spec: dict[str, Any]) -> Path:
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hp = spec["hparams"]
    tok = spec["tokenizer"]
    w = gguf.GGUFWriter(str(path), ARCH)
    vt = gguf.GGUFValueType
    values: list[tuple[str, Any, Any, Any]] = [
        ("general.name", "hologram-tiny-llama", vt.STRING, None),
        (f"{ARCH}.context_length", hp["context_length"], vt.UINT32, None),
        (f"{ARCH}.embedding_length", hp["embedding_length"], vt.UINT32, None),
        (f"{ARCH}.block_count", hp["block_count"], vt.UINT32, None),
        (f"{ARCH}.feed_forward_length", hp["feed_forward_length"], vt.UINT32, None),
        (f"{ARCH}.attention.head_count", hp["head_count"], vt.UINT32, None),
        (f"{ARCH}.attention.head_count_kv", hp["head_count_kv"], vt.UINT32, None),
        (
            f"{ARCH}.attention.layer_norm_rms_epsilon",
            hp["layer_norm_rms_epsilon"],
            vt.FLOAT32,
            None,
        ),
        (f"{ARCH}.rope.freq_base", hp["rope_freq_base"], vt.FLOAT32, None),
        (f"{ARCH}.rope.dimension_count", hp["rope_dimension_count"], vt.UINT32, None),
        ("general.file_type", 7, vt.UINT32, None),  # MOSTLY_Q8_0
        ("tokenizer.ggml.model", tok["model"], vt.STRING, None),
        ("tokenizer.ggml.pre", tok["pre"], vt.STRING, None),
        ("tokenizer.ggml.tokens", tok["tokens"], vt.ARRAY, vt.STRING),
        ("tokenizer.ggml.scores", tok["scores"], vt.ARRAY, vt.FLOAT32),
        ("tokenizer.ggml.token_type", tok["token_type"], vt.ARRAY, vt.INT32),
    ]
    if tok.get("merges"):
        values.append(("tokenizer.ggml.merges", tok["merges"], vt.ARRAY, vt.STRING))
    for k in (
        "bos_token_id",
        "eos_token_id",
        "eot_token_id",
        "unknown_token_id",
        "padding_token_id",
    ):
        if tok.get(k) is not None:
            values.append((f"tokenizer.ggml.{k}", tok[k], vt.UINT32, None))
    for k in ("add_bos_token", "add_eos_token", "add_space_prefix"):
        if tok.get(k) is not None:
            values.append((f"tokenizer.ggml.{k}", tok[k], vt.BOOL, None))
    values.append(("tokenizer.chat_template", CHAT_TEMPLATE, vt.STRING, None))
    for key, (val, tname, sub) in spec["raw_kv"].items():
        values = [v for v in values if v[0] != key]
        values.append((key, val, vt[tname], vt[sub] if sub else None))
    for key, val, t, sub in values:
        if key in spec["drop_kv"]:
            continue
        w.add_key_value(key, val, t, sub_type=sub)

    rng = np.random.default_rng(spec["seed"])
    for name, (shape, tname) in spec["tensors"].items():
        if tname == "F32" and len(shape) == 1:
            data = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            data = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        qtype = gguf.GGMLQuantizationType[tname]
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_valid_model(path: str | Path, seed: int = 0, tokenizer: str = "gpt2") -> Path:
    """Write the tiny valid llama model (see the module docstring) and return its path."""
    return _write_model(Path(path), default_spec(seed, tokenizer))


# --------------------------------------------------------------------------------------------
# A small GGUF parser/assembler for byte-level corruption

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
_FIXED = {
    T_U8: 1,
    T_I8: 1,
    T_U16: 2,
    T_I16: 2,
    T_U32: 4,
    T_I32: 4,
    T_F32: 4,
    T_BOOL: 1,
    T_U64: 8,
    T_I64: 8,
    T_F64: 8,
}
# ggml type id -> (block size, type size), for the types the valid model uses.
_GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34)}
U64_MAX = (1 << 64) - 1


def u32(x: int) -> bytes:
    return struct.pack("<I", x & 0xFFFFFFFF)


def u64(x: int) -> bytes:
    return struct.pack("<Q", x & U64_MAX)


def gstr(b: bytes | str) -> bytes:
    raw = b.encode() if isinstance(b, str) else b
    return u64(len(raw)) + raw


@dataclass
class KV:
    """One metadata entry; ``raw`` is the encoded entry (key, type, value) as written."""

    key: str
    vtype: int
    raw: bytes
    start: int = 0  # absolute offsets in the parsed file
    type_at: int = 0
    value_at: int = 0

    @staticmethod
    def make(key: bytes | str, vtype: int, value: bytes) -> KV:
        k = key.decode(errors="replace") if isinstance(key, bytes) else key
        return KV(k, vtype, gstr(key) + u32(vtype) + value)


@dataclass
class TI:
    """One tensor info. ``offset`` is relative to the data section."""

    name: bytes
    dims: list[int]
    ttype: int
    offset: int
    start: int = 0
    ndims_at: int = 0
    type_at: int = 0
    offset_at: int = 0
    raw: bytes | None = None  # if set, written verbatim instead of the fields

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        out = gstr(self.name) + u32(len(self.dims))
        for d in self.dims:
            out += u64(d)
        return out + u32(self.ttype) + u64(self.offset)

    def nbytes(self) -> int:
        bs, ts = _GGML[self.ttype]
        n = self.dims[0] // bs * ts if self.dims else ts
        for d in self.dims[1:]:
            n *= d
        return n


@dataclass
class Gguf:
    magic: bytes
    version: int
    n_tensors: int
    n_kv: int
    kvs: list[KV]
    tis: list[TI]
    alignment: int
    data_offset: int
    data: bytes  # the data section, from data_offset to the end of the file
    extra: dict[str, Any] = field(default_factory=dict)

    def assemble(self, n_tensors: int | None = None, n_kv: int | None = None) -> bytes:
        """Re-encode with the current lists; counts follow the lists unless given."""
        out = bytearray(self.magic + u32(self.version))
        out += u64(len(self.tis) if n_tensors is None else n_tensors)
        out += u64(len(self.kvs) if n_kv is None else n_kv)
        for kv in self.kvs:
            out += kv.raw
        for ti in self.tis:
            out += ti.encode()
        out += b"\0" * (-len(out) % self.alignment)
        out += self.data
        return bytes(out)

    def kv(self, key: str) -> KV:
        for kv in self.kvs:
            if kv.key == key:
                return kv
        raise KeyError(key)

    def kv_index(self, key: str) -> int:
        return [k.key for k in self.kvs].index(key)

    def ti(self, name: str) -> TI:
        for ti in self.tis:
            if ti.name == name.encode():
                return ti
        raise KeyError(name)


def _skip_value(b: bytes, pos: int, t: int) -> int:
    if t in _FIXED:
        return pos + _FIXED[t]
    if t == T_STR:
        (n,) = struct.unpack_from("<Q", b, pos)
        return pos + 8 + n
    if t == T_ARR:
        et, n = struct.unpack_from("<IQ", b, pos)
        pos += 12
        if et in _FIXED:
            return pos + n * _FIXED[et]
        for _ in range(n):
            pos = _skip_value(b, pos, et)
        return pos
    raise ValueError(f"bad type {t}")


def parse(b: bytes) -> Gguf:
    """Parse a valid GGUF (no validation; for locating fields to corrupt)."""
    magic = b[:4]
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", b, 4)
    pos = 24
    kvs: list[KV] = []
    alignment = 32
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", b, pos)
        key = b[pos + 8 : pos + 8 + klen].decode()
        pos += 8 + klen
        type_at = pos
        (t,) = struct.unpack_from("<I", b, pos)
        pos += 4
        value_at = pos
        pos = _skip_value(b, pos, t)
        if key == "general.alignment" and t == T_U32:
            (alignment,) = struct.unpack_from("<I", b, value_at)
        kvs.append(KV(key, t, b[start:pos], start, type_at, value_at))
    tis: list[TI] = []
    for _ in range(n_tensors):
        start = pos
        (nlen,) = struct.unpack_from("<Q", b, pos)
        name = b[pos + 8 : pos + 8 + nlen]
        pos += 8 + nlen
        ndims_at = pos
        (nd,) = struct.unpack_from("<I", b, pos)
        dims = list(struct.unpack_from(f"<{nd}Q", b, pos + 4))
        pos += 4 + 8 * nd
        type_at = pos
        (tt, off) = struct.unpack_from("<IQ", b, pos)
        pos += 12
        tis.append(TI(name, dims, tt, off, start, ndims_at, type_at, type_at + 4))
    data_offset = pos + (-pos % alignment)
    return Gguf(magic, version, n_tensors, n_kv, kvs, tis, alignment, data_offset, b[data_offset:])


def patch(b: bytes, at: int, new: bytes) -> bytes:
    return b[:at] + new + b[at + len(new) :]


# --------------------------------------------------------------------------------------------
# The corpus

GGUF_ERROR = "GGUFError"
MODEL_LOAD_ERROR = "ModelLoadError"


@dataclass
class Case:
    """One malformed file. ``build(valid_bytes, parsed_valid) -> bytes`` for container cases,
    ``spec`` edits (a function on a deep copy of ``default_spec()``) for model-level cases.
    ``contains``: substrings the error message must all contain (case-insensitive);
    ``any_of``: at least one must appear (used where the loader's wording is not fixed here)."""

    id: str
    error: str
    contains: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    build: Callable[[bytes, Gguf], bytes] | None = None
    spec: Callable[[dict[str, Any]], None] | None = None
    tokenizer: str = "gpt2"

    @property
    def group(self) -> str:
        return self.id[:3]

    def filename(self) -> str:
        return f"{self.id}.gguf"


CASES: list[Case] = []


def _c(
    id: str, contains: Sequence[str], build: Callable[[bytes, Gguf], bytes], error: str = GGUF_ERROR
) -> None:
    CASES.append(Case(id, error, tuple(contains), build=build))


def _m(
    id: str,
    any_of: Sequence[str],
    spec: Callable[[dict[str, Any]], None],
    tokenizer: str = "gpt2",
    contains: Sequence[str] = (),
) -> None:
    CASES.append(
        Case(id, MODEL_LOAD_ERROR, tuple(contains), tuple(any_of), spec=spec, tokenizer=tokenizer)
    )


def _with_kv(g: Gguf, kv: KV, index: int | None = None) -> bytes:
    g = copy.deepcopy(g)
    if index is None:
        g.kvs.append(kv)
    else:
        g.kvs.insert(index, kv)
    return g.assemble()


def _replace_kv(g: Gguf, key: str, kv: KV) -> bytes:
    g = copy.deepcopy(g)
    g.kvs[g.kv_index(key)] = kv
    return g.assemble()


def _edit_ti(g: Gguf, i: int, **changes: Any) -> bytes:
    g = copy.deepcopy(g)
    for k, v in changes.items():
        setattr(g.tis[i], k, v)
    return g.assemble()


def _tname(g: Gguf, i: int) -> str:
    return g.tis[i].name.decode()


# G01 whole file
_c("G01_empty", ["header magic"], lambda b, g: b"")
_c("G01_3_bytes", ["header magic"], lambda b, g: b"GGU")
_c("G01_magic_only", ["header version"], lambda b, g: b"GGUF")

# G02 header cut at every offset 0..24
for _n in range(25):
    _field = (
        "header magic"
        if _n < 4
        else "header version"
        if _n < 8
        else "header n_tensors"
        if _n < 16
        else "header n_kv"
    )
    _c(f"G02_header_cut_{_n:02d}", [_field], lambda b, g, n=_n: b[:n])

# G03 magic
for _m_ in (b"FUGG", b"GGML", b"GGJT", b"lmgg"):
    _c(f"G03_magic_{_m_.decode()}", ["header magic"], lambda b, g, m=_m_: m + b[4:])

# G04 version (2 is supported)
for _v in (0, 1, 4, 0xFFFFFFFF):
    _c(
        f"G04_version_{_v:#x}",
        ["header version", "version"],
        lambda b, g, v=_v: patch(b, 4, u32(v)),
    )

# G05 byte-swapped version 3
_c(
    "G05_version_byteswapped",
    ["header version", "endian"],
    lambda b, g: patch(b, 4, u32(0x03000000)),
)

# G06 / G07 counts
for _name, _at in (("n_tensors", 8), ("n_kv", 16)):
    for _val, _tag in ((U64_MAX, "u64max"), (1 << 63, "2p63")):
        _c(
            f"{'G06' if _at == 8 else 'G07'}_{_name}_{_tag}",
            [f"header {_name}"],
            lambda b, g, at=_at, val=_val: patch(b, at, u64(val)),
        )
    _c(
        f"{'G06' if _at == 8 else 'G07'}_{_name}_1e9_1kb",
        [f"header {_name}"],
        lambda b, g, at=_at: patch(b, at, u64(10**9))[:1024],
    )

# G08 key length (of metadata[1])
for _val, _tag in ((U64_MAX, "u64max"), (1 << 48, "2p48"), (None, "past_eof")):

    def _g08(b: bytes, g: Gguf, val: int | None = _val) -> bytes:
        at = g.kvs[1].start
        return patch(b, at, u64(len(b) - at - 8 + 1 if val is None else val))

    _c(f"G08_key_length_{_tag}", ["metadata[1] key length"], _g08)

# G09 key content
_c(
    "G09_key_empty",
    ["metadata[1] key", "empty"],
    lambda b, g: _with_kv(g, KV.make(b"", T_U32, u32(1)), 1),
)
_c(
    "G09_key_not_utf8",
    ["metadata[1] key", "utf-8"],
    lambda b, g: _with_kv(g, KV.make(b"general.\xff\xfename", T_U32, u32(1)), 1),
)
_c(
    "G09_key_nul",
    ["metadata[1] key", "nul"],
    lambda b, g: _with_kv(g, KV.make(b"general.na\0me", T_U32, u32(1)), 1),
)

# G10 duplicate key, second value differs
_c(
    "G10_duplicate_key",
    ["llama.block_count", "duplicate key"],
    lambda b, g: _with_kv(g, KV.make("llama.block_count", T_U32, u32(7))),
)

# G11 value type
for _t in (13, 0x7FFFFFFF, 0xFFFFFFFF):
    _c(
        f"G11_value_type_{_t:#x}",
        ["'llama.context_length' type", "unknown metadata value type"],
        lambda b, g, t=_t: patch(b, g.kv("llama.context_length").type_at, u32(t)),
    )

# G12 array element type
_c(
    "G12_nested_array",
    ["'tokenizer.ggml.tokens' array element type", "nested"],
    lambda b, g: patch(b, g.kv("tokenizer.ggml.tokens").value_at, u32(T_ARR)),
)
_c(
    "G12_bad_element_type",
    ["'tokenizer.ggml.tokens' array element type", "unknown"],
    lambda b, g: patch(b, g.kv("tokenizer.ggml.tokens").value_at, u32(77)),
)

# G13 array count x element size overflows
_c(
    "G13_array_2p63_u8",
    ["'test.array' array length"],
    lambda b, g: _with_kv(g, KV.make("test.array", T_ARR, u32(T_U8) + u64(1 << 63) + b"\0" * 8)),
)
_c(
    "G13_array_2p61_u64",
    ["'test.array' array length"],
    lambda b, g: _with_kv(g, KV.make("test.array", T_ARR, u32(T_U64) + u64(1 << 61) + b"\0" * 8)),
)
_c(
    "G13_array_2p63_f32_in_place",
    ["'tokenizer.ggml.scores' array length"],
    lambda b, g: patch(b, g.kv("tokenizer.ggml.scores").value_at + 4, u64(1 << 63)),
)

# G14 10^9 strings in a 1 KB file (and in the full file)
_c(
    "G14_string_array_1e9_1kb",
    ["'tokenizer.ggml.tokens' array length"],
    lambda b, g: (
        b"GGUF"
        + u32(3)
        + u64(0)
        + u64(1)
        + KV.make("tokenizer.ggml.tokens", T_ARR, u32(T_STR) + u64(10**9)).raw
    ).ljust(1024, b"\0"),
)
_c(
    "G14_string_array_1e9",
    ["'tokenizer.ggml.tokens' array length"],
    lambda b, g: patch(b, g.kv("tokenizer.ggml.tokens").value_at + 4, u64(10**9)),
)

# G15 string value length
_c(
    "G15_string_past_eof",
    ["'general.name' length"],
    lambda b, g: patch(b, g.kv("general.name").value_at, u64(len(b))),
)
_c(
    "G15_string_over_1gib",
    ["'general.name' length"],
    lambda b, g: patch(b, g.kv("general.name").value_at, u64((1 << 30) + 1)),
)
_c(
    "G15_string_u64max",
    ["'general.name' length"],
    lambda b, g: patch(b, g.kv("general.name").value_at, u64(U64_MAX)),
)
_c(
    "G15_string_not_utf8",
    ["'general.name'", "utf-8"],
    lambda b, g: _replace_kv(g, "general.name", KV.make("general.name", T_STR, gstr(b"ab\xc3("))),
)


def _align_kv(vtype: int, value: bytes) -> Callable[[bytes, Gguf], bytes]:
    return lambda b, g: _with_kv(g, KV.make("general.alignment", vtype, value), 1)


# G16-G18 general.alignment
_c("G16_alignment_0", ["general.alignment", "power of two"], _align_kv(T_U32, u32(0)))
for _a in (13, 3):
    _c(f"G17_alignment_{_a}", ["general.alignment", "power of two"], _align_kv(T_U32, u32(_a)))
_c("G17_alignment_2p31", ["general.alignment"], _align_kv(T_U32, u32(1 << 31)))
_c("G18_alignment_int32", ["general.alignment", "uint32"], _align_kv(T_I32, u32(32)))
_c("G18_alignment_string", ["general.alignment", "uint32"], _align_kv(T_STR, gstr("32")))
_c(
    "G18_alignment_array",
    ["general.alignment", "uint32"],
    _align_kv(T_ARR, u32(T_U32) + u64(1) + u32(32)),
)
_c("G18_alignment_u64", ["general.alignment", "uint32"], _align_kv(T_U64, u64(32)))

# G19 tensor name
_c(
    "G19_name_64_bytes",
    ["tensor[1] name length", "63"],
    lambda b, g: _edit_ti(g, 1, name=b"a" * 64),
)
_c(
    "G19_name_u64max",
    ["tensor[1] name length"],
    lambda b, g: patch(b, g.tis[1].start, u64(U64_MAX)),
)
_c("G19_name_empty", ["tensor[1] name", "empty"], lambda b, g: _edit_ti(g, 1, name=b""))
_c("G19_name_not_utf8", ["tensor[1] name", "utf-8"], lambda b, g: _edit_ti(g, 1, name=b"\xff.w"))

# G20 duplicate tensor name
_c(
    "G20_duplicate_tensor_name",
    ["duplicate tensor name"],
    lambda b, g: _edit_ti(g, 2, name=g.tis[1].name),
)

# G21 n_dims
_c("G21_n_dims_5", ["n_dims"], lambda b, g: patch(b, g.tis[1].ndims_at, u32(5)))
_c("G21_n_dims_u32max", ["n_dims"], lambda b, g: patch(b, g.tis[1].ndims_at, u32(0xFFFFFFFF)))

# G22 negative ne
_c(
    "G22_ne1_minus1",
    ["ne[1]", "negative"],
    lambda b, g: patch(b, g.tis[0].ndims_at + 4 + 8, u64(U64_MAX)),
)
_c("G22_ne0_minus32", ["ne[0]", "negative"], lambda b, g: patch(b, g.tis[0].ndims_at + 4, u64(-32)))
_c(
    "G22_ne1_int64_min",
    ["ne[1]", "negative"],
    lambda b, g: patch(b, g.tis[0].ndims_at + 4 + 8, u64(1 << 63)),
)

# G23 element count overflows int64
_c(
    "G23_ne_product_overflow",
    ["shape", "overflows int64"],
    lambda b, g: _edit_ti(g, 0, dims=[4 * 0x7FFFFFFF] * 4),
)


# G24 byte size overflows although the element count fits (tensor 1 is F32 output_norm? no:
# pick the first F32 tensor)
def _first(g: Gguf, ttype: int) -> int:
    return next(i for i, t in enumerate(g.tis) if t.ttype == ttype)


_c(
    "G24_nbytes_2p42p1",
    ["shape", "byte size"],
    lambda b, g: _edit_ti(g, _first(g, 0), dims=[(1 << 42) + 1, 1 << 20]),
)
_c(
    "G24_nbytes_2p31_sq",
    ["shape", "byte size"],
    lambda b, g: _edit_ti(g, _first(g, 0), dims=[1 << 31, 1 << 31]),
)

# G25 ggml type
for _t in (42, 0xFFFFFFFF, 4, 5, 16, 24, 39):
    _c(f"G25_type_{_t}", ["type", f"{_t}"], lambda b, g, t=_t: patch(b, g.tis[1].type_at, u32(t)))


# G26 ne[0] not a multiple of the block size
def _g26(b: bytes, g: Gguf) -> bytes:
    i = _first(g, 2)  # a Q4_0 tensor
    return patch(b, g.tis[i].ndims_at + 4, u64(33))


_c("G26_q4_0_ne0_33", ["ne[0]", "block size"], _g26)

# G27 offset not a multiple of the alignment
_c(
    "G27_offset_unaligned",
    ["offset", "multiple of general.alignment"],
    lambda b, g: patch(b, g.tis[1].offset_at, u64(g.tis[1].offset + 4)),
)
_c(
    "G27_offset_plus_1",
    ["offset", "multiple of general.alignment"],
    lambda b, g: patch(b, g.tis[1].offset_at, u64(g.tis[1].offset + 1)),
)

# G28 huge offsets
_c("G28_offset_u64max", ["offset"], lambda b, g: patch(b, g.tis[1].offset_at, u64(U64_MAX)))
_c(
    "G28_offset_add_overflows",
    ["offset", "overflows"],
    lambda b, g: patch(b, g.tis[1].offset_at, u64(U64_MAX - 31)),
)
_c("G28_offset_2p63", ["not within"], lambda b, g: patch(b, g.tis[1].offset_at, u64(1 << 63)))


# G29 tensor data past EOF (truncated download)
def _last_end(g: Gguf) -> int:
    t = g.tis[-1]
    return g.data_offset + t.offset + t.nbytes()


_c("G29_truncated_last_tensor", ["not within"], lambda b, g: b[: _last_end(g) - 1])
_c("G29_truncated_half", ["not within"], lambda b, g: b[: len(b) // 2])
_c("G29_truncated_at_data", ["not within"], lambda b, g: b[: g.data_offset])

# G30 layout: overlap (rejected at minimum), and gaps / out-of-order (also rejected: hologram
# requires llama.cpp's exact running padded sum)
_c(
    "G30_overlap_same_offset",
    ["offset", "overlaps"],
    lambda b, g: patch(b, g.tis[1].offset_at, u64(g.tis[0].offset)),
)
_c(
    "G30_overlap_partial",
    ["offset", "overlaps"],
    lambda b, g: patch(b, g.tis[2].offset_at, u64(g.tis[2].offset - 32)),
)
_c(
    "G30_gap",
    ["offset", "gap"],
    lambda b, g: patch(b, g.tis[1].offset_at, u64(g.tis[1].offset + 32)),
)


def _g30_swap(b: bytes, g: Gguf) -> bytes:
    # two same-sized F32 norms: swapping their offsets keeps everything in bounds
    a = g.ti("blk.0.attn_norm.weight")
    c = g.ti("blk.0.ffn_norm.weight")
    return patch(patch(b, a.offset_at, u64(c.offset)), c.offset_at, u64(a.offset))


_c("G30_out_of_order", ["offset", "out of order"], _g30_swap)


# G31 sum of padded sizes overflows u64
def _g31(b: bytes, g: Gguf) -> bytes:
    g = copy.deepcopy(g)
    i = _first(g, 0)
    g.tis[i].dims = [1 << 61]  # 2^63 bytes of F32
    j = i + 1
    g.tis[j].offset = 1 << 63
    for t in g.tis[j + 1 :]:
        t.offset = U64_MAX - 31
    return g.assemble()


_c("G31_padded_sum_overflow", ["not within"], _g31)


# ---- model-level cases (valid containers, invalid models)


def _hp(key: str, val: Any) -> Callable[[dict[str, Any]], None]:
    def f(s: dict[str, Any]) -> None:
        s["hparams"][key] = val

    return f


# G32 block_count
_m("G32_block_count_0", ["block_count"], _hp("block_count", 0))
_m("G32_block_count_1e6", ["block_count"], _hp("block_count", 10**6))
_m("G32_block_count_3_missing_layer", ["block_count", "blk.2"], _hp("block_count", 3))
_m("G32_block_count_1_extra_layer", ["block_count", "blk.1"], _hp("block_count", 1))

# G33 heads
_m("G33_head_count_0", ["head_count"], _hp("head_count", 0))
_m("G33_embd_not_divisible", ["head_count", "embedding_length"], _hp("head_count", 5))
_m("G33_kv_heads_gt_heads", ["head_count_kv"], _hp("head_count_kv", 8))
_m("G33_kv_heads_0", ["head_count_kv"], _hp("head_count_kv", 0))
_m("G33_heads_not_multiple_of_kv", ["head_count_kv"], _hp("head_count_kv", 3))


def _raw(
    key: str, val: Any, tname: str, sub: str | None = None
) -> Callable[[dict[str, Any]], None]:
    def f(s: dict[str, Any]) -> None:
        s["raw_kv"][key] = (val, tname, sub)

    return f


# G34 tokenizer arrays with the wrong element type
_m(
    "G34_scores_uint8",
    ["tokenizer.ggml.scores"],
    _raw("tokenizer.ggml.scores", [0] * N_VOCAB, "ARRAY", "UINT8"),
)
_m(
    "G34_token_type_string",
    ["tokenizer.ggml.token_type"],
    _raw("tokenizer.ggml.token_type", ["1"] * N_VOCAB, "ARRAY", "STRING"),
)
_m(
    "G34_tokens_int32",
    ["tokenizer.ggml.tokens"],
    _raw("tokenizer.ggml.tokens", list(range(N_VOCAB)), "ARRAY", "INT32"),
)


def _tok(key: str, fn: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def f(s: dict[str, Any]) -> None:
        s["tokenizer"][key] = fn(s["tokenizer"][key])

    return f


# G35 tokenizer array lengths and merges
_m("G35_scores_short", ["scores"], _tok("scores", lambda v: v[:-1]))
_m("G35_scores_long", ["scores"], _tok("scores", lambda v: v + [0.0, 0.0]))
_m("G35_token_type_short", ["token_type"], _tok("token_type", lambda v: v[:-1]))
_m("G35_merge_unknown_token", ["merge"], _tok("merges", lambda v: v + ["Ġzz qq"]))
_m("G35_merge_malformed", ["merge"], _tok("merges", lambda v: v + ["nospace"]))

# G36 special token ids out of range
_m("G36_bos_eq_n_vocab", ["bos"], _tok("bos_token_id", lambda v: N_VOCAB))
_m("G36_eos_1e6", ["eos"], _tok("eos_token_id", lambda v: 10**6))
_m("G36_eot_u32max", ["eot"], _tok("eot_token_id", lambda v: 0xFFFFFFFF))
_m("G36_pad_negative_i32", ["pad"], _raw("tokenizer.ggml.padding_token_id", -1, "INT32"))
_m("G36_bos_negative_i32", ["bos"], _raw("tokenizer.ggml.bos_token_id", -5, "INT32"))


# G37 token text
def _spm_token(idx_text: str, new: str) -> Callable[[dict[str, Any]], None]:
    def f(s: dict[str, Any]) -> None:
        toks = s["tokenizer"]["tokens"]
        toks[toks.index(idx_text)] = new

    return f


_m("G37_byte_token_0x-1", ["<0x-1>"], _spm_token("<0xFF>", "<0x-1>"), tokenizer="llama")
_m("G37_byte_token_0xZZ", ["<0xZZ>"], _spm_token("<0xFE>", "<0xZZ>"), tokenizer="llama")
_m("G37_token_text_over_64k", ["token"], _tok("tokens", lambda v: v[:-1] + ["x" * 70000]))


def _g37_vocab_2p31(b: bytes, g: Gguf) -> bytes:
    return patch(b, g.kv("tokenizer.ggml.tokens").value_at + 4, u64(1 << 31))


CASES.append(
    Case(
        "G37_vocab_size_2p31",
        GGUF_ERROR,
        ("'tokenizer.ggml.tokens' array length",),
        build=_g37_vocab_2p31,
    )
)


# G38 tensor shapes vs hparams; required tensors missing
def _tensor(
    name: str, shape: tuple[int, ...] | None, tname: str | None = None
) -> Callable[[dict[str, Any]], None]:
    def f(s: dict[str, Any]) -> None:
        if shape is None:
            del s["tensors"][name]
        else:
            s["tensors"][name] = (shape, tname or s["tensors"][name][1])

    return f


_m(
    "G38_token_embd_vocab_mismatch",
    ["token_embd.weight"],
    _tensor("token_embd.weight", (N_VOCAB - 1, N_EMBD)),
)
_m(
    "G38_token_embd_embd_mismatch",
    ["token_embd.weight"],
    _tensor("token_embd.weight", (N_VOCAB, 2 * N_EMBD)),
)
_m(
    "G38_attn_q_shape",
    ["blk.1.attn_q.weight"],
    _tensor("blk.1.attn_q.weight", (N_EMBD, 2 * N_EMBD)),
)
_m(
    "G38_ffn_down_transposed",
    ["blk.0.ffn_down.weight"],
    _tensor("blk.0.ffn_down.weight", (N_FF, N_EMBD)),
)
_m("G38_output_norm_1d_wrong", ["output_norm.weight"], _tensor("output_norm.weight", (32,)))
_m("G38_missing_ffn_down", ["blk.1.ffn_down.weight"], _tensor("blk.1.ffn_down.weight", None))
_m("G38_missing_token_embd", ["token_embd.weight"], _tensor("token_embd.weight", None))
_m("G38_missing_attn_norm", ["blk.0.attn_norm.weight"], _tensor("blk.0.attn_norm.weight", None))

# Sanity: unique ids.
assert len({c.id for c in CASES}) == len(CASES)


def case_ids() -> list[str]:
    return [c.id for c in CASES]


def build_case(case: Case, outdir: Path, valid_bytes: bytes, parsed: Gguf) -> Path:
    path = Path(outdir) / case.filename()
    if case.build is not None:
        path.write_bytes(case.build(valid_bytes, parsed))
    else:
        if case.spec is None:
            raise AssertionError(case.id)
        spec = default_spec(0, case.tokenizer)
        case.spec(spec)
        _write_model(path, spec)
    return path


def build_corpus(outdir: str | Path) -> dict[str, Path]:
    """Write valid.gguf, valid_spm.gguf, every case and manifest.tsv; return id -> path."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    valid = write_valid_model(out / "valid.gguf")
    write_valid_model(out / "valid_spm.gguf", tokenizer="llama")
    valid_bytes = valid.read_bytes()
    parsed = parse(valid_bytes)
    paths: dict[str, Path] = {}
    lines = ["valid.gguf\tok\t", "valid_spm.gguf\tok\t"]
    for case in CASES:
        paths[case.id] = build_case(case, out, valid_bytes, parsed)
        lines.append(f"{case.filename()}\t{case.error}\t{'|'.join(case.contains)}")
    (out / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    paths = build_corpus(argv[1])
    print(f"wrote {len(paths)} malformed files + valid.gguf, valid_spm.gguf to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
