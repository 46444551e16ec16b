"""The on-disk dataset cache: hits, rebuilds, atomic writes, no pickle."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from train.data import DataConfig, load_dataset
from train.data.cache import MANIFEST, default_cache_dir, save_dataset

ROWS = [
    ("u1", "a", 5, 1), ("u1", "b", 5, 2), ("u1", "c", 5, 3), ("u1", "d", 5, 4),
    ("u2", "b", 5, 1), ("u2", "c", 5, 2), ("u2", "a", 5, 3),
    ("u3", "c", 5, 1), ("u3", "a", 5, 2), ("u3", "b", 5, 3), ("u3", "d", 5, 4),
]  # fmt: skip
ITEMS = [
    ("a", "A", "2000", "Drama"),
    ("b", "B", "2001", "Comedy"),
    ("c", "C", "2002", ""),
    ("d", "D", "", "War"),
]


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llmrec.data"]


def _same(a, b) -> None:
    assert a.item_ids == b.item_ids and a.user_ids == b.user_ids and a.num_items == b.num_items
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    for split in ("train", "valid", "test"):
        ea, eb = getattr(a, split), getattr(b, split)
        assert ea.seq_index.tolist() == eb.seq_index.tolist() and ea.position.tolist() == eb.position.tolist()
        assert ea.targets.tolist() == eb.targets.tolist()
    assert a.item_features == b.item_features and a.feature_types == b.feature_types


def test_second_load_is_a_hit(make_atomic, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_atomic("toy", ROWS, ITEMS)
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="llmrec.data")
    first = load_dataset(folder, DataConfig(k_core=2), cache_dir=cache)
    assert any(m.startswith("dataset cache built") for m in _messages(caplog))
    caplog.clear()
    second = load_dataset(folder, DataConfig(k_core=2), cache_dir=cache)
    assert any(m.startswith("dataset cache hit") for m in _messages(caplog))
    assert second.manifest == first.manifest  # same folder, same creation time
    _same(first, second)
    assert len(list((cache / "datasets").iterdir())) == 1

    m = first.manifest
    assert m["parameters"] == {"k_core": 2, "min_rating": None, "allow_file_order": False}
    assert m["counts"] == {
        "users": 3, "items": 4, "interactions": 11, "train_examples": 11 - 3 * 3,
        "valid_examples": 3, "test_examples": 3,
    }  # fmt: skip
    files = {f["name"]: f for f in m["source"]["files"]}
    assert set(files) == {"toy.inter", "toy.item"}
    assert files["toy.inter"]["size"] == (folder / "toy.inter").stat().st_size
    assert len(files["toy.inter"]["sha256"]) == 64
    assert m["source"]["name"] == "toy" and m["source"]["format"] == "atomic"
    assert {"format_version", "created"} <= set(m)


def test_changes_rebuild(make_atomic, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_atomic("toy", ROWS, ITEMS)
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="llmrec.data")
    base = load_dataset(folder, DataConfig(k_core=2), cache_dir=cache)

    caplog.clear()
    other_k = load_dataset(folder, DataConfig(k_core=3), cache_dir=cache)
    assert any(m.startswith("dataset cache built") for m in _messages(caplog))
    assert other_k.manifest["parameters"]["k_core"] == 3
    assert other_k.manifest["key"] != base.manifest["key"]

    caplog.clear()
    inter = folder / "toy.inter"
    inter.write_text(inter.read_text() + "u2\td\t5\t9\n")  # u2 now has 4 interactions
    changed = load_dataset(folder, DataConfig(k_core=2), cache_dir=cache)
    assert any(m.startswith("dataset cache built") for m in _messages(caplog))
    assert changed.manifest["counts"]["interactions"] == 12
    assert changed.sequences[1].tolist()[-1] == 4  # d
    assert len(list((cache / "datasets").iterdir())) == 3

    caplog.clear()
    (folder / "toy.item").write_text((folder / "toy.item").read_text().replace("\tA\t", "\tAlpha\t"))
    retitled = load_dataset(folder, DataConfig(k_core=2), cache_dir=cache)
    assert any(m.startswith("dataset cache built") for m in _messages(caplog))
    assert retitled.item_features["movie_title"][1] == "Alpha"


def test_cache_folder_has_no_pickle(make_atomic, tmp_path: Path) -> None:
    data = load_dataset(make_atomic("toy", ROWS, ITEMS), DataConfig(k_core=2), cache_dir=tmp_path)
    (folder,) = (tmp_path / "datasets").iterdir()
    assert folder.name == f"toy-{data.manifest['key']}"
    names = {p.name for p in folder.iterdir()}
    assert {MANIFEST, "sequences.npy", "offsets.npy", "items.json", "users.json", "features.json"} <= names
    for path in folder.iterdir():
        assert path.suffix in {".npy", ".json"}, path
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            assert arr.dtype == np.int64
        else:
            json.loads(path.read_text())
    flat = np.load(folder / "sequences.npy", allow_pickle=False)
    offsets = np.load(folder / "offsets.npy", allow_pickle=False)
    assert offsets.tolist() == [0, 4, 7, 11]
    assert flat[offsets[1] : offsets[2]].tolist() == data.sequences[1].tolist() == [2, 3, 1]


def test_corrupt_cache_is_rebuilt(make_atomic, tmp_path: Path) -> None:
    folder = make_atomic("toy", ROWS, ITEMS)
    first = load_dataset(folder, DataConfig(k_core=2), cache_dir=tmp_path)
    (cached,) = (tmp_path / "datasets").iterdir()
    (cached / "train_position.npy").write_bytes(b"garbage")
    again = load_dataset(folder, DataConfig(k_core=2), cache_dir=tmp_path)
    _same(first, again)
    assert (
        np.load(cached / "train_position.npy", allow_pickle=False).tolist() == first.train.position.tolist()
    )


def test_concurrent_writer_already_done(make_atomic, tmp_path: Path) -> None:
    data = load_dataset(make_atomic("toy", ROWS, ITEMS), DataConfig(k_core=2), cache_dir=tmp_path)
    (cached,) = (tmp_path / "datasets").iterdir()
    before = (cached / MANIFEST).read_text()
    # A second writer finishing later keeps the first result and leaves no temporary folder.
    assert save_dataset(data, cached, {**data.manifest, "created": "later"}) == cached
    assert (cached / MANIFEST).read_text() == before
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == [cached.name]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LLMREC_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "llmrec"
