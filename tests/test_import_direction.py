"""Imports point one way: plugin -> protocol; cli -> training -> core -> protocol.

- plugin/ imports only qgis, qgis.PyQt, the standard library and the protocol package;
- protocol/ imports only the standard library (test_protocol_package.py);
- core/ never imports training, cli or plugin; training/ never imports cli or plugin;
- nothing in the engine imports qgis or PyQt.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from helpers.paths import ROOT


def imports(path: Path) -> list[str]:
    """Absolute module names a file imports (relative imports resolved in the package)."""
    package = path.relative_to(ROOT).parent.parts
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ("terraseg", *package[: len(package) - node.level + 1])
                out.append(".".join([*base, node.module] if node.module else base))
            else:
                out.append(node.module or "")
    return out


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", files("plugin"), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_imports_only_qgis_stdlib_and_protocol(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        ok = (top in ("qgis", "__future__") or top in sys.stdlib_module_names
              or name.startswith(("terraseg.plugin", "terraseg.protocol")))
        assert ok, f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("core", ("terraseg.training", "terraseg.cli", "terraseg.plugin", "qgis", "PyQt5")),
    ("training", ("terraseg.cli", "terraseg.plugin", "qgis", "PyQt5")),
    ("cli", ("terraseg.plugin", "qgis", "PyQt5")),
])
def test_engine_import_direction(folder: str, forbidden: tuple[str, ...]) -> None:
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in files(folder) for n in imports(p)
           if n.startswith(forbidden)]
    assert not bad, bad


def test_no_branching_on_model_kinds_outside_the_kinds() -> None:
    """Model kinds are objects in the registry: no ``kind ==`` in the engine elsewhere."""
    hits = []
    for folder in ("core", "training", "cli"):
        for p in files(folder):
            if p.name == "kinds.py":
                continue
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if "kind ==" in line or "kind !=" in line:
                    hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, hits
