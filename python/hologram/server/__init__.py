"""The OpenAI-compatible model server (``hologram-serve``).

It talks only to :mod:`hologram.heads`; see :mod:`hologram.server.app` for the routes and the
WebSocket protocol, and :mod:`hologram.server.cli` for the command line.
"""

from __future__ import annotations

from hologram.server.app import create_app
from hologram.server.settings import ModelSpec, ServerSettings

__all__ = ["ModelSpec", "ServerSettings", "create_app"]
