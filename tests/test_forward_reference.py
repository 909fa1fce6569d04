"""hologram's llama forward pass against a plain numpy implementation (tests/reference_llama.py)
on small generated models: full logits of every position, and greedy continuations."""

from __future__ import annotations

from pathlib import Path

import hologram
import numpy as np
import pytest
from gguf_corpus import _write_model, default_spec, write_valid_model
from reference_llama import LlamaReference


@pytest.fixture(scope="module", params=[0, 1])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_valid_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=request.param)


def test_logits_match_numpy_reference(tiny: Path) -> None:
    ref = LlamaReference(tiny)
    eng = hologram.Engine(tiny, n_ctx=128, n_threads=2, n_batch=16)
    rng = np.random.default_rng(0)
    ids = [int(t) for t in rng.integers(0, eng.n_vocab, size=40)]
    # n_batch=16 splits the 40 tokens into three forward passes: the KV cache carries across.
    got = eng.logits(ids)
    want = ref.logits(ids)
    # Q8_0 activations introduce ~1e-2 relative error in each matmul; logits stay close.
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max()) / scale
    assert err < 3e-2, f"max relative logit error {err:.4f}"
    assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= 0.9


def test_batched_prefill_equals_token_by_token(tiny: Path) -> None:
    eng = hologram.Engine(tiny, n_ctx=128, n_threads=2)
    ids = list(range(5, 35))
    full = eng.logits(ids)
    one = hologram.Engine(tiny, n_ctx=128, n_threads=1, n_batch=1)
    step = one.logits(ids)
    np.testing.assert_allclose(full, step, rtol=2e-2, atol=2e-2 * float(np.abs(full).max()))


def test_greedy_matches_reference(tiny: Path) -> None:
    ref = LlamaReference(tiny)
    eng = hologram.Engine(tiny, n_ctx=128, n_threads=2)
    prompt = [3, 50, 60, 70]
    out = eng.generate(prompt, max_tokens=12, temperature=0.0, ignore_eos=True)
    ids = list(prompt)
    for got in out.token_ids:
        logits = ref.logits(ids)[-1]
        top2 = np.sort(logits)[-2:]
        want = int(np.argmax(logits))
        if got != want:
            # Only a near tie may part the two.
            assert top2[1] - top2[0] < 0.05 * float(np.abs(logits).max()), (got, want)
            break
        ids.append(got)


@pytest.mark.parametrize("isa", hologram._core.available_isas())
def test_every_kernel_path_gives_the_same_logits(tiny: Path, isa: str, tmp_path: Path) -> None:
    """The ISA is chosen once per process (HOLOGRAM_ISA), so each path runs in a subprocess."""
    import os
    import subprocess
    import sys

    out = tmp_path / f"{isa}.npy"
    code = (
        "import sys, numpy as np, hologram\n"
        f"assert hologram._core.active_isa() == {isa!r}\n"
        f"e = hologram.Engine({str(tiny)!r}, n_ctx=64, n_threads=2)\n"
        f"np.save({str(out)!r}, e.logits(list(range(3, 23))))\n"
    )
    env = dict(os.environ, HOLOGRAM_ISA=isa)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    got = np.load(out)
    want = LlamaReference(tiny).logits(list(range(3, 23)))
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err < 3e-2, f"{isa}: max relative logit error {err:.4f}"


def test_mixed_formats_in_one_matmul_group(tmp_path: Path) -> None:
    """A file whose Q/K/V and gate/up groups mix formats the packed kernel takes (Q8_0, Q4_0)
    with one it does not (Q5_1): each matrix runs its own path, and the logits still match the
    numpy reference."""
    spec = default_spec(seed=0)
    for name, (shape, _) in list(spec["tensors"].items()):
        if name.endswith(("attn_v.weight", "ffn_up.weight")):
            spec["tensors"][name] = (shape, "Q5_1")
    path = _write_model(tmp_path / "mixed.gguf", spec)
    ref = LlamaReference(path)
    rng = np.random.default_rng(1)
    ids = [int(t) for t in rng.integers(0, 200, size=24)]
    for threads, n_batch in ((2, 16), (1, 1)):
        eng = hologram.Engine(path, n_ctx=64, n_threads=threads, n_batch=n_batch)
        got = eng.logits(ids)
        want = ref.logits(ids)
        err = float(np.abs(got - want).max()) / float(np.abs(want).max())
        assert err < 3e-2, (threads, n_batch, err)
        assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= 0.9
