"""Gemma 3 270M Q4_K_M against llama.cpp's reference outputs (tests/data/golden)."""

from __future__ import annotations

from typing import Any

import hologram
import pytest
from conftest import load_golden
from golden_checks import check_greedy, check_logits, check_tokenize, golden_flag

GOLDEN = load_golden("gemma-3-270m-q4_k_m.json")


@pytest.mark.parametrize("case", GOLDEN["tokenize"], ids=lambda c: repr(c["text"][:24]))
def test_tokenize(gemma3: hologram.Engine, case: dict[str, Any]) -> None:
    check_tokenize(gemma3, case)


def test_metadata(gemma3: hologram.Engine) -> None:
    assert gemma3.architecture == "gemma3"
    assert gemma3.add_bos == golden_flag(GOLDEN["add_bos_token"])
    assert gemma3.n_vocab == 262144
    assert gemma3.bos_token == "<bos>"
    # The file carries no chat template (the golden README says so); the property reports it.
    assert gemma3.chat_template == gemma3.metadata.get("tokenizer.chat_template")


@pytest.mark.parametrize("case", GOLDEN["greedy"], ids=lambda c: repr(c["prompt"][:24]))
def test_greedy(gemma3: hologram.Engine, case: dict[str, Any]) -> None:
    check_greedy(gemma3, case, golden_flag(GOLDEN["add_bos_token"]))


@pytest.mark.parametrize("case", GOLDEN["logits"], ids=lambda c: repr(c["text"][:24]))
def test_logits(gemma3: hologram.Engine, case: dict[str, Any]) -> None:
    check_logits(gemma3, case)


def test_detokenize_roundtrip(gemma3: hologram.Engine) -> None:
    for case in GOLDEN["tokenize"]:
        assert gemma3.detokenize(case["ids"]) == case["text"]
