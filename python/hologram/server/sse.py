"""Server-Sent Events framing: one ``data: {json}`` event per chunk, ``data: [DONE]`` last."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DONE", "KEEPALIVE", "encode_event", "encode_events"]

DONE = b"data: [DONE]\n\n"
#: An SSE comment: clients ignore it; proxies see traffic on a stream that waits.
KEEPALIVE = b": keep-alive\n\n"


def encode_event(payload: dict[str, Any]) -> bytes:
    """One SSE event carrying ``payload`` as compact JSON (JSON escapes any newline)."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    ) + b"\n\n"


def encode_events(texts: list[str]) -> bytes:
    """One SSE event per JSON text (compact, so on one line), in one buffer; no texts is a
    keep-alive comment."""
    if not texts:
        return KEEPALIVE
    if len(texts) == 1:
        return ("data: " + texts[0] + "\n\n").encode("utf-8")
    return "".join(["data: " + t + "\n\n" for t in texts]).encode("utf-8")
