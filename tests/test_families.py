"""Every decoder family hologram runs, on tiny random-weight models regenerated here from a fixed
seed (``tests/family_models.py``: F32 and Q8_0 weights, SmolLM2's tokenizer, each family's
pre-tokenizer), against

(a) llama.cpp: token ids and top-16 log-probabilities of every position of a ~220-token text,
    computed once by ``tests/make_family_reference.py`` and committed as
    ``tests/data/families_llamacpp.npz`` (CI needs no llama.cpp), and
(b) the numpy float64 forward pass of ``tests/reference_llama.py``.

Rules: F32 weights: top-1 agreement >= 0.99 and mean |log-prob difference| <= 0.005 (over the
reference's 16 most likely tokens of every position). Q8_0 weights: the band of the golden
README (``shared/golden/README.md``): on the reference's top-1 token, mean |diff| <= 0.08 and
every |diff| <= 0.5; top-1 agreement >= 0.90 and at every position whose reference top-2 gap is
at least 0.5.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hologram
import numpy as np
import pytest
from family_models import (
    FAMILIES,
    N_CTX,
    QUANTS,
    TEXT,
    TOKENIZE_TEXTS,
    Built,
    build_family_model,
    family_models,
    write_family_model,
)
from reference_llama import DecoderReference

DATA = Path(__file__).resolve().parent / "data" / "families_llamacpp.npz"


@pytest.fixture(scope="session")
def ref() -> Any:
    if not DATA.is_file():
        pytest.fail(f"{DATA} is missing (tests/make_family_reference.py writes it)")
    return np.load(DATA)


@pytest.fixture(scope="session")
def meta(ref: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(str(ref["meta"]))
    return out


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    return family_models(tmp_path_factory.mktemp("families"))


def numpy_reference(name: str, quant: str, n_ctx: int = N_CTX, **variant: Any) -> DecoderReference:
    b = build_family_model(name, quant, **variant)
    return DecoderReference(n_ctx=n_ctx, meta=b.meta(), weights=b.weights())


def logprobs(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - (np.log(np.exp(x - m).sum(-1, keepdims=True)) + m)


@dataclass
class Case:
    name: str
    quant: str
    path: Path
    built: Built
    engine: hologram.Engine
    ids: list[int]
    lp: np.ndarray  # hologram's log-probabilities, (len(ids), n_vocab)


CASES = [(n, q) for n in FAMILIES for q in QUANTS]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{q}" for n, q in CASES])
def case(
    request: pytest.FixtureRequest,
    models: Callable[[str, str], Path],
    ref: Any,
    meta: dict[str, Any],
) -> Case:
    name, quant = request.param
    path = models(name, quant)
    built = build_family_model(name, quant)
    key = f"{name}-{quant}"
    assert built.digest() == meta["digests"][key], (
        f"the regenerated {key} model is not the one the committed reference was computed on "
        "(family_models.py or the gguf package changed): rerun tests/make_family_reference.py"
    )
    engine = hologram.Engine(path, n_ctx=N_CTX, n_threads=2)
    ids = [int(t) for t in ref[f"{key}/ids"]]
    return Case(name, quant, path, built, engine, ids, logprobs(engine.logits(ids)))


def check(lp: np.ndarray, top_ids: np.ndarray, top_lp: np.ndarray, quant: str, what: str) -> None:
    """Apply the rules of the module docstring to hologram's log-probabilities `lp` against a
    reference's top-k ids and log-probabilities."""
    got = np.take_along_axis(lp, top_ids, -1)
    diff = np.abs(got - top_lp)
    agree = lp.argmax(-1) == top_ids[:, 0]
    top1 = float(agree.mean())
    if quant == "f32":
        mean = float(diff.mean())
        assert top1 >= 0.99 and mean <= 0.005, (
            f"{what}: top-1 agreement {top1:.4f} (>= 0.99), mean |d logprob| {mean:.5f} (<= 0.005)"
        )
    else:
        d1 = diff[:, 0]
        gap = top_lp[:, 0] - top_lp[:, 1]
        clear = gap >= 0.5
        assert float(d1.mean()) <= 0.08 and float(d1.max()) <= 0.5, (
            f"{what}: top-1 token |d logprob| mean {d1.mean():.4f} (<= 0.08), "
            f"max {d1.max():.4f} (<= 0.5)"
        )
        assert top1 >= 0.90, f"{what}: top-1 agreement {top1:.4f} (>= 0.90)"
        assert agree[clear].all(), (
            f"{what}: top-1 differs at positions {np.flatnonzero(clear & ~agree).tolist()} "
            "where the reference's top-2 gap is >= 0.5"
        )


def test_tokenization_matches_llamacpp(case: Case, ref: Any) -> None:
    assert list(case.engine.tokenize(TEXT)) == case.ids
    if case.quant != "f32":
        return
    for i, (text, special) in enumerate(TOKENIZE_TEXTS):
        want = [int(t) for t in ref[f"{case.name}-f32/tok{i}"]]
        got = list(case.engine.tokenize(text, parse_special=special))
        assert got == want, f"{case.name} ({FAMILIES[case.name].pre}): {text!r}"


def test_logits_match_llamacpp(case: Case, ref: Any) -> None:
    key = f"{case.name}-{case.quant}"
    check(case.lp, ref[f"{key}/top_ids"], ref[f"{key}/top_lp"], case.quant, f"{key} vs llama.cpp")


def test_logits_match_numpy_reference(case: Case) -> None:
    b = case.built
    want = logprobs(DecoderReference(meta=b.meta(), weights=b.weights()).logits(case.ids))
    top = np.argsort(-want, -1)[:, :16]
    check(case.lp, top, np.take_along_axis(want, top, -1), case.quant, f"{case.name} vs numpy")


def test_batch_invariance(case: Case) -> None:
    """Prefill in chunks of 7 on one thread gives the very same logits as one batch on two."""
    one = hologram.Engine(case.path, n_ctx=N_CTX, n_threads=1, n_batch=7)
    got = logprobs(one.logits(case.ids))
    assert np.array_equal(got, case.lp)


# --- features the llama.cpp files leave alone -------------------------------------------------


@pytest.mark.parametrize("name", ["mistral", "phi3"])
def test_sliding_window(name: str, tmp_path: Path) -> None:
    """Mistral (llama architecture) and Phi-3 files that set a sliding window attend through it
    on every layer (llama.cpp ignores it for these two, so its files above set 4096 / 2047)."""
    window = {"keys": {"attention.sliding_window": 24}}
    path = write_family_model(tmp_path / "w.gguf", name, "f32", **window)
    engine = hologram.Engine(path, n_ctx=N_CTX, n_threads=2)
    ids = list(engine.tokenize(TEXT))[:100]
    got = logprobs(engine.logits(ids))
    want = logprobs(numpy_reference(name, "f32", **window).logits(ids))
    top = np.argsort(-want, -1)[:, :16]
    check(got, top, np.take_along_axis(want, top, -1), "f32", f"{name} window 24 vs numpy")
    # Identical to the windowless model up to the window, different after it.
    full = hologram.Engine(write_family_model(tmp_path / "f.gguf", name, "f32"), n_ctx=N_CTX)
    unwindowed = logprobs(full.logits(ids))
    np.testing.assert_allclose(got[:24], unwindowed[:24], atol=1e-4)
    assert np.abs(got[30:] - unwindowed[30:]).max() > 0.1


def test_phi3_short_rope_factors(tmp_path: Path) -> None:
    """A context within the original length uses `rope_factors_short` (llama.cpp
    get_rope_factors); the committed reference covers the long factors (context 256 > 64)."""
    path = write_family_model(tmp_path / "p.gguf", "phi3", "f32")
    engine = hologram.Engine(path, n_ctx=64, n_threads=2)
    ids = list(engine.tokenize(TEXT))[:60]
    got = logprobs(engine.logits(ids))
    want = logprobs(numpy_reference("phi3", "f32", n_ctx=64).logits(ids))
    top = np.argsort(-want, -1)[:, :16]
    check(got, top, np.take_along_axis(want, top, -1), "f32", "phi3 short factors vs numpy")
    long = logprobs(numpy_reference("phi3", "f32").logits(ids))
    assert np.abs(long - want).max() > 0.1


# --- what must fail, and how -------------------------------------------------------------------


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    path = write_family_model(tmp_path / "a.gguf", "llama", "f32", arch="falcon")
    with pytest.raises(
        hologram.UnsupportedModelError, match=r'architecture "falcon".*supported: llama'
    ):
        hologram.Engine(path, n_ctx=64)


def test_unknown_pre_tokenizer_is_named(tmp_path: Path) -> None:
    path = write_family_model(tmp_path / "p.gguf", "llama", "f32", pre="no-such-pre")
    with pytest.raises(hologram.UnsupportedModelError, match="no-such-pre"):
        hologram.Engine(path, n_ctx=64)


def test_unused_tensor_is_an_error(tmp_path: Path) -> None:
    """A tensor the architecture does not read means a variant hologram does not implement:
    refused (like llama.cpp's "wrong number of tensors"), never silently ignored."""
    extra = {"blk.0.attn_q_norm.weight": np.ones(16, dtype=np.float32)}
    path = write_family_model(tmp_path / "t.gguf", "llama", "f32", extra_tensors=extra)
    with pytest.raises(hologram.ModelLoadError, match="blk.0.attn_q_norm.weight"):
        hologram.Engine(path, n_ctx=64)


def test_unsupported_rope_scaling_is_named(tmp_path: Path) -> None:
    path = write_family_model(
        tmp_path / "r.gguf", "mistral", "f32", keys={"rope.scaling.type": "su-per"}
    )
    with pytest.raises(hologram.UnsupportedModelError, match="su-per"):
        hologram.Engine(path, n_ctx=64)
