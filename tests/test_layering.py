"""The dependency direction of docs/DESIGN.md, read from the source: `harness` imports the lower
layers (`models`, `datasets`, `search_spaces`, `leaderboards`), never the other way, and the lower
layers do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("models", "datasets", "search_spaces", "leaderboards")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (lazy imports inside functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", LOWER)
def test_a_lower_layer_imports_neither_the_harness_nor_another_lower_layer(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files or layer == "search_spaces", f"no Python files under {layer}/"
    forbidden = ["irstdlab.harness", *(f"irstdlab.{other}" for other in LOWER if other != layer)]
    offences = [f"{path.relative_to(ROOT)}: {module}" for path in files for module in sorted(imported_modules(path))
                if any(module == bad or module.startswith(bad + ".") for bad in forbidden)]
    assert not offences, "imports against the dependency direction:\n" + "\n".join(offences)


def test_the_check_sees_a_lazy_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from irstdlab.harness.config import TrialConfig\n    return TrialConfig\n")
    assert "irstdlab.harness.config" in imported_modules(sample)
