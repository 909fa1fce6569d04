"""The README matches the code: its first two commands are the set-up and test commands, and it
names every command-line flag, every route and every environment variable the runtime reads."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _long_options(sub)
        elif action.help != argparse.SUPPRESS:
            found += [o for o in action.option_strings if o.startswith("--") and o != "--help"]
    return found


def test_first_two_commands() -> None:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith("bash scripts/setup.sh && hologram-serve ")
    assert block[1].startswith("bash scripts/test.sh ")
    assert len(block) == 2


@pytest.mark.parametrize("module", ["hologram.server.cli", "hologram.cli"])
def test_every_flag_is_documented(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    parser = mod.build_parser() if hasattr(mod, "build_parser") else mod._parser()
    options = _long_options(parser)
    assert options
    missing = [o for o in options if not re.search(rf"`{re.escape(o)}\b", README)]
    assert missing == [], f"flags the README does not name: {missing}"


def test_every_route_is_documented() -> None:
    from hologram.server.app import create_app
    from hologram.server.settings import ServerSettings

    app = create_app(ServerSettings(models=[]))
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":  # Quart's default static route (no static folder here)
            continue
        path = re.sub(r"<[^>]*>", "{id}", rule.rule)
        if rule.websocket:
            wanted = [f"WebSocket `{path}`"]
        else:
            wanted = [f"`{m} {path}`" for m in sorted(rule.methods or ()) if m not in
                      ("HEAD", "OPTIONS")]
        missing += [w for w in wanted if w not in README]
    assert missing == [], f"routes the README does not name: {missing}"


def test_every_environment_variable_is_documented() -> None:
    sources = [*(REPO / "python" / "hologram").rglob("*.py"),
               *(p for p in (REPO / "rust").glob("*/src/**/*.rs") if not p.name.endswith(
                   "_tests.rs"))]
    names = set()
    for path in sources:
        names.update(re.findall(r"\bHOLOGRAM_[A-Z0-9_]+\b", path.read_text()))
    assert "HOLOGRAM_ISA" in names
    missing = sorted(n for n in names if f"`{n}" not in README)
    assert missing == [], f"environment variables the README does not name: {missing}"
