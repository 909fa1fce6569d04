"""all-MiniLM-L6-v2 (F32: the packed f32 GEMM, attention, GELU and LayerNorm loops) on every
kernel tier this CPU has: the embeddings are bit-identical across tiers and thread counts, and
match HF transformers (tests/data/golden). The ISA is chosen once per process (HOLOGRAM_ISA),
so each tier runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hologram
import numpy as np
from conftest import load_golden

ITEMS: list[dict[str, Any]] = load_golden("all-minilm-l6-v2.json")["items"]

CODE = """
import json, sys
import numpy as np, hologram
isa, model, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert hologram._core.active_isa() == isa, hologram._core.active_isa()
texts = json.loads(sys.stdin.read())
e = hologram.Engine(model, n_threads=threads)
# One batch of every text (several inputs per forward pass), then each text alone.
batch = e.embed_batch([e.tokenize(t) for t in texts])
alone = np.stack([e.embed(e.tokenize(t)) for t in texts])
np.save(out, np.stack([batch, alone]))
"""


def run_tier(isa: str, threads: int, out: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    model = str(hologram.models.ensure_default_embedding_model())
    texts = json.dumps([it["text"] for it in ITEMS])
    env = dict(os.environ, HOLOGRAM_ISA=isa)
    subprocess.run(
        [sys.executable, "-c", CODE, isa, model, str(threads), str(out)],
        input=texts,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    got: np.ndarray[Any, np.dtype[np.float32]] = np.load(out)
    return got


def test_embeddings_are_bit_identical_on_every_tier(tmp_path: Path) -> None:
    isas = hologram._core.available_isas()
    assert "scalar" in isas
    golden = np.array([it["embedding"] for it in ITEMS], dtype=np.float64)
    ref: np.ndarray[Any, np.dtype[np.float32]] | None = None
    for isa in isas:
        for threads in (1, 2):
            got = run_tier(isa, threads, tmp_path / f"{isa}-{threads}.npy")
            assert got.shape == (2, len(ITEMS), 384) and got.dtype == np.float32
            g = got[0].astype(np.float64)
            cos = (g * golden).sum(axis=1) / (
                np.linalg.norm(g, axis=1) * np.linalg.norm(golden, axis=1)
            )
            assert float(cos.min()) >= 0.9999, (isa, threads, float(cos.min()))
            if ref is None:
                ref = got
            else:
                # Same bits: batched and alone, every tier, every thread count.
                assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (isa, threads)
    assert ref is not None
    assert np.array_equal(ref[0].view(np.uint32), ref[1].view(np.uint32)), "batch vs alone"
