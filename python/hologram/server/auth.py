"""API keys: which key a request presents, and whether it is one of the server's.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
configured key: the time a check takes depends neither on how much of a key was right nor on
its length being right (only on the length of what was sent, which the sender knows).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

__all__ = ["ApiKeys", "presented_key"]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY`` (the scheme in any case,
    RFC 9110) or ``X-Api-Key``. ``""`` for an Authorization header of another form, None when
    there is none."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return str(value.strip())
        return ""
    key = headers.get("X-Api-Key")
    return str(key) if key is not None else None


class ApiKeys:
    """The server's keys, kept as digests only."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, given: str | None) -> bool:
        """True if ``given`` is one of the keys; every key is compared, in constant time."""
        if given is None:
            return False
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        ok = False
        for expected in self._digests:
            ok |= hmac.compare_digest(digest, expected)
        return ok

    @staticmethod
    def identity(given: str) -> str:
        """The rate-limit identity of a (valid) key: a short digest, never the key."""
        return "key:" + hashlib.sha256(given.encode("utf-8", "surrogatepass")).hexdigest()[:16]
