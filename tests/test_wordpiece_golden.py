"""all-MiniLM-L6-v2 through the public API against HF transformers (tests/data/golden):
WordPiece ids identical, embeddings with cosine >= 0.9999 (F32 conversion) and >= 0.999 (Q8_0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hologram
import numpy as np
import numpy.typing as npt
import pytest
from conftest import load_golden
from hologram.convert import OutType, convert
from hologram.models import minilm_source_dir

GOLDEN = load_golden("all-minilm-l6-v2.json")
ITEMS: list[dict[str, Any]] = GOLDEN["items"]
MIN_COSINE = {"f32": 0.9999, "q8_0": 0.999}


@pytest.fixture(scope="module", params=["f32", "q8_0"])
def minilm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, hologram.Engine]]:
    out_type: OutType = request.param
    path = tmp_path_factory.mktemp("minilm") / f"all-MiniLM-L6-v2.{out_type}.gguf"
    convert(minilm_source_dir(), path, out_type)
    yield out_type, hologram.Engine(path, n_ctx=512, n_threads=2)


def golden_matrix() -> npt.NDArray[np.float32]:
    return np.array([it["embedding"] for it in ITEMS], dtype=np.float32)


def cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = (a64 * b64).sum(axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.asarray(num / den, dtype=np.float64)


def test_is_embedding_model(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    assert engine.is_embedding_model
    assert engine.architecture == "bert"
    assert engine.n_embd == 384
    assert engine.n_ctx_train == 512


@pytest.mark.parametrize("item", ITEMS, ids=lambda it: repr(it["text"][:24]))
def test_wordpiece_ids(minilm: tuple[str, hologram.Engine], item: dict[str, Any]) -> None:
    _, engine = minilm
    assert engine.tokenize(item["text"], add_special=True) == item["ids"]


def test_wordpiece_without_special(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    for item in ITEMS:
        assert engine.tokenize(item["text"], add_special=False) == item["ids"][1:-1]


def test_special_token_text(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    # [CLS]/[SEP] typed in the text are plain text unless parse_special.
    assert engine.tokenize("[SEP]", add_special=False, parse_special=True) == [102]
    assert engine.tokenize("[SEP]", add_special=False) == [1031, 19802, 1033]


def test_embed_batch_matches_hf(minilm: tuple[str, hologram.Engine]) -> None:
    out_type, engine = minilm
    ids = [it["ids"] for it in ITEMS]
    got = engine.embed_batch(ids, pooling="mean", normalize=True)
    assert isinstance(got, np.ndarray)
    assert got.shape == (len(ITEMS), 384) and got.dtype == np.float32
    cos = cosines(got, golden_matrix())
    worst = int(np.argmin(cos))
    assert cos[worst] >= MIN_COSINE[out_type], (ITEMS[worst]["text"], float(cos[worst]))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embed_single_equals_batch(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    ids = [it["ids"] for it in ITEMS]
    batch = engine.embed_batch(ids, pooling="mean", normalize=True)
    for i, one_ids in enumerate(ids):
        one = engine.embed(one_ids, pooling="mean", normalize=True)
        assert one.shape == (384,)
        assert float(cosines(one[None, :], batch[i : i + 1])[0]) > 0.999999


def test_embed_tokenized_text(minilm: tuple[str, hologram.Engine]) -> None:
    """The whole path from text: tokenize (adds [CLS]/[SEP]) then embed."""
    out_type, engine = minilm
    got = np.stack([engine.embed(engine.tokenize(it["text"])) for it in ITEMS])
    assert float(cosines(got, golden_matrix()).min()) >= MIN_COSINE[out_type]


def test_pooling_modes_and_errors(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    ids = ITEMS[1]["ids"]
    cls = engine.embed(ids, pooling="cls", normalize=False)
    last = engine.embed(ids, pooling="last", normalize=False)
    mean = engine.embed(ids, pooling="mean", normalize=False)
    assert cls.shape == last.shape == mean.shape == (384,)
    assert not np.allclose(cls, last) and not np.allclose(cls, mean)
    assert abs(float(np.linalg.norm(mean)) - 1.0) > 1e-3  # not normalised
    with pytest.raises(hologram.InvalidArgumentError):
        engine.embed([], pooling="mean")
    with pytest.raises(hologram.InvalidArgumentError):
        engine.embed([10**9], pooling="mean")
    with pytest.raises(hologram.ContextOverflowError):
        engine.embed([101] * 513, pooling="mean")
    with pytest.raises((hologram.InvalidArgumentError, ValueError)):
        engine.embed(ids, pooling="max")


def test_similarity_ranks_paraphrases(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    texts = ["The cat sits on the mat.", "A feline is resting on a rug.",
             "Quantum chromodynamics describes the strong interaction."]
    v = engine.embed_batch([engine.tokenize(t) for t in texts])
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2


def test_converted_file_path_is_usable(minilm: tuple[str, hologram.Engine]) -> None:
    _, engine = minilm
    assert Path(engine.path).is_file()
