"""Server configuration (filled by the CLI, or directly by code embedding the app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["COMPLETION_ALIAS", "EMBEDDING_ALIAS", "ModelSpec", "ServerSettings", "model_ids"]

#: Extra ids of the default chat and embedding models (hologram's original quick start).
COMPLETION_ALIAS = "hologram-completion-v1"
EMBEDDING_ALIAS = "hologram-embedding-v1"


@dataclass(frozen=True)
class ModelSpec:
    path: Path
    #: The public id (default: the file name without ``.gguf``).
    alias: str | None = None
    #: More ids the model answers to, listed in /v1/models after the public id.
    aliases: tuple[str, ...] = ()

    @property
    def file_id(self) -> str:
        """The file name without ``.gguf``."""
        name = self.path.name
        return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name

    @property
    def model_id(self) -> str:
        """The public id (responses and metrics name the model by it): the alias, else the
        file name without ``.gguf``."""
        return self.alias or self.file_id

    @property
    def ids(self) -> list[str]:
        """Every id: the public one, the file-name one, then the aliases (no repeats)."""
        return list(dict.fromkeys([self.model_id, self.file_id, *self.aliases]))


def model_ids(specs: list[ModelSpec]) -> list[list[str]]:
    """The ids of each model, its public id first. A file-name id shared by several models (two ``model.gguf`` in
    different folders) is left out for them, which must then have an alias; any other id used
    twice is an error. Raises ValueError naming the problem."""
    file_ids = [s.file_id for s in specs]
    shared = {f for f in file_ids if file_ids.count(f) > 1}
    out: list[list[str]] = []
    for spec in specs:
        ids = [i for i in spec.ids if i != spec.file_id or i not in shared or i == spec.alias]
        if not ids:
            raise ValueError(f"several models have the file name {spec.path.name!r}: give "
                             "each an --alias")
        out.append(ids)
    seen: dict[str, int] = {}
    for k, ids in enumerate(out):
        for i in ids:
            if i in seen and seen[i] != k:
                raise ValueError(f"model ids must be unique: {i!r} names two models")
            seen[i] = k
    return out


@dataclass
class ServerSettings:
    models: list[ModelSpec]
    host: str = "127.0.0.1"
    port: int = 8000
    n_ctx: int = 2048
    n_threads: int | None = None
    n_batch: int = 512
    #: Most sequences running at once per model (the engine's n_seq_max).
    parallel: int = 16
    #: Token slots of each model's KV block pool; None = n_ctx * min(parallel, 4).
    kv_tokens: int | None = None
    #: Most rows (decode rows plus prompt chunks) in one engine step.
    step_tokens: int = 128
    #: Most tokens one request may cost at worst: (prompt + max_tokens) x n summed over its
    #: prompts for generation, all input tokens for embeddings; more is refused (400).
    max_request_tokens: int = 65536
    #: Seconds between SSE keep-alive comments while a stream waits (queued, long prompt).
    sse_keepalive_s: float = 5.0
    api_keys: list[str] = field(default_factory=list)
    #: Host names the server answers to besides loopback and its bind address (a leading dot
    #: allows subdomains, "*" any); with none, a server bound to 0.0.0.0/:: accepts any Host.
    allowed_hosts: list[str] = field(default_factory=list)
    #: Browser origins (scheme://host[:port]) that may call the server, with CORS; "*" any.
    allowed_origins: list[str] = field(default_factory=list)
    #: Requests per minute per API key (or client address without a key); None = unlimited.
    rate_limit: int | None = None
    #: Requests accepted per model beyond ``parallel`` (they wait in the engine's queue);
    #: past that, 503.
    max_queue: int = 64
    max_body_bytes: int = 16 * 1024 * 1024
    #: Seconds in-flight requests get to finish after SIGTERM.
    shutdown_timeout: float = 30.0
    template_timeout_s: float = 2.0
    #: Sampling defaults from the command line (--temp, --top-p, --top-k, --min-p,
    #: --repeat-penalty, --repeat-last-n, --seed), over each file's ``general.sampling.*``
    #: values: keys of hologram.sampling.SETTINGS plus "seed".
    sampling: dict[str, float | int] = field(default_factory=dict)
    #: Jinja2 chat template (source text) used instead of each chat model's own.
    chat_template: str | None = None
