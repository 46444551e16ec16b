"""ItemIndex: exact search against numpy, exclusion, updates, ANN sanity, snapshots, concurrency."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from serving.index import IndexMismatch, ItemIndex, SnapshotError

DIM = 16


def make_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def brute_force(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int, metric: str = "inner_product"):
    if metric == "inner_product":
        scores = queries @ vectors.T
    else:
        scores = -((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(scores, order, axis=1)


@pytest.fixture
def flat() -> tuple[ItemIndex, np.ndarray, np.ndarray]:
    ids = np.arange(1, 301, dtype=np.int64)
    vectors = make_vectors(300)
    index = ItemIndex(DIM)
    index.upsert(ids, vectors)
    return index, ids, vectors


@pytest.mark.parametrize("metric", ["inner_product", "l2"])
def test_flat_search_equals_numpy_top_k(metric):
    ids = np.arange(5, 205, dtype=np.int64) * 3  # ids need not be dense
    vectors = make_vectors(200, seed=1)
    index = ItemIndex(DIM, metric=metric, factory="Flat", use_gpu=False)
    index.upsert(ids, vectors)
    queries = make_vectors(7, seed=2)
    got_ids, got_scores = index.search(queries, 10)
    want_ids, want_scores = brute_force(queries, ids, vectors, 10, metric)
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32 and got_ids.shape == (7, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
    assert (np.diff(got_scores, axis=1) <= 1e-6).all(), "best first"


def test_api_basics(flat):
    index, ids, vectors = flat
    assert len(index) == 300 and 1 in index and 300 in index and 0 not in index and 301 not in index
    assert "x" not in index
    assert (index.dim, index.metric, index.factory) == (DIM, "inner_product", "Flat")
    np.testing.assert_array_equal(index.ids(), ids)
    np.testing.assert_array_equal(index.vectors(np.array([3, 1])), vectors[[2, 0]])
    with pytest.raises(KeyError, match="999"):
        index.vectors(np.array([1, 999]))


def test_exclude_is_exact_for_flat(flat):
    index, ids, vectors = flat
    queries = make_vectors(3, seed=5)
    full, _ = brute_force(queries, ids, vectors, 300)
    exclude = [full[0, :4], np.array([], dtype=np.int64), full[2, ::2][:20]]
    got, _ = index.search(queries, 5, exclude=exclude)
    for b in range(3):
        want = [i for i in full[b] if i not in set(exclude[b].tolist())][:5]
        np.testing.assert_array_equal(got[b], want)
    with pytest.raises(ValueError, match="2 entries for 3 queries"):
        index.search(queries, 5, exclude=exclude[:2])


def test_rows_are_padded_when_fewer_items_remain():
    index = ItemIndex(DIM)
    ids, scores = index.search(make_vectors(2), 4)
    assert (ids == -1).all() and np.isneginf(scores).all()
    index.upsert(np.array([7, 8, 9]), make_vectors(3))
    ids, scores = index.search(make_vectors(2, seed=3), 5, exclude=[np.array([8]), None])
    assert sorted(ids[0, :2].tolist()) == [7, 9] and (ids[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()
    assert sorted(ids[1, :3].tolist()) == [7, 8, 9] and (ids[1, 3:] == -1).all()


def test_upsert_replaces_and_refuses_bad_input(flat):
    index, ids, vectors = flat
    target = vectors[41] * 10.0  # item 42's vector, scaled: the top hit for itself
    new = -target
    index.upsert(np.array([42]), new[None])
    assert len(index) == 300
    np.testing.assert_array_equal(index.vectors([42])[0], new)
    got, _ = index.search(target[None], 300)
    assert got[0, -1] == 42, "the replaced vector is the one searched (worst match now)"
    assert list(got[0]).count(42) == 1
    with pytest.raises(ValueError, match="duplicate item ids in one upsert: 5, 6"):
        index.upsert(np.array([5, 6, 5, 6, 7]), make_vectors(5))
    with pytest.raises(ValueError, match="> 0"):
        index.upsert(np.array([0]), make_vectors(1))
    with pytest.raises(ValueError, match="shape"):
        index.upsert(np.array([1]), make_vectors(1, dim=DIM + 1))
    with pytest.raises(ValueError, match="NaN"):
        index.upsert(np.array([1]), np.full((1, DIM), np.nan, dtype=np.float32))
    np.testing.assert_array_equal(index.vectors([5]), vectors[[4]])  # refused calls changed nothing


def test_delete(flat):
    index, ids, vectors = flat
    query = vectors[9:10] * 10.0  # item 10 is its own best match
    assert index.search(query, 1)[0][0, 0] == 10
    assert index.delete(np.array([10, 11, 10, 12345])) == 2
    assert len(index) == 298 and 10 not in index and 11 not in index
    got, _ = index.search(query, 298)
    assert 10 not in got and 11 not in got and (got >= 0).all()
    keep = ~np.isin(ids, [10, 11])
    np.testing.assert_array_equal(index.search(query, 10)[0], brute_force(query, ids[keep], vectors[keep], 10)[0])
    assert index.delete(np.array([10])) == 0


@pytest.mark.parametrize("factory", ["IVF16,Flat", "HNSW16"])
def test_ann_recall_and_updates(factory):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    vectors = (centres[rng.integers(20, size=2000)] + 0.3 * rng.standard_normal((2000, DIM))).astype(np.float32)
    ids = np.arange(1, 2001, dtype=np.int64)
    index = ItemIndex(DIM, factory=factory, use_gpu=False)
    assert factory != "IVF16,Flat" or not index.is_trained
    index.upsert(ids, vectors)
    assert index.is_trained
    queries = vectors[:50] + 0.1 * rng.standard_normal((50, DIM)).astype(np.float32)
    truth, _ = brute_force(queries, ids, vectors, 10)
    got, _ = index.search(queries, 10)
    recall = np.mean([len(np.intersect1d(g, t)) / 10 for g, t in zip(got, truth, strict=True)])
    assert recall > 0.9, recall
    # deletes (HNSW: tombstones) and replacements are never returned
    gone = np.unique(truth[:, 0])
    assert index.delete(gone) == len(gone)
    moved = np.setdiff1d(truth[:, 1], gone)[:5]
    index.upsert(moved, -vectors[moved - 1] * 5)  # replaced vectors
    got, scores = index.search(queries, 10)
    assert not np.isin(got, gone).any() and (got > 0).all()
    # every score is the inner product with the *current* vector of the returned id (replacements took effect)
    current = np.stack([index.vectors(row) for row in got])
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, current), rtol=1e-4, atol=1e-4)
    assert all(len(set(row.tolist())) == 10 for row in got)
    assert len(index) == 2000 - len(gone)


def test_hnsw_tombstones_trigger_rebuild():
    index = ItemIndex(DIM, factory="HNSW8", use_gpu=False)
    vectors = make_vectors(3000, seed=11)
    index.upsert(np.arange(1, 3001), vectors)
    index.delete(np.arange(1, 1401))
    assert index.describe()["tombstones"] == 1400
    index.delete(np.arange(1401, 1701))  # dead 1,700 > live 1,300: rebuilt
    assert index.describe()["tombstones"] == 0 and index.describe()["slots"] == 1300
    np.testing.assert_array_equal(index.ids(), np.arange(1701, 3001))
    np.testing.assert_array_equal(index.vectors([2000]), vectors[[1999]])
    got, _ = index.search(vectors[2500:2501] * 10, 5)
    assert got[0, 0] == 2501 and (got >= 1701).all()


def test_factory_and_training_errors():
    with pytest.raises(ValueError, match="without IDMap"):
        ItemIndex(DIM, factory="IDMap,Flat")
    with pytest.raises(ValueError, match="metric"):
        ItemIndex(DIM, metric="cosine")
    with pytest.raises(ValueError, match="factory 'NotAnIndex'"):
        ItemIndex(DIM, factory="NotAnIndex")
    index = ItemIndex(DIM, factory="IVF64,Flat")
    with pytest.raises(ValueError, match="needs training"):
        index.upsert(np.arange(1, 11), make_vectors(10))
    assert len(index) == 0


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW8"])
def test_snapshot_round_trip(tmp_path, factory):
    index = ItemIndex(DIM, factory=factory, use_gpu=False)
    vectors = make_vectors(400, seed=3)
    index.upsert(np.arange(1, 401), vectors)
    index.delete(np.array([5, 6]))
    index.upsert(np.array([7, 1000]), make_vectors(2, seed=4))
    index.set_search_params(nprobe=4, ef_search=32)
    manifest = index.save(tmp_path / "snap", extra={"embedder_sha256": "abc", "dataset": "toy"})
    assert manifest["format"] == "llmrec.index/1" and manifest["count"] == 399 and manifest["dim"] == DIM
    assert set(manifest["files"]) == {"index.faiss", "slots.npy", "vectors.npy"}
    on_disk = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert on_disk == manifest and on_disk["embedder_sha256"] == "abc"
    loaded = ItemIndex.load(tmp_path / "snap", expect={"dim": DIM, "metric": "inner_product", "embedder_sha256": "abc"})
    assert (loaded.factory, loaded.nprobe, loaded.ef_search, len(loaded)) == (factory, 4, 32, 399)
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    np.testing.assert_array_equal(loaded.vectors([7, 1000, 400]), index.vectors([7, 1000, 400]))
    queries = make_vectors(5, seed=9)
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], index.search(queries, 10)[0])
    loaded.upsert(np.array([5]), vectors[[4]])  # a loaded index keeps working
    assert 5 in loaded and len(loaded) == 400
    # saving again replaces the folder as a whole and leaves no temporary siblings
    loaded.save(tmp_path / "snap")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]
    assert len(ItemIndex.load(tmp_path / "snap")) == 400


def test_snapshot_refusals(tmp_path, flat):
    index, _, _ = flat
    snap = tmp_path / "snap"
    index.save(snap, extra={"embedder_sha256": "abc"})
    with pytest.raises(IndexMismatch, match=r"dim expected 64, found 16"):
        ItemIndex.load(snap, expect={"dim": 64})
    with pytest.raises(IndexMismatch, match=r"embedder_sha256 expected 'def', found 'abc'"):
        ItemIndex.load(snap, expect={"metric": "inner_product", "embedder_sha256": "def"})
    with pytest.raises(IndexMismatch, match=r"user_encoder_sha256 expected 'x', the snapshot records none"):
        ItemIndex.load(snap, expect={"user_encoder_sha256": "x"})
    with pytest.raises(ValueError, match="reserved"):
        index.save(tmp_path / "other", extra={"dim": 3})
    data = bytearray((snap / "vectors.npy").read_bytes())
    data[-1] ^= 0xFF
    (snap / "vectors.npy").write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"corrupt or incomplete: vectors.npy has sha256"):
        ItemIndex.load(snap)
    (snap / "index.faiss").unlink()
    with pytest.raises(SnapshotError, match="index.faiss is missing"):
        ItemIndex.load(snap)
    with pytest.raises(SnapshotError, match="manifest.json not found"):
        ItemIndex.load(tmp_path / "nothing")
    assert issubclass(SnapshotError, IndexMismatch)


def test_concurrent_search_and_updates_never_return_deleted_ids():
    """Readers search while writers upsert and delete; after delete() returns, the id never comes back."""
    n = 2000
    vectors = make_vectors(n, seed=21)
    index = ItemIndex(DIM)
    index.upsert(np.arange(1, n + 1), vectors)
    deleted: set[int] = set()  # ids whose delete() has returned (never re-added)
    deleted_lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    queries = make_vectors(8, seed=22)

    def reader() -> None:
        try:
            while not stop.is_set():
                with deleted_lock:
                    before = set(deleted)
                got, scores = index.search(queries, 20, exclude=[np.array([1, 2])] * 8)
                assert got.shape == (8, 20) and (got > 0).all() and np.isfinite(scores).all()
                leaked = before & set(got.ravel().tolist())
                assert not leaked, f"deleted ids returned: {sorted(leaked)[:5]}"
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            stop.set()

    def deleter() -> None:
        try:
            for start in range(1001, 1601, 20):
                batch = np.arange(start, start + 20)
                assert index.delete(batch) == 20
                with deleted_lock:
                    deleted.update(batch.tolist())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    def upserter() -> None:
        try:
            rng = np.random.default_rng(0)
            for _ in range(40):
                ids = rng.choice(np.arange(1, 1001), size=16, replace=False)
                index.upsert(ids, rng.standard_normal((16, DIM)).astype(np.float32))
            index.upsert(np.arange(5001, 5101), make_vectors(100, seed=23))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    readers = [threading.Thread(target=reader) for _ in range(4)]
    writers = [threading.Thread(target=deleter), threading.Thread(target=upserter)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=30)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert not errors, errors[0]
    assert len(index) == n - 600 + 100
    got, _ = index.search(queries, len(index))
    assert not np.isin(got, list(deleted)).any()


def test_serving_index_imports_neither_torch_nor_train():
    import subprocess
    import sys

    code = "import sys, serving.index; bad = [m for m in ('torch', 'train') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
