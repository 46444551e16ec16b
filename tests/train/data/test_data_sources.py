"""Resolving dataset sources without importing RecBole."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from train.data import movielens_100k_dir, resolve_source
from train.data.sources import ATOMIC, LLM2REC


def test_embedded_movielens_is_found() -> None:
    folder = movielens_100k_dir()
    assert folder.name == "ml-100k" and folder.parent.name == "dataset_example"
    assert (folder / "ml-100k.inter").is_file() and (folder / "ml-100k.item").is_file()
    assert resolve_source("ml-100k") == ("ml-100k", folder, ATOMIC)


def test_finding_movielens_does_not_import_recbole() -> None:
    code = "import sys; from train.data import load_dataset, movielens_100k_dir; movielens_100k_dir(); "
    code += "print('recbole' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.strip() == "False"


def test_missing_recbole_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens_100k_dir()


def test_atomic_folder_and_file(make_atomic) -> None:
    folder = make_atomic("beauty", [("1", "2", "3", "4")])
    assert resolve_source(folder) == ("beauty", folder.resolve(), ATOMIC)
    assert resolve_source(str(folder / "beauty.inter")) == ("beauty", folder.resolve(), ATOMIC)
    # A folder whose single .inter file is named differently.
    other = folder.parent / "renamed"
    folder.rename(other)
    assert resolve_source(other) == ("beauty", other.resolve(), ATOMIC)
    assert resolve_source(other, name="beauty").name == "beauty"


def test_llm2rec_folder(tmp_path: Path) -> None:
    (tmp_path / "Games").mkdir()
    (tmp_path / "Games" / "train_data.txt").write_text("1 2\n")
    assert resolve_source(tmp_path / "Games") == ("Games", (tmp_path / "Games").resolve(), LLM2REC)


def test_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown data source 'ml-1b'"):
        resolve_source("ml-1b")
    with pytest.raises(FileNotFoundError, match=r"neither .*empty\.inter.*train_data\.txt"):
        (tmp_path / "empty").mkdir()
        resolve_source(tmp_path / "empty")
