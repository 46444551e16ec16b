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


# the modules of train that export may read trained artifacts through; only the names in their __all__
TRAIN_SURFACE = ("train.data", "train.embed", "train.embedder", "train.eval", "train.srs", "train.stages")


def declared_names(module: str) -> set[str]:
    """The `__all__` of a module, read from its source (a package's __init__.py)."""
    path = ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def train_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every import of train in a module; name None for `import train.x`."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "train"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "train":
            out += [(node.module, a.name) for a in node.names]
    return out


def test_export_reads_train_only_through_its_public_surface():
    surface = {module: declared_names(module) for module in TRAIN_SURFACE}
    assert all(surface.values()), {m: sorted(n) for m, n in surface.items()}
    outside = {}
    for path in sorted((ROOT / "export").rglob("*.py")):
        bad = [f"{m}.{n}" if n else m for m, n in train_imports(path) if n is None or n not in surface.get(m, ())]
        if bad:
            outside[str(path.relative_to(ROOT))] = bad
    assert outside == {}
