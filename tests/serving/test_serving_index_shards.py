"""ItemIndex with shards > 1: the same answers as one shard, updates routed by id % shards, snapshots, refusals,
and the multi-GPU path run against a CPU stand-in for the GPU copy."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from serving.index import Item, ItemIndex, ItemStore, SnapshotError
from serving.index.catalog import DurableCatalog

DIM = 16


def make_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def shard_sizes(index: ItemIndex) -> list[int]:
    return index.describe()["shard_entries"]


def routed(ids: np.ndarray, shards: int) -> list[int]:
    return np.bincount(np.asarray(ids) % shards, minlength=shards).tolist()


def test_hand_checked_example():
    """Six 2-d items over 3 shards: shard s holds ids with id % 3 == s; the merge picks the best across shards."""
    ids = np.array([1, 2, 3, 4, 5, 6])
    vectors = np.array([[1, 0], [0, 1], [2, 0], [0, 2], [3, 0], [-1, -1]], dtype=np.float32)
    index = ItemIndex(2, shards=3, use_gpu=False)
    index.upsert(ids, vectors)
    assert shard_sizes(index) == [2, 2, 2]  # {3, 6}, {1, 4}, {2, 5}
    got_ids, got_scores = index.search(np.array([[1, 0], [0, 1]], dtype=np.float32), 3)
    # query (1, 0): inner products 1, 0, 2, 0, 3, -1 -> 5 (3.0, shard 2), 3 (2.0, shard 0), 1 (1.0, shard 1)
    np.testing.assert_array_equal(got_ids[0], [5, 3, 1])
    np.testing.assert_array_equal(got_scores[0], [3.0, 2.0, 1.0])
    # query (0, 1): 4 (2.0, shard 1), 2 (1.0, shard 2), then a 0.0 tie between 1, 3 and 5
    np.testing.assert_array_equal(got_ids[1, :2], [4, 2])
    assert got_ids[1, 2] in (1, 3, 5) and got_scores[1, 2] == 0.0


@pytest.mark.parametrize("metric", ["inner_product", "l2"])
@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_flat_equals_unsharded_flat(metric, shards):
    ids = np.arange(5, 405, dtype=np.int64) * 3 + 1  # not dense, not multiples of the shard count
    vectors = make_vectors(400, seed=1)
    one = ItemIndex(DIM, metric=metric, use_gpu=False)
    many = ItemIndex(DIM, metric=metric, use_gpu=False, shards=shards)
    one.upsert(ids, vectors)
    many.upsert(ids, vectors)
    assert shard_sizes(many) == routed(ids, shards) and shard_sizes(one) == [400]
    queries = make_vectors(25, seed=2)
    want_ids, want_scores = one.search(queries, 20)
    got_ids, got_scores = many.search(queries, 20)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)  # the same float32 sums: bit-identical
    # exclusion and a k larger than the catalogue behave the same too
    exclude = [want_ids[b, :3] for b in range(len(queries))]
    np.testing.assert_array_equal(many.search(queries, 5, exclude=exclude)[0], one.search(queries, 5, exclude)[0])
    big_ids, big_scores = many.search(queries[:2], 500)
    np.testing.assert_array_equal(big_ids, one.search(queries[:2], 500)[0])
    assert (big_ids[:, 400:] == -1).all() and np.isneginf(big_scores[:, 400:]).all()


def test_more_shards_than_items():
    index = ItemIndex(DIM, shards=16, use_gpu=False)
    index.upsert(np.array([3, 4]), make_vectors(2, seed=3))
    assert sum(shard_sizes(index)) == 2 and shard_sizes(index)[3] == 1 and shard_sizes(index)[4] == 1
    got, _ = index.search(make_vectors(1, seed=3)[:1] * 10, 4)
    assert got[0, 0] == 3 and sorted(got[0, :2].tolist()) == [3, 4] and (got[0, 2:] == -1).all()


def test_updates_are_routed_to_the_id_shard():
    shards = 4
    index = ItemIndex(DIM, shards=shards, use_gpu=False)
    ids = np.arange(1, 201)
    vectors = make_vectors(200, seed=4)
    index.upsert(ids, vectors)
    assert shard_sizes(index) == [50, 50, 50, 50]
    assert index.delete([4, 8, 12, 5]) == 4  # three from shard 0, one from shard 1
    assert shard_sizes(index) == [47, 49, 50, 50] and len(index) == 196
    replacement = make_vectors(1, seed=5) * 20
    index.upsert([6], replacement)  # replaced in place: still one entry, in shard 2
    index.upsert([1001], -replacement)  # new id: shard 1001 % 4 == 1
    assert shard_sizes(index) == [47, 50, 50, 50] and len(index) == 197
    np.testing.assert_array_equal(index.vectors([6]), replacement)
    got, scores = index.search(replacement, 3)
    assert got[0, 0] == 6 and scores[0, 0] == pytest.approx(float(replacement[0] @ replacement[0]), rel=1e-5)
    got, _ = index.search(-replacement, 1)
    assert got[0, 0] == 1001
    # deleted ids never come back, whichever shard held them
    everything, _ = index.search(make_vectors(10, seed=6), 197)
    assert not np.isin(everything, [4, 8, 12, 5]).any() and (everything > 0).all()
    np.testing.assert_array_equal(np.sort(everything[0]), index.ids())
    # compaction rebuilds every shard with the same routing
    index.compact()
    assert shard_sizes(index) == routed(index.ids(), shards) and index.describe()["slots"] == 197


def test_sharded_ivf_probes_what_unsharded_ivf_probes():
    """IVF shards share one training (the first shard's, cloned), so nprobe selects the same lists: same answer."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    vectors = (centres[rng.integers(20, size=1500)] + 0.3 * rng.standard_normal((1500, DIM))).astype(np.float32)
    ids = np.arange(1, 1501)
    one = ItemIndex(DIM, factory="IVF16,Flat", use_gpu=False)
    many = ItemIndex(DIM, factory="IVF16,Flat", use_gpu=False, shards=3)
    assert not many.is_trained
    one.upsert(ids, vectors)
    many.upsert(ids, vectors)
    assert many.is_trained and shard_sizes(many) == routed(ids, 3)
    for index in (one, many):
        index.set_search_params(nprobe=2)
    queries = vectors[:40] + 0.1 * rng.standard_normal((40, DIM)).astype(np.float32)
    want_ids, want_scores = one.search(queries, 10)
    got_ids, got_scores = many.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


def test_sharded_hnsw_tombstones_and_rebuild():
    index = ItemIndex(DIM, factory="HNSW8", use_gpu=False, shards=3)
    vectors = make_vectors(3000, seed=11)
    index.upsert(np.arange(1, 3001), vectors)
    index.delete(np.arange(1, 1401))
    assert index.describe()["tombstones"] == 1400 and sum(shard_sizes(index)) == 3000  # HNSW cannot remove
    got, _ = index.search(vectors[:5] * 10, 5)
    assert (got >= 1401).all()
    index.delete(np.arange(1401, 1701))  # dead 1,700 > live 1,300: rebuilt, routing kept
    assert index.describe()["tombstones"] == 0 and shard_sizes(index) == routed(np.arange(1701, 3001), 3)
    got, _ = index.search(vectors[2500:2501] * 10, 5)
    assert got[0, 0] == 2501 and (got >= 1701).all()


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW8"])
def test_sharded_snapshot_round_trip(tmp_path, factory):
    index = ItemIndex(DIM, factory=factory, use_gpu=False, shards=3)
    index.upsert(np.arange(1, 401), make_vectors(400, seed=3))
    index.delete(np.array([5, 6]))
    index.upsert(np.array([7, 1000]), make_vectors(2, seed=4))
    index.set_search_params(nprobe=4, ef_search=32)
    manifest = index.save(tmp_path / "snap", extra={"dataset": "toy"})
    assert manifest["shards"] == 3 and manifest["count"] == 399
    assert set(manifest["files"]) == {"index.shard-000.faiss", "index.shard-001.faiss", "index.shard-002.faiss",
                                      "slots.npy", "vectors.npy"}
    loaded = ItemIndex.load(tmp_path / "snap", expect={"dim": DIM, "shards": 3})
    assert (loaded.shards, loaded.factory, loaded.nprobe, len(loaded)) == (3, factory, 4, 399)
    assert shard_sizes(loaded) == shard_sizes(index)
    queries = make_vectors(5, seed=9)
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    loaded.upsert(np.array([5]), make_vectors(1, seed=5))  # a loaded sharded index keeps working
    assert 5 in loaded and len(loaded) == 400
    loaded.save(tmp_path / "snap")
    assert len(ItemIndex.load(tmp_path / "snap")) == 400


def test_unsharded_snapshots_keep_their_layout(tmp_path):
    index = ItemIndex(DIM, use_gpu=False)
    index.upsert(np.arange(1, 11), make_vectors(10))
    manifest = index.save(tmp_path / "snap")
    assert manifest["shards"] == 1 and set(manifest["files"]) == {"index.faiss", "slots.npy", "vectors.npy"}
    # a snapshot written before sharding existed (no "shards" field) loads as one shard
    path = tmp_path / "snap" / "manifest.json"
    old = json.loads(path.read_text())
    del old["shards"]
    path.write_text(json.dumps(old))
    assert ItemIndex.load(tmp_path / "snap").shards == 1


@pytest.mark.parametrize("bad", [0, -2, 1025, 1.5, "2", True, None])
def test_bad_shard_count_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match=r"shards must be an integer from 1 to 1024, got"):
        ItemIndex(DIM, shards=bad)


def test_snapshot_with_a_wrong_shard_count_is_refused(tmp_path):
    index = ItemIndex(DIM, use_gpu=False, shards=3)
    index.upsert(np.arange(1, 31), make_vectors(30))
    index.save(tmp_path / "snap")
    path = tmp_path / "snap" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "shards": 0}))
    with pytest.raises(SnapshotError, match=r"manifest shards must be an integer from 1 to 1024, got 0"):
        ItemIndex.load(tmp_path / "snap")
    path.write_text(json.dumps({**manifest, "shards": 2}))  # files of 3 shards read as 2: routing differs
    with pytest.raises(SnapshotError, match=r"inconsistent: the FAISS files hold \[10, 10\] entries, the live ids "
                                            r"route \[15, 15\] to them \(id % 2\)"):
        ItemIndex.load(tmp_path / "snap")
    path.write_text(json.dumps({**manifest, "shards": 4}))
    with pytest.raises(SnapshotError, match=r"index.shard-003.faiss is not listed in the manifest"):
        ItemIndex.load(tmp_path / "snap")


def test_write_ahead_log_compacts_a_sharded_index(tmp_path):
    index = ItemIndex(DIM, use_gpu=False, shards=2)
    index.upsert(np.arange(1, 21), make_vectors(20))
    index.save(tmp_path / "index", extra={"source": "test"}, store=ItemStore([Item(i, f"item {i}")
                                                                              for i in range(1, 21)]))
    live = DurableCatalog.open(tmp_path / "index", tmp_path / "state", compact_every=1000)
    vectors = make_vectors(3, seed=8)
    items = [Item(i, f"new {i}") for i in (21, 22, 23)]
    live.log_upsert([21, 22, 23], vectors, items)
    live.store.upsert(items)
    live.index.upsert([21, 22, 23], vectors)
    live.log_delete([2])
    live.index.delete([2])
    live.store.delete([2])
    live.close(compact=True)
    recovered = DurableCatalog.open(tmp_path / "index", tmp_path / "state")
    assert recovered.index.shards == 2 and len(recovered.index) == 22
    assert shard_sizes(recovered.index) == routed(recovered.index.ids(), 2)
    np.testing.assert_array_equal(recovered.index.vectors([22]), vectors[[1]])
    recovered.close(compact=False)


class _FakeGpuResources:
    """Stands in for faiss.StandardGpuResources on a CPU-only FAISS build."""


def test_multi_gpu_path_with_a_cpu_stand_in(monkeypatch):
    """The shard-per-GPU code path, with index_cpu_to_gpu replaced by a CPU clone that records the device.

    Only the wiring is checked here (which shard goes to which device, refresh after writes, merged answers);
    real GPUs are not available on this machine."""
    devices: list[int] = []

    def to_gpu(resources, device, index):
        assert isinstance(resources, _FakeGpuResources)
        devices.append(device)
        return faiss.clone_index(index)

    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeGpuResources, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", faiss.ParameterSpace, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    ids = np.arange(1, 301)
    vectors = make_vectors(300, seed=12)
    cpu = ItemIndex(DIM, use_gpu=False)
    cpu.upsert(ids, vectors)
    gpu = ItemIndex(DIM, use_gpu=True, shards=4)
    assert gpu.on_gpu and len(gpu._gpu_resources) == 2
    gpu.upsert(ids, vectors)
    queries = make_vectors(8, seed=13)
    np.testing.assert_array_equal(gpu.search(queries, 10)[0], cpu.search(queries, 10)[0])
    assert devices == [0, 1, 0, 1]  # shard s on GPU s % 2
    gpu.search(queries, 10)
    assert len(devices) == 4  # the copy is reused until a write
    gpu.upsert([301], queries[:1] * 50)
    got, _ = gpu.search(queries[:1], 1)
    assert got[0, 0] == 301 and len(devices) == 8  # refreshed after the write


def test_export_index_shards_option(tmp_path, planted_folder, planted_data, capsys):
    from safetensors.numpy import save_file

    from export.index import main

    table = make_vectors(planted_data.num_items + 1, seed=14, dim=8)
    save_file({"embeddings": table}, str(tmp_path / "items.safetensors"))
    args = ["--item-vectors", str(tmp_path / "items.safetensors"), "--dataset", str(planted_folder),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "index"), "--shards", "3"]) == 0
    loaded = ItemIndex.load(tmp_path / "index", expect={"shards": 3})
    assert shard_sizes(loaded) == routed(np.arange(1, planted_data.num_items + 1), 3)
    np.testing.assert_array_equal(loaded.vectors([1, 2]), table[[1, 2]])
    assert main([*args, "--out", str(tmp_path / "bad"), "--shards", "0"]) == 2
    assert "--shards must be an integer from 1 to 1024, got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("factory", ["Flat", "HNSW8"])
def test_concurrent_searches_and_routed_updates(factory):
    """Readers search the threaded IndexShards while writers upsert and delete across shards."""
    import threading

    n = 1200
    index = ItemIndex(DIM, factory=factory, use_gpu=False, shards=4)
    index.upsert(np.arange(1, n + 1), make_vectors(n, seed=21))
    deleted: set[int] = set()
    lock, stop, errors = threading.Lock(), threading.Event(), []
    queries = make_vectors(8, seed=22)

    def guarded(fn):
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return run

    def reader() -> None:
        while not stop.is_set():
            with lock:
                before = set(deleted)
            got, scores = index.search(queries, 15)
            assert (got > 0).all() and np.isfinite(scores).all()
            assert not before & set(got.ravel().tolist())

    def deleter() -> None:
        for start in range(601, 901, 15):
            batch = np.arange(start, start + 15)
            assert index.delete(batch) == 15
            with lock:
                deleted.update(batch.tolist())

    def upserter() -> None:
        rng = np.random.default_rng(0)
        for _ in range(30):
            ids = rng.choice(np.arange(1, 601), size=12, replace=False)
            index.upsert(ids, rng.standard_normal((12, DIM)).astype(np.float32))

    readers = [threading.Thread(target=guarded(reader)) for _ in range(3)]
    writers = [threading.Thread(target=guarded(deleter)), threading.Thread(target=guarded(upserter))]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert len(index) == n - 300
    got, _ = index.search(queries, len(index))
    assert not np.isin(got, list(deleted)).any()
    np.testing.assert_array_equal(np.sort(got[0]), index.ids())
