"""Which ``Host`` and ``Origin`` a request may carry (DNS rebinding, cross-site requests).

A server on loopback without an API key must not be usable by whatever web page its user
happens to open. Two checks, applied to every request and WebSocket upgrade:

* ``Host`` must name this server: ``localhost``, ``127.0.0.1``, ``[::1]``, the address it is
  bound to, or a name given with ``--allowed-hosts`` (a leading dot allows the subdomains
  too; ``*`` allows any). A page whose name was re-pointed at 127.0.0.1 (DNS rebinding)
  sends its own name and is refused. A server bound to every interface (``0.0.0.0``, ``::``)
  accepts any ``Host`` unless ``--allowed-hosts`` is given: it is reached by names and
  addresses it cannot know.
* A request carrying an ``Origin`` (browsers send it on WebSocket upgrades, POSTs and
  cross-origin fetches) is refused unless that origin is the server itself (a page it
  serves: the origin's host and port equal the ``Host``) or is listed with
  ``--allowed-origins`` (``*`` allows any). Listed origins get CORS headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_NAMES", "WILDCARD_BINDS", "HostPolicy", "OriginPolicy", "split_host"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})

_NAME = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]+", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header or an origin's netloc: lower case, IPv6 without
    brackets, no trailing dot; None when it is not a plain host name or address."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    else:
        name, sep, rest = value.rpartition(":")
        if sep and rest.isdigit() and ":" not in name:
            port = int(rest)
        else:
            name = value
    name = name.rstrip(".")
    if not name or len(name) > 253 or not _NAME.fullmatch(name):
        return None
    if port is not None and not 0 < port < 65536:
        return None
    return name, port


class HostPolicy:
    """The ``Host`` names this server answers to."""

    def __init__(self, bind_host: str, allowed: Iterable[str] = ()) -> None:
        extra = [a.strip().lower().rstrip(".") for a in allowed if a.strip()]
        self.any = "*" in extra or (not extra and bind_host.strip("[]") in WILDCARD_BINDS)
        self.names = set(LOOPBACK_NAMES)
        bound = split_host(bind_host)
        if bound is not None and bound[0] not in WILDCARD_BINDS:
            self.names.add(bound[0])
        self.suffixes: list[str] = []
        for a in extra:
            if a.startswith("."):
                self.suffixes.append(a)
            elif a != "*":
                parsed = split_host(a)
                self.names.add(parsed[0] if parsed else a)

    def allows(self, host: str | None) -> bool:
        """A missing ``Host`` (HTTP/1.0) is allowed: browsers always send one."""
        if self.any or host is None:
            return True
        parsed = split_host(host)
        if parsed is None:
            return False
        name = parsed[0]
        return name in self.names or any(
            name.endswith(s) or name == s[1:] for s in self.suffixes)


class OriginPolicy:
    """The browser origins that may use the server (besides its own pages)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        items = [a.strip().rstrip("/") for a in allowed if a.strip()]
        self.any = "*" in items
        self.origins = [a for a in items if a != "*"]
        self._lower = {a.lower() for a in self.origins}

    def listed(self, origin: str) -> bool:
        return self.any or origin.lower() in self._lower

    def allows(self, origin: str | None, host: str | None) -> bool:
        """No ``Origin`` (not a browser, or a same-origin GET), the server's own origin, or a
        listed one."""
        if origin is None:
            return True
        if self.listed(origin):
            return True
        return same_origin(origin, host)


def same_origin(origin: str, host: str | None) -> bool:
    """The origin's host and port are the request's ``Host`` (a page this server serves)."""
    if host is None or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return False
    o = split_host(parts.netloc)
    h = split_host(host)
    if o is None or h is None:
        return False
    return o[0] == h[0] and (o[1] or default) == (h[1] or default)
