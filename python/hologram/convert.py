"""Hugging Face BERT-family encoder folder -> GGUF (``hologram convert SRC_DIR OUT.gguf``).

The file follows llama.cpp's ``convert_hf_to_gguf.py`` (class ``BertModel``) so that it also
loads in llama.cpp: architecture ``bert``, the same metadata keys, tensor names and the same
"phantom space" vocabulary (a WordPiece word-start piece ``word`` is stored as ``"\u2581word"``,
a continuation piece ``##iece`` as ``"iece"``, bracketed special tokens such as ``[CLS]`` as they
are). Special tokens are written the way gguf-py's ``SpecialVocab`` writes them for a BERT
tokenizer: BOS = [CLS] (current llama.cpp has no separate CLS key), EOS = SEP = [SEP],
add_bos = add_eos = true, add_sep = false.

hologram-specific keys (llama.cpp has none: its WordPiece tokenizer always lower-cases and strips
accents, and leaves normalisation of the pooled vector to the caller):

- ``hologram.tokenizer.do_lower_case`` (bool): lower-case the text before WordPiece.
- ``hologram.tokenizer.strip_accents`` (bool): NFD-decompose and drop non-spacing marks.
- ``hologram.embedding.normalize`` (bool): the sentence-transformers pipeline ends with an L2
  ``Normalize`` module.

Tensor types (``--type``): ``f32`` writes everything as float32. ``f16`` and ``q8_0`` convert the
2-D matrices of the transformer blocks (attn_q/k/v, attn_output, ffn_up, ffn_down) only; the
embedding tables (token, position, token type), LayerNorm weights and every bias stay float32
(they are looked up or added, not multiplied, so they cost no matmul time and keep fidelity).
``q8_0`` is a mixed file like llama.cpp's K-quant mixes: attn_q, attn_k, attn_output and
ffn_down in Q8_0, attn_v and ffn_up in F16 (see ``Q8_0_F16_STEMS``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import gguf
import numpy as np
import numpy.typing as npt

OutType = Literal["f32", "f16", "q8_0"]
OUT_TYPES: tuple[OutType, ...] = ("f32", "f16", "q8_0")

# hologram-specific metadata keys (see the module docstring).
KEY_DO_LOWER_CASE = "hologram.tokenizer.do_lower_case"
KEY_STRIP_ACCENTS = "hologram.tokenizer.strip_accents"
KEY_NORMALIZE = "hologram.embedding.normalize"

PHANTOM_SPACE = "\u2581"

# gguf token types (llama.cpp LLAMA_TOKEN_TYPE_*).
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5

# gguf PoolingType values.
POOLING_MEAN = 1
POOLING_CLS = 2
POOLING_LAST = 3

# llama.cpp LlamaFileType values for general.file_type.
_FILE_TYPES: dict[OutType, int] = {"f32": 0, "f16": 1, "q8_0": 7}

_SUPPORTED_ACTIVATIONS = ("gelu",)

FloatArray = npt.NDArray[np.float32]


class ConversionError(ValueError):
    """The folder cannot be converted (not a BERT-family model, missing files, unsupported
    hyper-parameters). The message says why, in one line."""


@dataclass(frozen=True)
class BertHParams:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float


@dataclass
class Vocab:
    tokens: list[str]  # phantom-space representation, indexed by id
    token_types: list[int]
    special_ids: dict[str, int]  # bos, eos, unk, sep, pad, cls, mask
    do_lower_case: bool
    strip_accents: bool


@dataclass
class ConversionResult:
    """What `convert` wrote (for the CLI's summary line and for tests)."""

    path: Path
    out_type: OutType
    n_tensors: int
    n_vocab: int
    pooling: int | None
    normalize: bool
    tensor_types: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading the Hugging Face folder


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from e
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e.strerror})") from e


def _read_json_obj(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return cast(dict[str, Any], data)


def _int_param(cfg: Mapping[str, Any], key: str, lo: int = 1, hi: int = 1 << 24) -> int:
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConversionError(f"config.json: {key} is missing or not an integer")
    if not lo <= v <= hi:
        raise ConversionError(f"config.json: {key} = {v} is out of range [{lo}, {hi}]")
    return v


def read_hparams(cfg: Mapping[str, Any]) -> BertHParams:
    """Validate a BERT config.json and return its hyper-parameters."""
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    is_bert = model_type == "bert" or (
        model_type is None
        and isinstance(archs, list)
        and any(isinstance(a, str) and a.startswith("Bert") for a in archs)
    )
    if not is_bert:
        raise ConversionError(
            f"not a BERT-family model: config.json has model_type={model_type!r}, "
            f"architectures={archs!r} (supported: model_type 'bert')"
        )
    act = cfg.get("hidden_act", "gelu")
    if act not in _SUPPORTED_ACTIVATIONS:
        raise ConversionError(
            f"unsupported activation hidden_act={act!r} (supported: {', '.join(_SUPPORTED_ACTIVATIONS)})"
        )
    pos = cfg.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ConversionError(f"unsupported position_embedding_type={pos!r} (supported: 'absolute')")
    if cfg.get("is_decoder") is True or cfg.get("add_cross_attention") is True:
        raise ConversionError("unsupported: decoder / cross-attention BERT configs")
    hidden = _int_param(cfg, "hidden_size")
    heads = _int_param(cfg, "num_attention_heads", hi=4096)
    if hidden % heads != 0:
        raise ConversionError(
            f"config.json: hidden_size {hidden} is not divisible by num_attention_heads {heads}"
        )
    eps = cfg.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < float(eps) < 1:
        raise ConversionError(f"config.json: layer_norm_eps = {eps!r} is not a small positive number")
    tvs = cfg.get("type_vocab_size", 2)
    if not isinstance(tvs, int) or isinstance(tvs, bool) or not 1 <= tvs <= 1024:
        raise ConversionError(f"config.json: type_vocab_size = {tvs!r} is invalid")
    return BertHParams(
        vocab_size=_int_param(cfg, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_int_param(cfg, "intermediate_size"),
        num_layers=_int_param(cfg, "num_hidden_layers", hi=4096),
        num_heads=heads,
        max_positions=_int_param(cfg, "max_position_embeddings"),
        type_vocab_size=tvs,
        layer_norm_eps=float(eps),
    )


def phantom(tok: str) -> str:
    """llama.cpp's vocabulary representation of a WordPiece token."""
    if tok.startswith("[") and tok.endswith("]"):
        return tok
    if tok.startswith("##"):
        return tok[2:]
    return PHANTOM_SPACE + tok


def _special_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        content = entry.get("content")
        return content if isinstance(content, str) else None
    return None


def _bool_or(v: Any, default: bool) -> bool:
    return v if isinstance(v, bool) else default


def read_vocab(src: Path, n_vocab: int) -> Vocab:
    """WordPiece vocabulary, token types, special tokens and normalisation flags."""
    tok_json_path = src / "tokenizer.json"
    vocab_txt_path = src / "vocab.txt"
    tok_json: dict[str, Any] | None = None
    words: dict[int, str] = {}
    added: dict[int, bool] = {}  # id -> special?
    if tok_json_path.is_file():
        tok_json = _read_json_obj(tok_json_path)
        model = tok_json.get("model")
        if not isinstance(model, dict) or model.get("type") != "WordPiece":
            mtype = model.get("type") if isinstance(model, dict) else None
            raise ConversionError(
                f"tokenizer.json: tokenizer model is {mtype!r}, only WordPiece is supported"
            )
        prefix = model.get("continuing_subword_prefix", "##")
        if prefix != "##":
            raise ConversionError(
                f"tokenizer.json: continuing_subword_prefix {prefix!r} is not supported (only '##')"
            )
        raw = model.get("vocab")
        if not isinstance(raw, dict):
            raise ConversionError("tokenizer.json: model.vocab is missing")
        for text, i in raw.items():
            if not isinstance(i, int) or i < 0:
                raise ConversionError(f"tokenizer.json: bad id {i!r} for token {text!r}")
            words[i] = text
        for at in tok_json.get("added_tokens") or []:
            if isinstance(at, dict) and isinstance(at.get("id"), int) and isinstance(
                at.get("content"), str
            ):
                words[at["id"]] = at["content"]
                added[at["id"]] = bool(at.get("special", False))
    elif vocab_txt_path.is_file():
        with open(vocab_txt_path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                words[i] = line.rstrip("\n").rstrip("\r")
    else:
        raise ConversionError(f"{src}: no tokenizer.json or vocab.txt (WordPiece vocabulary)")
    if not words:
        raise ConversionError(f"{src}: the vocabulary is empty")
    if max(words) >= n_vocab:
        raise ConversionError(
            f"the vocabulary has token id {max(words)} but the model has only {n_vocab} embeddings"
        )

    tok_cfg: dict[str, Any] = {}
    if (src / "tokenizer_config.json").is_file():
        tok_cfg = _read_json_obj(src / "tokenizer_config.json")
    special_map: dict[str, Any] = {}
    if (src / "special_tokens_map.json").is_file():
        special_map = _read_json_obj(src / "special_tokens_map.json")

    # Normalisation: tokenizer.json's BertNormalizer, else tokenizer_config.json.
    lower = _bool_or(tok_cfg.get("do_lower_case"), True)
    strip: Any = tok_cfg.get("strip_accents")
    norm = tok_json.get("normalizer") if tok_json else None
    if isinstance(norm, dict):
        if norm.get("type") != "BertNormalizer":
            raise ConversionError(
                f"tokenizer.json: normalizer {norm.get('type')!r} is not supported "
                "(only BertNormalizer)"
            )
        lower = _bool_or(norm.get("lowercase"), True)
        strip = norm.get("strip_accents")
    strip_accents = strip if isinstance(strip, bool) else lower  # HF: None follows lowercase

    by_text: dict[str, int] = {}
    for i in sorted(words):
        by_text.setdefault(words[i], i)

    def special_id(typ: str, default: str) -> int | None:
        name = _special_name(tok_cfg.get(f"{typ}_token")) or _special_name(
            special_map.get(f"{typ}_token")
        )
        return by_text.get(name or default)

    ids: dict[str, int] = {}
    for typ, default in (
        ("unk", "[UNK]"),
        ("sep", "[SEP]"),
        ("pad", "[PAD]"),
        ("cls", "[CLS]"),
        ("mask", "[MASK]"),
    ):
        tid = special_id(typ, default)
        if tid is not None:
            ids[typ] = tid
    for typ in ("cls", "sep", "unk"):
        if typ not in ids:
            raise ConversionError(f"the vocabulary has no {typ} token ([{typ.upper()}])")
    ids["bos"] = ids["cls"]
    ids["eos"] = ids["sep"]

    special_set = {i for i, s in added.items() if s} | set(ids.values())
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        w = words.get(i)
        if w is None:
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_UNUSED)
        elif i in special_set:
            tokens.append(w)
            types.append(TOKEN_CONTROL)
        elif i in added:
            tokens.append(w)
            types.append(TOKEN_USER_DEFINED)
        else:
            tokens.append(phantom(w))
            types.append(TOKEN_NORMAL)
    return Vocab(tokens, types, ids, lower, strip_accents)


def read_pooling(src: Path) -> tuple[int | None, bool]:
    """(gguf pooling type or None, L2-normalise?) from the sentence-transformers modules."""
    modules_path = src / "modules.json"
    if not modules_path.is_file():
        return None, False
    modules = _read_json(modules_path)
    if not isinstance(modules, list):
        raise ConversionError(f"{modules_path}: expected a JSON list")
    pooling: int | None = None
    normalize = False
    for mod in modules:
        if not isinstance(mod, dict):
            continue
        mtype = mod.get("type")
        if mtype == "sentence_transformers.models.Normalize":
            normalize = True
        elif mtype == "sentence_transformers.models.Pooling":
            path = src / str(mod.get("path", "")) / "config.json"
            if not path.is_file():
                raise ConversionError(f"{path} is missing (pooling configuration)")
            pc = _read_json_obj(path)
            if pc.get("pooling_mode_mean_tokens"):
                pooling = POOLING_MEAN
            elif pc.get("pooling_mode_cls_token"):
                pooling = POOLING_CLS
            elif pc.get("pooling_mode_lasttoken"):
                pooling = POOLING_LAST
            else:
                modes = sorted(k for k, v in pc.items() if k.startswith("pooling_mode") and v)
                raise ConversionError(
                    f"unsupported pooling {modes} (supported: mean, cls, last token)"
                )
        elif isinstance(mtype, str) and mtype.startswith("sentence_transformers.models.") and (
            mtype.rsplit(".", 1)[-1] not in ("Transformer",)
        ):
            raise ConversionError(f"unsupported sentence-transformers module {mtype}")
    return pooling, normalize


# ---------------------------------------------------------------------------------------------
# Weights


def _safetensors_files(src: Path) -> list[Path]:
    single = src / "model.safetensors"
    if single.is_file():
        return [single]
    index = src / "model.safetensors.index.json"
    if index.is_file():
        wm = _read_json_obj(index).get("weight_map")
        if not isinstance(wm, dict):
            raise ConversionError(f"{index}: weight_map is missing")
        files = sorted({str(v) for v in wm.values()})
        paths = [src / f for f in files]
        for p in paths:
            if not p.is_file():
                raise ConversionError(f"{p} is missing (listed in {index.name})")
        return paths
    if (src / "pytorch_model.bin").is_file():
        raise ConversionError(
            f"{src} has only pytorch_model.bin; save the model as safetensors first"
        )
    raise ConversionError(f"{src}: no model.safetensors")


_ST_DTYPES: dict[str, str] = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


def _iter_safetensors(path: Path) -> Iterator[tuple[str, FloatArray]]:
    """Tensors of one safetensors file as float32 (parsed directly so BF16 works too)."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if not 0 < header_len < (1 << 27):
                raise ConversionError(f"{path}: not a safetensors file")
            header = json.loads(f.read(header_len))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read the safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: bad safetensors header")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{path}: bad header entry for {name}") from e
        if dtype not in _ST_DTYPES:
            # position_ids (I64) and the like: not weights; skipped by the name mapping.
            yield name, np.zeros((0,), dtype=np.float32)
            continue
        raw = np.asarray(data[start:end])
        arr = raw.view(_ST_DTYPES[dtype])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ConversionError(f"{path}: {name} has {arr.size} values for shape {shape}")
        if dtype == "BF16":
            out = (arr.astype(np.uint32) << 16).view(np.float32)
        else:
            out = arr.astype(np.float32)
        yield name, out.reshape(shape)


_LAYER_MAP = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_GLOBAL_MAP = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.LayerNorm": "token_embd_norm",
}
_SKIP = re.compile(r"^(embeddings\.position_ids|pooler\..*|cls\..*)$")
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
MATMUL_STEMS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down")


def map_tensor_name(hf_name: str) -> str | None:
    """GGUF name of a Hugging Face BERT tensor; None for tensors the encoder does not use."""
    name = hf_name
    name = name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[:-6] + ".weight"
    elif name.endswith(".beta"):
        name = name[:-5] + ".bias"
    if _SKIP.match(name):
        return None
    m = _LAYER_RE.match(name)
    if m:
        stem = _LAYER_MAP.get(m.group(2))
        if stem is None:
            raise ConversionError(f"unexpected tensor {hf_name} (not a BERT encoder weight)")
        return f"blk.{int(m.group(1))}.{stem}.{m.group(3)}"
    base, _, kind = name.rpartition(".")
    stem = _GLOBAL_MAP.get(base)
    if stem is None or kind not in ("weight", "bias"):
        raise ConversionError(f"unexpected tensor {hf_name} (not a BERT encoder weight)")
    return f"{stem}.{kind}"


def expected_shapes(hp: BertHParams) -> dict[str, tuple[int, ...]]:
    """Every tensor the GGUF must hold, with its numpy (row-major) shape."""
    e, ff = hp.hidden_size, hp.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (hp.vocab_size, e),
        "token_types.weight": (hp.type_vocab_size, e),
        "position_embd.weight": (hp.max_positions, e),
        "token_embd_norm.weight": (e,),
        "token_embd_norm.bias": (e,),
    }
    for i in range(hp.num_layers):
        for stem, shape in (
            ("attn_q", (e, e)),
            ("attn_k", (e, e)),
            ("attn_v", (e, e)),
            ("attn_output", (e, e)),
            ("attn_output_norm", (e,)),
            ("ffn_up", (ff, e)),
            ("ffn_down", (e, ff)),
            ("layer_output_norm", (e,)),
        ):
            shapes[f"blk.{i}.{stem}.weight"] = shape
            shapes[f"blk.{i}.{stem}.bias"] = (shape[0],)
    return shapes


# Kept in F16 by --type q8_0: the matmuls whose Q8_0 error (mostly from quantizing their
# input activations to Q8_0, as llama.cpp's kernels also do) moves the pooled vector most. On
# all-MiniLM-L6-v2 all-Q8_0 gives a worst golden cosine of 0.9983; with these two in F16, 0.9997.
Q8_0_F16_STEMS = ("attn_v", "ffn_up")


def _target_type(name: str, shape: Sequence[int], out_type: OutType) -> OutType:
    stem = name.split(".")[2] if name.startswith("blk.") else ""
    if out_type == "f32" or stem not in MATMUL_STEMS or not name.endswith(".weight"):
        return "f32"
    if len(shape) != 2:
        return "f32"
    if out_type == "q8_0" and (stem in Q8_0_F16_STEMS or shape[-1] % 32 != 0):
        return "f16"  # see Q8_0_F16_STEMS; Q8_0 also needs rows of whole 32-value blocks
    return out_type


# ---------------------------------------------------------------------------------------------
# Conversion


def convert(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    out_type: OutType = "f32",
    name: str | None = None,
) -> ConversionResult:
    """Convert the Hugging Face BERT folder `src_dir` to the GGUF file `out_path`.

    Raises ConversionError when the folder is not something this converter handles; the output
    file is written to a temporary name first and only renamed into place on success.
    """
    if out_type not in OUT_TYPES:
        raise ConversionError(f"unknown --type {out_type!r} (choose from {', '.join(OUT_TYPES)})")
    src = Path(src_dir)
    out = Path(out_path)
    if not src.is_dir():
        raise ConversionError(f"{src} is not a directory")
    if not (src / "config.json").is_file():
        raise ConversionError(f"{src}: config.json is missing (not a Hugging Face model folder)")
    hp = read_hparams(_read_json_obj(src / "config.json"))
    files = _safetensors_files(src)
    vocab = read_vocab(src, hp.vocab_size)
    pooling, normalize = read_pooling(src)

    want = expected_shapes(hp)
    tensors: dict[str, FloatArray] = {}
    for path in files:
        for hf_name, arr in _iter_safetensors(path):
            gname = map_tensor_name(hf_name)
            if gname is None:
                continue
            if gname in tensors:
                raise ConversionError(f"tensor {hf_name} appears twice")
            shape = want.get(gname)
            if shape is None:
                raise ConversionError(
                    f"tensor {hf_name} ({gname}) does not fit the config "
                    f"(num_hidden_layers={hp.num_layers})"
                )
            if tuple(arr.shape) != shape:
                raise ConversionError(
                    f"tensor {hf_name} has shape {list(arr.shape)}, expected {list(shape)} "
                    "from config.json"
                )
            if not np.all(np.isfinite(arr)):
                raise ConversionError(f"tensor {hf_name} has NaN or infinite values")
            tensors[gname] = arr
    missing = [n for n in want if n not in tensors]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ConversionError(f"missing tensors: {', '.join(missing[:3])}{more}")

    model_name = name or (src.name if src.name not in ("", "model", "models") else src.parent.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    result = ConversionResult(out, out_type, len(want), hp.vocab_size, pooling, normalize)
    w = gguf.GGUFWriter(tmp, arch="bert")
    try:
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(model_name)
        w.add_file_type(_FILE_TYPES[out_type])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(hp.max_positions)
        w.add_embedding_length(hp.hidden_size)
        w.add_feed_forward_length(hp.intermediate_size)
        w.add_block_count(hp.num_layers)
        w.add_head_count(hp.num_heads)
        w.add_layer_norm_eps(hp.layer_norm_eps)
        w.add_causal_attention(False)
        if pooling is not None:
            w.add_pooling_type(gguf.PoolingType(pooling))

        w.add_tokenizer_model("bert")
        w.add_tokenizer_pre("default")
        w.add_token_list(vocab.tokens)
        w.add_token_types(vocab.token_types)
        w.add_token_type_count(hp.type_vocab_size)
        sp = vocab.special_ids
        w.add_bos_token_id(sp["bos"])
        w.add_eos_token_id(sp["eos"])
        w.add_unk_token_id(sp["unk"])
        w.add_sep_token_id(sp["sep"])
        if "pad" in sp:
            w.add_pad_token_id(sp["pad"])
        if "mask" in sp:
            w.add_mask_token_id(sp["mask"])
        w.add_add_bos_token(True)
        w.add_add_eos_token(True)
        w.add_add_sep_token(False)
        w.add_bool(KEY_DO_LOWER_CASE, vocab.do_lower_case)
        w.add_bool(KEY_STRIP_ACCENTS, vocab.strip_accents)
        w.add_bool(KEY_NORMALIZE, normalize)

        qtypes = {
            "f32": gguf.GGMLQuantizationType.F32,
            "f16": gguf.GGMLQuantizationType.F16,
            "q8_0": gguf.GGMLQuantizationType.Q8_0,
        }
        for gname in want:  # llama.cpp's order: embeddings, then block by block
            arr = tensors.pop(gname)
            t = _target_type(gname, arr.shape, out_type)
            qt = qtypes[t]
            data = gguf.quants.quantize(np.ascontiguousarray(arr), qt)
            w.add_tensor(gname, data, raw_dtype=qt)
            result.tensor_types[gname] = t
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return result
