"""The package's dependency rules (ARCHITECTURE.md §2): heads know nothing of HTTP or the
server's schemas; the server reaches the engine only through the heads."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "python" / "hologram"


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def banned(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", sorted((PKG / "heads").glob("*.py")), ids=lambda p: p.name)
def test_heads_do_not_import_http_or_schemas(path: Path) -> None:
    assert banned(imports(path), ("quart", "hypercorn", "pydantic", "hologram.server")) == []


@pytest.mark.parametrize("path", sorted((PKG / "server").glob("*.py")), ids=lambda p: p.name)
def test_server_does_not_import_the_extension(path: Path) -> None:
    assert banned(imports(path), ("hologram._core",)) == []


def test_protocol_imports_only_pydantic_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"pydantic", "__future__"}
    roots = {n.split(".")[0] for n in imports(PKG / "server" / "protocol.py")}
    assert roots <= allowed, roots - allowed
