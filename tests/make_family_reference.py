"""Dev tool, not run in CI: computes the llama.cpp reference logits of the tiny family models
(``tests/family_models.py``) and writes them to ``tests/data/families_llamacpp.npz``.

Needs llama-cpp-python over a llama.cpp build::

    LLAMA_CPP_LIB_PATH=.../llama.cpp/build/bin python tests/make_family_reference.py [OUT.npz]

For every family and weight type: the token ids of ``family_models.TEXT`` as llama.cpp
tokenizes them (``add_special`` true, special text not parsed; likewise ``tok{i}`` for
``TOKENIZE_TEXTS[i]``, with its own ``parse_special``), and for every position the
TOP_K most likely next tokens with their log-probabilities (logit minus the logsumexp of the full
row, in float64), from one batched prefill with ``logits_all``. Plus the model digest, so the
tests know the regenerated file is the one these numbers belong to. Numbers only, no code.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_models import (
    FAMILIES,
    N_CTX,
    QUANTS,
    SEED,
    TEXT,
    TOKENIZE_TEXTS,
    build_family_model,
    write_family_model,
)

TOP_K = 16
OUT = Path(__file__).resolve().parent / "data" / "families_llamacpp.npz"


def reference(path: Path) -> dict[str, np.ndarray]:
    import llama_cpp

    llm = llama_cpp.Llama(
        str(path),
        n_ctx=N_CTX,
        n_batch=512,
        n_ubatch=512,
        n_threads=2,
        logits_all=True,
        verbose=False,
    )
    ids = llm.tokenize(TEXT.encode("utf-8"), add_bos=True, special=False)
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    lp = logits - lse[:, None]
    top = np.argsort(-lp, axis=-1, kind="stable")[:, :TOP_K]
    out = {
        "ids": np.asarray(ids, dtype=np.int32),
        "top_ids": top.astype(np.int32),
        "top_lp": np.take_along_axis(lp, top, -1).astype(np.float32),
    }
    for i, (text, special) in enumerate(TOKENIZE_TEXTS):
        tok = llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)
        out[f"tok{i}"] = np.asarray(tok, dtype=np.int32)
    return out


def main() -> None:
    import llama_cpp

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FAMILIES:
            for quant in QUANTS:
                path = write_family_model(Path(tmp) / f"{name}-{quant}.gguf", name, quant)
                key = f"{name}-{quant}"
                digests[key] = build_family_model(name, quant).digest()
                for k, v in reference(path).items():
                    arrays[f"{key}/{k}"] = v
                print(key, len(arrays[f"{key}/ids"]), "tokens", flush=True)
    meta = {
        "seed": SEED,
        "n_ctx": N_CTX,
        "top_k": TOP_K,
        "text": TEXT,
        "digests": digests,
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, CPU, "
        "one batched prefill (n_batch 512), flash attention off, f16 KV cache",
    }
    arrays["meta"] = np.array(json.dumps(meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
