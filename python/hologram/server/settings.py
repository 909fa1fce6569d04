"""Server configuration (filled by the CLI, or directly by code embedding the app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelSpec", "ServerSettings"]


@dataclass(frozen=True)
class ModelSpec:
    path: Path
    alias: str | None = None

    @property
    def model_id(self) -> str:
        """The public id: the alias, else the file name without ``.gguf``."""
        if self.alias:
            return self.alias
        name = self.path.name
        return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


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
    #: Jinja2 chat template (source text) used instead of each chat model's own.
    chat_template: str | None = None
