"""hologram: a CPU-first LLM inference engine and OpenAI-compatible model server."""

from hologram._core import (
    ContextOverflowError,
    Engine,
    GenerationResult,
    GGUFError,
    HologramError,
    InternalError,
    InvalidArgumentError,
    KVCacheFullError,
    ModelLoadError,
    Step,
    Stream,
    TopLogprob,
    UnsupportedModelError,
    __version__,
)
from hologram.models import default_embedding_model_path, default_model_path

__all__ = [
    "ContextOverflowError",
    "Engine",
    "GGUFError",
    "GenerationResult",
    "HologramError",
    "InternalError",
    "InvalidArgumentError",
    "KVCacheFullError",
    "ModelLoadError",
    "Step",
    "Stream",
    "TopLogprob",
    "UnsupportedModelError",
    "__version__",
    "default_embedding_model_path",
    "default_model_path",
]
