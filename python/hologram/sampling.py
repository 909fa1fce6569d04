"""The one definition of sampling settings, shared by every front end.

Defaults come from the engine itself (``_core.sampling_defaults()``: llama.cpp's values), so
the Python API (``Engine.generate`` / ``Engine.stream`` with a value left unset), the heads and
the server apply the same ones. A request builds its :class:`SamplingParams` once, with
:meth:`SamplingParams.build`, and every later stage uses that object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hologram import _core

__all__ = ["DEFAULTS", "SamplingParams"]

#: The engine's defaults for values a request leaves unset.
DEFAULTS: Mapping[str, float | int] = dict(_core.sampling_defaults())


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings. ``max_tokens`` None means "until end of text or context full"."""

    max_tokens: int | None = 16
    temperature: float = float(DEFAULTS["temperature"])
    top_p: float = float(DEFAULTS["top_p"])
    top_k: int = int(DEFAULTS["top_k"])
    min_p: float = float(DEFAULTS["min_p"])
    repeat_penalty: float = float(DEFAULTS["repeat_penalty"])
    repeat_last_n: int = int(DEFAULTS["repeat_last_n"])
    presence_penalty: float = float(DEFAULTS["presence_penalty"])
    frequency_penalty: float = float(DEFAULTS["frequency_penalty"])
    logit_bias: Mapping[int, float] | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: None: no logprobs; k >= 0: each token's logprob plus its k most likely alternatives.
    logprobs: int | None = None
    ignore_eos: bool = False
    #: Structured output: a grammar the output must match (llguidance ``TopLevelGrammar``
    #: JSON, from :mod:`hologram.constraints`); None = free text.
    grammar: str | None = None

    @classmethod
    def build(cls, **values: Any) -> SamplingParams:
        """Settings from request values; a value given as None takes the default."""
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown sampling settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``_core.Engine.stream`` (everything but max_tokens)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "repeat_last_n": self.repeat_last_n,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": dict(self.logit_bias) if self.logit_bias else None,
            "stop": list(self.stop) if self.stop else None,
            "seed": self.seed,
            "logprobs": self.logprobs,
            "ignore_eos": self.ignore_eos,
            "grammar": self.grammar,
        }
