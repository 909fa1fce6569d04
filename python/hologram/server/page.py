"""The chat page served at ``GET /``: one static HTML file (``assets/chat.html``, plain JavaScript
and CSS inline, nothing fetched from elsewhere) shipped in the package.

Its Content-Security-Policy allows exactly the page's own inline script and style (by SHA-256),
requests to this origin only, and no framing."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["ChatPage", "load_chat_page"]

_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class ChatPage:
    body: bytes
    headers: dict[str, str]


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def load_chat_page() -> ChatPage:
    html = (resources.files("hologram.server") / "assets" / "chat.html").read_text("utf-8")
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, content in _BLOCK.findall(html):
        hashes[tag].append(_sha256(content))
    csp = "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(hashes["script"]),
        "style-src " + " ".join(hashes["style"]),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return ChatPage(html.encode("utf-8"), {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })
