"""Comparisons against llama.cpp's reference outputs, with the tolerances of
tests/data/golden/README.md. Shared by the golden tests of every model."""

from __future__ import annotations

from typing import Any

import hologram
import numpy as np

# Tolerances from tests/data/golden/README.md.
GREEDY_TIE_GAP = 0.5
LOGPROB_MEAN_TOL = 0.08
LOGPROB_MAX_TOL = 0.5
TOP1_AGREEMENT = 0.90


def golden_flag(value: object) -> bool:
    """The golden files store flags as JSON booleans or as the strings "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def check_tokenize(engine: hologram.Engine, case: dict[str, Any]) -> None:
    text = case["text"]
    assert engine.tokenize(text, add_special=False, parse_special=False) == case["ids"], text
    got = engine.tokenize(text, add_special=False, parse_special=True)
    assert got == case["ids_parse_special"], text


def check_greedy(engine: hologram.Engine, case: dict[str, Any], add_bos: bool) -> None:
    """Identical continuation, or parting only where llama.cpp's top-2 logits nearly tie."""
    prompt_ids = case["prompt_ids"]
    assert engine.tokenize(case["prompt"], add_special=add_bos) == prompt_ids
    ref = case["greedy_ids"]
    out = engine.generate(prompt_ids, max_tokens=len(ref), temperature=0.0)
    got = list(out.token_ids)
    if out.finish_reason == "stop" and ref and engine.is_eog(ref[-1]) and len(got) < len(ref):
        # The reference lists the end-of-generation token; hologram reports it as the finish.
        got.append(ref[-1])
    for i, (a, b) in enumerate(zip(got, ref)):
        if a != b:
            top = case["steps"][i]["top"]
            gap = top[0][1] - top[1][1]
            assert gap < GREEDY_TIE_GAP, (
                f"greedy continuation of {case['prompt']!r} parts from llama.cpp at step {i} "
                f"({a} vs {b}) where the reference top-2 gap is {gap:.3f}"
            )
            return
    assert len(got) == len(ref), f"{case['prompt']!r}: {len(got)} tokens vs {len(ref)}"


def logsumexp(row: np.ndarray) -> float:
    m = float(row.max())
    return m + float(np.log(np.exp(row.astype(np.float64) - m).sum()))


def check_logits(engine: hologram.Engine, case: dict[str, Any]) -> dict[str, float]:
    ids = case["ids"]
    logits = engine.logits(ids)
    assert logits.shape == (len(ids), engine.n_vocab)
    assert logits.dtype == np.float32
    deltas = []
    agree = 0
    for pos, ref in enumerate(case["positions"]):
        row = logits[pos]
        top = ref["top"]
        ref_id, ref_logit = top[0]
        ref_lp = ref_logit - ref["logsumexp"]
        lp = float(row[ref_id]) - logsumexp(row)
        deltas.append(abs(lp - ref_lp))
        ours = int(np.argmax(row))
        if ours == ref_id:
            agree += 1
        elif top[0][1] - top[1][1] >= GREEDY_TIE_GAP:
            raise AssertionError(
                f"position {pos}: top-1 {ours} differs from llama.cpp's {ref_id} "
                f"with a reference gap of {top[0][1] - top[1][1]:.3f}"
            )
    d = np.array(deltas)
    assert d.mean() <= LOGPROB_MEAN_TOL, f"mean |dlogprob| {d.mean():.4f}"
    assert d.max() <= LOGPROB_MAX_TOL, f"max |dlogprob| {d.max():.4f}"
    assert agree / len(deltas) >= TOP1_AGREEMENT, f"top-1 agreement {agree}/{len(deltas)}"
    return {"mean": float(d.mean()), "max": float(d.max())}
