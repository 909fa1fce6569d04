"""What the request router in this process knows, for the ingress in the same process.

Ray Serve pickles a request router's module by value, so state kept there would be a copy;
this module travels by reference and is shared.
"""

from __future__ import annotations

__all__ = ["KNOWN", "known_replicas"]

#: Deployment name -> ids of its running replicas, as this process's router sees them.
KNOWN: dict[str, list[str]] = {}


def known_replicas(deployment: str) -> list[str]:
    """Ids of the deployment's running replicas known to this process's router."""
    return list(KNOWN.get(deployment, []))
