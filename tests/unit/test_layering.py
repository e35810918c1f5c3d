"""`storage` and `exchanges` never import each other (imports flow one way; see ARCHITECTURE)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "market_data"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    ("layer", "forbidden"), [("storage", "exchanges"), ("exchanges", "storage")]
)
def test_layers_do_not_import_each_other(layer: str, forbidden: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules under {layer}/"
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in imported_modules(path)
            if name == f"market_data.{forbidden}" or name.startswith(f"market_data.{forbidden}.")
        )
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_imports() -> None:
    probe = PACKAGE / "storage" / "sql.py"
    assert "market_data.storage.base" in imported_modules(probe) | {
        m.rsplit(".", 1)[0] for m in imported_modules(probe)
    }
