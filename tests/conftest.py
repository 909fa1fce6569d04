"""Shared fixtures: the real models (from their PyPI packages) and the golden references."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hologram
import pytest
from hologram.models import default_model_path

REPO = Path(__file__).resolve().parent.parent
#: Reference outputs and their tolerances (README.md there), kept with the tests.
GOLDEN = REPO / "tests" / "data" / "golden"


def load_golden(name: str) -> dict[str, Any]:
    path = GOLDEN / name
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> Iterator[hologram.Engine]:
    yield hologram.Engine(smollm2_path, n_ctx=1024, n_threads=2)


@pytest.fixture(scope="session")
def smollm2_golden() -> dict[str, Any]:
    return load_golden("smollm2-135m-instruct-q4_1.json")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    from hologram.models import gemma3_model_path

    return gemma3_model_path()


@pytest.fixture(scope="session")
def gemma3(gemma3_path: Path) -> Iterator[hologram.Engine]:
    yield hologram.Engine(gemma3_path, n_ctx=1024, n_threads=2)
