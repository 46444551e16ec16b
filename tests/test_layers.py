"""The import rules between the layers, read from the source (every import statement, lazy ones included):
llmrec (the shared contracts) imports no layer and no torch; train imports neither export nor serving;
serving imports neither torch nor train nor export."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "llmrec": {"torch", "train", "export", "serving"},
    "train": {"export", "serving"},
    "serving": {"torch", "train", "export"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module (relative ones stay inside its package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_it_may(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules under {layer}/"
    broken = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & FORBIDDEN[layer]) for p in files}
    assert {k: v for k, v in broken.items() if v} == {}


def test_the_rule_reader_sees_lazy_and_dotted_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os.path\nfrom . import sibling\n\ndef f():\n    from serving.index import x\n")
    assert imported_packages(module) == {"os", "serving"}
