"""The one definition of sampling settings, shared by every front end.

One rule decides a value a request leaves unset, everywhere (the Python API
``Engine.generate`` / ``Engine.stream``, the heads, every server route): the server's flag
(``--temp``, ``--top-p``, ``--top-k``, ``--min-p``, ``--repeat-penalty``, ``--repeat-last-n``,
``--seed``), else the model file's ``general.sampling.*`` key (the recommended settings
llama.cpp reads; parsed by the engine, ``Engine.sampling_defaults``), else llama.cpp's default
(``_core.sampling_defaults()``). :class:`SamplingDefaults` holds a model's resolved defaults
and where each came from; a request builds its :class:`SamplingParams` once, with
:meth:`SamplingParams.build`, and every later stage uses that object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from hologram import _core

__all__ = ["DEFAULTS", "SETTINGS", "SamplingDefaults", "SamplingParams"]

#: llama.cpp's defaults, for values neither a flag nor the model file sets.
DEFAULTS: Mapping[str, float | int] = dict(_core.sampling_defaults())

#: The settings that have defaults (all but ``seed``, which is random unless set).
SETTINGS: tuple[str, ...] = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                             "repeat_last_n", "presence_penalty", "frequency_penalty")

_INT_SETTINGS = frozenset({"top_k", "repeat_last_n"})

#: Where a default came from: a server flag, the GGUF file, or llama.cpp's value.
Source = Literal["flag", "gguf", "default"]


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's sampling defaults and the source of each (see the module's docstring)."""

    values: Mapping[str, float | int] = field(default_factory=lambda: dict(DEFAULTS))
    sources: Mapping[str, Source] = field(
        default_factory=lambda: dict.fromkeys(SETTINGS, "default"))
    #: The seed of requests that give none (``--seed``); None = a random one each.
    seed: int | None = None

    @classmethod
    def resolve(cls, engine: _core.Engine | None = None,
                flags: Mapping[str, float | int | None] | None = None) -> SamplingDefaults:
        """Flags (None = not given; ``seed`` among them), else ``engine``'s file values, else
        llama.cpp's."""
        flags = flags or {}
        unknown = set(flags) - set(SETTINGS) - {"seed"}
        if unknown:
            raise TypeError(f"unknown sampling settings: {sorted(unknown)}")
        values: dict[str, float | int] = dict(DEFAULTS)
        sources: dict[str, Source] = dict.fromkeys(SETTINGS, "default")
        if engine is not None:
            from_file = set(engine.sampling_from_file)
            for name, value in dict(engine.sampling_defaults).items():
                if name in from_file:
                    values[name], sources[name] = value, "gguf"
        for name in SETTINGS:
            flag = flags.get(name)
            if flag is not None:
                values[name] = int(flag) if name in _INT_SETTINGS else float(flag)
                sources[name] = "flag"
        seed = flags.get("seed")
        return cls(values, sources, None if seed is None else int(seed))

    def report(self) -> dict[str, dict[str, Any]]:
        """``{setting: {"value": v, "source": "flag" | "gguf" | "default"}}``, seed included
        (value None: random per request)."""
        out: dict[str, dict[str, Any]] = {
            name: {"value": self.values[name], "source": self.sources[name]}
            for name in SETTINGS}
        out["seed"] = {"value": self.seed,
                       "source": "default" if self.seed is None else "flag"}
        return out


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
    def build(cls, defaults: SamplingDefaults | None = None, **values: Any) -> SamplingParams:
        """Settings from request values; a value given as None (or left out) takes the
        model's default from ``defaults`` (llama.cpp's without it)."""
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown sampling settings: {sorted(unknown)}")
        given = {k: v for k, v in values.items() if v is not None}
        if defaults is not None:
            for name in SETTINGS:
                given.setdefault(name, defaults.values[name])
            if defaults.seed is not None:
                given.setdefault("seed", defaults.seed)
        return cls(**given)

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
