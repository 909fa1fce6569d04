"""SmolLM2-135M-Instruct Q4_1 against llama.cpp's reference outputs (tests/data/golden)."""

from __future__ import annotations

from typing import Any

import hologram
import pytest
from conftest import load_golden
from golden_checks import check_greedy, check_logits, check_tokenize, golden_flag

GOLDEN = load_golden("smollm2-135m-instruct-q4_1.json")


@pytest.mark.parametrize("case", GOLDEN["tokenize"], ids=lambda c: repr(c["text"][:24]))
def test_tokenize(smollm2: hologram.Engine, case: dict[str, Any]) -> None:
    check_tokenize(smollm2, case)


def test_add_bos_flag(smollm2: hologram.Engine) -> None:
    assert smollm2.add_bos == golden_flag(GOLDEN["add_bos_token"])


@pytest.mark.parametrize("case", GOLDEN["greedy"], ids=lambda c: repr(c["prompt"][:24]))
def test_greedy(smollm2: hologram.Engine, case: dict[str, Any]) -> None:
    check_greedy(smollm2, case, golden_flag(GOLDEN["add_bos_token"]))


@pytest.mark.parametrize("case", GOLDEN["logits"], ids=lambda c: repr(c["text"][:24]))
def test_logits(smollm2: hologram.Engine, case: dict[str, Any]) -> None:
    check_logits(smollm2, case)


def test_detokenize_roundtrip(smollm2: hologram.Engine) -> None:
    for case in GOLDEN["tokenize"]:
        assert smollm2.detokenize(case["ids"]) == case["text"]


def test_chat_template_present(smollm2: hologram.Engine) -> None:
    tpl = smollm2.chat_template
    assert tpl is not None and "<|im_start|>" in tpl
