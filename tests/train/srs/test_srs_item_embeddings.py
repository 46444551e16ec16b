"""Loading frozen item embeddings: alignment by id and clear refusals."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from train.srs.items import load_item_embeddings

ITEM_IDS = ["[PAD]", "a", "b", "c"]


def write(tmp_path, matrix, ids=None, name="emb.safetensors", key="embeddings"):
    path = tmp_path / name
    meta = {"item_ids": json.dumps(ids)} if ids is not None else None
    save_file({key: matrix}, str(path), metadata=meta)
    return path


def test_rows_are_reordered_by_item_id(tmp_path):
    m = np.arange(8, dtype=np.float32).reshape(4, 2)
    path = write(tmp_path, m, ["[PAD]", "c", "a", "b"])
    table, info = load_item_embeddings(path, ITEM_IDS)
    assert table.tolist() == [[0, 0], [4, 5], [6, 7], [2, 3]]
    assert info["dim"] == 2 and len(info["sha256"]) == 64


def test_npy_and_safetensors_without_ids_are_taken_in_order(tmp_path):
    m = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", m)
    a, _ = load_item_embeddings(tmp_path / "e.npy", ITEM_IDS)
    b, _ = load_item_embeddings(write(tmp_path, m, key="whatever"), ITEM_IDS)
    assert torch.equal(a, torch.from_numpy(m)) and torch.equal(b, a)


def test_unknown_item_ids_are_refused(tmp_path):
    path = write(tmp_path, np.zeros((4, 2), np.float32), ["[PAD]", "a", "b", "zzz"])
    with pytest.raises(ValueError, match=r"unknown to the dataset.*zzz"):
        load_item_embeddings(path, ITEM_IDS)


def test_missing_items_are_refused(tmp_path):
    path = write(tmp_path, np.zeros((3, 2), np.float32), ["[PAD]", "a", "b"])
    with pytest.raises(ValueError, match=r"no embedding for 1 dataset items.*'c'"):
        load_item_embeddings(path, ITEM_IDS)


def test_row_count_mismatch_is_refused(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"3 embedding rows, but the dataset needs 4"):
        load_item_embeddings(tmp_path / "e.npy", ITEM_IDS)


def test_pickled_or_malformed_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a plain numeric"):
        load_item_embeddings(tmp_path / "obj.npy", ITEM_IDS)
    np.save(tmp_path / "v.npy", np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="2-D float matrix"):
        load_item_embeddings(tmp_path / "v.npy", ITEM_IDS)
    nan = np.zeros((4, 2), np.float32)
    nan[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match="NaN"):
        load_item_embeddings(tmp_path / "nan.npy", ITEM_IDS)
    (tmp_path / "e.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=".safetensors or .npy"):
        load_item_embeddings(tmp_path / "e.pt", ITEM_IDS)
    with pytest.raises(FileNotFoundError):
        load_item_embeddings(tmp_path / "absent.npy", ITEM_IDS)
