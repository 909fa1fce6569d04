"""Replays the chat-template fuzzer's committed inputs: every crash it found
(``fuzz/regressions/chat_template/``, each fixed) and its seed corpus
(``fuzz/corpus/chat_template/``), through the check the fuzzer runs (``fuzz/chat_template/harness.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chat_template_fuzz_harness", FUZZ / "chat_template" / "harness.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


INPUTS = sorted(
    p
    for kind in ("regressions", "corpus")
    for p in (FUZZ / kind / "chat_template").glob("*")
    if p.is_file()
)


def test_inputs_are_committed() -> None:
    assert any(p.parent.parent.name == "corpus" for p in INPUTS)


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_chat_template_fuzz_input(path: Path) -> None:
    harness = _harness()
    harness.check(path.read_bytes())
    harness.check_worker(path.read_bytes())
