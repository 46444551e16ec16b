"""python -m export.index: snapshot from an SRS item table + the dataset's titles, and its refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from export.index import main
from serving.index import ItemIndex, ItemStore
from train.data import DataConfig, load_dataset


def write_table(path: Path, rows: int, dim: int = 8, item_ids: list[str] | None = None, seed: int = 0) -> np.ndarray:
    table = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    table[0] = 0.0
    metadata = {"item_ids": json.dumps(item_ids)} if item_ids is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": table}, str(path), metadata=metadata)
    return table


def test_builds_index_and_store_from_an_export_folder(tmp_path, planted_folder, planted_data):
    export_dir = tmp_path / "user_encoder"
    table = write_table(export_dir / "item_vectors.safetensors", planted_data.num_items + 1,
                        item_ids=planted_data.item_ids)
    (export_dir / "export.json").write_text(json.dumps(
        {"score": "inner_product", "source": {"sha256": "ckpt"}, "items": {"source": {"sha256": "emb"}}}))
    out = tmp_path / "index"
    assert main(["--item-vectors", str(export_dir), "--dataset", str(planted_folder), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sha = hashlib.sha256((export_dir / "item_vectors.safetensors").read_bytes()).hexdigest()
    assert manifest["item_vectors_sha256"] == sha and manifest["count"] == planted_data.num_items
    assert (manifest["user_encoder_sha256"], manifest["embeddings_sha256"]) == ("ckpt", "emb")
    assert manifest["metric"] == "inner_product" and manifest["factory"] == "Flat"
    index = ItemIndex.load(out, expect={"dim": 8, "metric": "inner_product", "item_vectors_sha256": sha})
    np.testing.assert_array_equal(index.ids(), np.arange(1, planted_data.num_items + 1))
    np.testing.assert_array_equal(index.vectors([1, 5]), table[[1, 5]])
    store = ItemStore.load(out)
    first = store.get([1])[0]
    assert first.key == planted_data.item_ids[1] and "raw_id" not in first.attributes  # the catalogue id
    assert store.rows_of([planted_data.item_ids[7]]) == [7]
    assert first.title == f"Item number {planted_data.item_ids[1][1:]}"
    assert first.attributes["genres"] in ("Drama", "Comedy")


def test_refusals(tmp_path, planted_folder, planted_data, capsys):
    cache = str(tmp_path / "cache")
    wrong_rows = tmp_path / "wrong" / "items.safetensors"
    write_table(wrong_rows, planted_data.num_items + 3)
    assert main(["--item-vectors", str(wrong_rows), "--dataset", str(planted_folder), "--out",
                 str(tmp_path / "a"), "--cache-dir", cache, "--quiet"]) == 2
    assert "another dataset" in capsys.readouterr().err
    ids = list(planted_data.item_ids)
    ids[3], ids[4] = ids[4], ids[3]
    write_table(tmp_path / "swapped" / "items.safetensors", planted_data.num_items + 1, item_ids=ids)
    assert main(["--item-vectors", str(tmp_path / "swapped"), "--dataset", str(planted_folder), "--out",
                 str(tmp_path / "b"), "--cache-dir", cache, "--quiet"]) == 2
    assert "row 3" in capsys.readouterr().err
    export_dir = tmp_path / "exp"
    write_table(export_dir / "item_vectors.safetensors", planted_data.num_items + 1)
    (export_dir / "export.json").write_text(json.dumps({"score": "inner_product"}))
    assert main(["--item-vectors", str(export_dir), "--dataset", str(planted_folder), "--out", str(tmp_path / "c"),
                 "--metric", "l2", "--cache-dir", cache, "--quiet"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["--item-vectors", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert not any((tmp_path / n).exists() for n in "abcd")
    foreign = tmp_path / "documents"  # a folder export.index did not write is not replaced without --force
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = ["--item-vectors", str(export_dir), "--dataset", str(planted_folder), "--out", str(foreign),
            "--cache-dir", cache, "--quiet"]
    assert main(args) == 2
    assert "not replacing it" in capsys.readouterr().err and (foreign / "notes.txt").is_file()
    assert main([*args, "--force"]) == 0 and (foreign / "manifest.json").is_file()
    assert main(args) == 0  # now it holds a snapshot: replaced as any snapshot is


@pytest.mark.slow
def test_movielens_100k_titles_and_hnsw(tmp_path):
    cache = tmp_path / "cache"
    data = load_dataset("ml-100k", DataConfig(), cache_dir=cache)
    table = write_table(tmp_path / "items.safetensors", data.num_items + 1, dim=16, item_ids=data.item_ids, seed=3)
    assert main(["--item-vectors", str(tmp_path / "items.safetensors"), "--out", str(tmp_path / "index"),
                 "--factory", "HNSW16", "--ef-search", "200", "--cache-dir", str(cache), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["count"] == data.num_items == 1349 and manifest["dataset"] == "ml-100k"
    store = ItemStore.load(tmp_path / "index")
    by_raw = {item.key: item for item in store.get(np.arange(1, data.num_items + 1))}
    assert by_raw["242"].title == "Kolya" and by_raw["242"].attributes["genres"] == "Comedy"
    assert by_raw["1"].title.startswith("Toy Story") and "Animation" in by_raw["1"].attributes["genres"]
    assert by_raw["1"].attributes["release year"] == "1995"
    index = ItemIndex.load(tmp_path / "index", expect={"dim": 16, "dataset": "ml-100k"})
    assert index.ef_search == 200  # the search setting travels with the snapshot
    toy = next(i for i, item in enumerate(store.get(np.arange(1, 1350)), 1) if item.key == "1")
    got, _ = index.search(table[[toy]] * 10, 3)
    assert got[0, 0] == toy
