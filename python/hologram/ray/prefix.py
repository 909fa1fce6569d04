"""Prefix keys of a request body (no Ray here): what the prefix-aware router matches on.

A request's keys are hashes of its leading content cut at natural boundaries, shortest first:
for chat, the messages up to and including each message (a conversation's next turn shares
all but its newest messages with the turn before); for a completion prompt, its first 256,
512, 1024, ... characters. Prefixes shorter than :data:`MIN_PREFIX_CHARS` get no key (too
little to be worth a cached block). The router sends a request to the replica that served the
longest key it knows, so requests sharing a system prompt or a conversation meet the prefix
cache that already holds it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["KEYED_PATHS", "MIN_PREFIX_CHARS", "prefix_keys"]

#: Routes whose body carries a prompt (OpenAI and Ollama).
KEYED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/api/chat",
                         "/api/generate"})
#: A prefix this short gets no key (the prefix cache works in blocks of 32 tokens).
MIN_PREFIX_CHARS = 256
#: Most keys per request (the longest boundaries are dropped beyond it).
MAX_KEYS = 16
#: Most characters a key covers; longer prompts are keyed on their first this many.
MAX_PREFIX_CHARS = 1 << 16


def _text(content: Any) -> str:
    """A message's content as text (a string, or the text parts of a content array)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def _hash(model: str, text: str) -> str:
    return hashlib.blake2b(f"{model}\x00{text}".encode("utf-8", "surrogatepass"),
                           digest_size=12).hexdigest()


def prefix_keys(path: str, body: bytes) -> list[str]:
    """The prefix keys of a POST body to ``path``, shortest prefix first; [] when the body
    is not a JSON object with messages or a prompt (the router then balances by load)."""
    if path not in KEYED_PATHS or not body:
        return []
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    model = data.get("model") if isinstance(data.get("model"), str) else ""
    assert isinstance(model, str)
    cuts: list[str] = []
    messages = data.get("messages")
    if isinstance(messages, list):
        text = ""
        for message in messages:
            if not isinstance(message, dict):
                break
            role = message.get("role") if isinstance(message.get("role"), str) else ""
            text += f"{role}\x00{_text(message.get('content'))}\x00"
            if len(text) >= MIN_PREFIX_CHARS:
                cuts.append(text[:MAX_PREFIX_CHARS])
            if len(text) >= MAX_PREFIX_CHARS:
                break
    else:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            size = MIN_PREFIX_CHARS
            while size <= min(len(prompt), MAX_PREFIX_CHARS):
                cuts.append(prompt[:size])
                size *= 2
    cuts = list(dict.fromkeys(cuts))[:MAX_KEYS]
    return [_hash(model, c) for c in cuts]
