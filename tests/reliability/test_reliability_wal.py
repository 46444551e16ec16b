"""The write-ahead log and recovery (serving/index/catalog.py) on a small index, no server: replay after a crash,
compaction keeping two snapshots, a torn last record, mid-log corruption, a corrupt snapshot, a foreign state,
one owner per state folder, a failing disk."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from serving.index import Item, ItemIndex, ItemStore
from serving.index.catalog import FRAME, Catalog, DurableCatalog, WalError, encode_payload, frame

DIM = 8


def write(catalog: DurableCatalog, op: str, ids: list[int], rng: np.random.Generator) -> list[str]:
    """Through the gateway's write path (serving/index/catalog.py): log (fsync), then apply. `ids` name items by
    catalogue id (the base's items are "1".."20")."""
    live = Catalog(catalog.index, catalog.store, catalog)
    keys = [str(i) for i in ids]
    if op == "upsert":
        vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
        return live.upsert(keys, vectors, [(f"new {i}", {"k": f"v{i}"}) for i in ids])
    live.delete(keys)
    return keys


def state(catalog: DurableCatalog) -> tuple[list[int], np.ndarray, list[str], list[str]]:
    ids = catalog.index.ids()
    items = catalog.store.get(ids)
    return ids.tolist(), catalog.index.vectors(ids), [item.title for item in items], [item.key for item in items]


def same(a: DurableCatalog, b: DurableCatalog) -> None:
    ids_a, vec_a, titles_a, keys_a = state(a)
    ids_b, vec_b, titles_b, keys_b = state(b)
    assert ids_a == ids_b and titles_a == titles_b and keys_a == keys_b
    np.testing.assert_array_equal(vec_a, vec_b)


def workload(catalog: DurableCatalog, rng: np.random.Generator, count: int, compact: bool = True) -> None:
    for n in range(count):
        if n % 4 == 3:
            write(catalog, "delete", [int(rng.integers(1, 100 + n))], rng)
        else:
            write(catalog, "upsert", [100 + 2 * n, 101 + 2 * n], rng)
        if compact and catalog.needs_compaction():
            catalog.compact()


def crash(catalog: DurableCatalog) -> None:
    """Drop the catalogue without compaction (what a kill -9 leaves: the fsynced log and the snapshots; the
    kernel closes the dead process's files, and so releases the state folder's lock)."""
    catalog.wal.close()
    catalog._lock.close()


def test_replay_after_crash_restores_every_write(base, tmp_path):
    rng = np.random.default_rng(1)
    live = DurableCatalog.open(base, tmp_path / "state", compact_every=1000)
    workload(live, rng, 30)
    crash(live)
    recovered = DurableCatalog.open(base, tmp_path / "state")
    same(live, recovered)
    assert recovered.report.replayed == 30 and recovered.report.snapshot == str(base)
    assert recovered.next_id == live.next_id > 20 + 40  # above every row ever written, even a deleted one
    # the base snapshot is never modified
    assert ItemIndex.load(base).ids().tolist() == list(range(1, 21))


def test_compaction_keeps_two_snapshots_and_drops_covered_log(base, tmp_path):
    rng = np.random.default_rng(2)
    live = DurableCatalog.open(base, tmp_path / "state", compact_every=5)
    workload(live, rng, 23)
    names = sorted(p.name for p in (tmp_path / "state").iterdir())
    snapshots = [n for n in names if n.startswith("snapshot-")]
    assert snapshots == ["snapshot-000000000015", "snapshot-000000000020"]
    # the log after the older kept snapshot stays (so falling back to it loses nothing), the rest is gone
    assert [n for n in names if n.startswith("wal-")] == ["wal-000000000016.log", "wal-000000000021.log"]
    crash(live)
    recovered = DurableCatalog.open(base, tmp_path / "state")
    same(live, recovered)
    assert recovered.report.snapshot_seq == 20 and recovered.report.replayed == 3
    recovered.close(compact=True)  # shutdown compacts
    final = DurableCatalog.open(base, tmp_path / "state")
    same(live, final)
    assert final.report.snapshot_seq == 23 and final.report.replayed == 0


def test_torn_last_record_is_ignored_with_a_warning(base, tmp_path, caplog):
    rng = np.random.default_rng(3)
    live = DurableCatalog.open(base, tmp_path / "state")
    workload(live, rng, 6, compact=False)
    crash(live)
    newest = live
    torn = frame(encode_payload({"seq": 7, "op": "delete", "ids": [1, 2, 3]}))
    for cut in (3, FRAME.size + 5, len(torn) - 1):  # inside the header, inside the payload, one byte short
        segment = newest.wal.path  # the segment being appended to when the crash came
        good_size = segment.stat().st_size
        with segment.open("ab") as handle:
            handle.write(torn[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmrec.serving.index"):
            recovered = DurableCatalog.open(base, tmp_path / "state")
        assert "torn last record" in caplog.text
        assert recovered.report.torn_bytes == cut and segment.stat().st_size == good_size
        same(live, recovered)  # the unacknowledged delete of 1, 2, 3 is not applied
        assert 1 in recovered.index
        crash(recovered)
        newest = recovered
    # a whole last record whose checksum fails (its bytes reached the disk only in part) is torn too
    whole = bytearray(torn)
    whole[-1] ^= 0xFF
    good_size = newest.wal.path.stat().st_size
    with newest.wal.path.open("ab") as handle:
        handle.write(bytes(whole))
    recovered = DurableCatalog.open(base, tmp_path / "state")
    assert recovered.report.torn_bytes == len(torn) and newest.wal.path.stat().st_size == good_size
    same(live, recovered)
    crash(recovered)
    newest = recovered
    # a zero-filled tail (a crash after the file grew, before the data reached the disk) is torn too
    with newest.wal.path.open("ab") as handle:
        handle.write(b"\0" * 64)
    recovered = DurableCatalog.open(base, tmp_path / "state")
    assert recovered.report.torn_bytes == 64
    # appending after the cut works and survives the next crash
    write(recovered, "upsert", [999], rng)
    crash(recovered)
    assert DurableCatalog.open(base, tmp_path / "state").store.rows_of(["999"])[0] is not None


def test_corruption_inside_the_log_refuses_to_start(base, tmp_path):
    rng = np.random.default_rng(4)
    live = DurableCatalog.open(base, tmp_path / "state")
    workload(live, rng, 6, compact=False)
    crash(live)
    data = bytearray(live.wal.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in an acknowledged record, valid records after it
    live.wal.path.write_bytes(bytes(data))
    with pytest.raises(WalError, match="corrupt at byte .* valid data follows"):
        DurableCatalog.open(base, tmp_path / "state")


def test_corrupt_snapshot_falls_back_to_the_previous_one(base, tmp_path, caplog):
    rng = np.random.default_rng(5)
    live = DurableCatalog.open(base, tmp_path / "state", compact_every=4)
    workload(live, rng, 10)
    crash(live)
    newest = tmp_path / "state" / "snapshot-000000000008"
    vectors = newest / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-3] ^= 0x01
    vectors.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="llmrec.serving.index"):
        recovered = DurableCatalog.open(base, tmp_path / "state")
    assert "snapshot refused" in caplog.text and "vectors.npy has sha256" in caplog.text
    assert recovered.report.snapshot.endswith("snapshot-000000000004") and recovered.report.replayed == 6
    assert any("snapshot-000000000008" in reason for reason in recovered.report.refused)
    same(live, recovered)
    # both snapshots corrupt, and the log no longer reaches back to the base: refused, with every reason
    crash(recovered)
    (tmp_path / "state" / "snapshot-000000000004" / "store.json").unlink(missing_ok=True)
    with pytest.raises(WalError, match="no usable snapshot") as info:
        DurableCatalog.open(base, tmp_path / "state")
    assert "store.json is missing" in str(info.value) and "no longer holds" in str(info.value)


def test_state_of_another_base_is_refused(base, tmp_path):
    rng = np.random.default_rng(6)
    live = DurableCatalog.open(base, tmp_path / "state")
    workload(live, rng, 2, compact=False)
    crash(live)
    other = tmp_path / "other"
    index = ItemIndex(DIM, use_gpu=False)
    index.upsert([1], rng.standard_normal((1, DIM)))
    index.save(other, store=ItemStore([Item(1, "x")]))
    with pytest.raises(WalError, match="another base snapshot"):
        DurableCatalog.open(other, tmp_path / "state")


def test_interrupted_compaction_leaves_a_usable_state(base, tmp_path):
    rng = np.random.default_rng(7)
    live = DurableCatalog.open(base, tmp_path / "state", compact_every=1000)
    workload(live, rng, 5, compact=False)
    # a crash after the new segment was started but before the snapshot was renamed into place
    live.wal.open_segment()
    leftover = tmp_path / "state" / ".snapshot-000000000005-new-x"
    leftover.mkdir()
    (leftover / "index.faiss").write_bytes(b"partial")
    crash(live)
    recovered = DurableCatalog.open(base, tmp_path / "state")
    same(live, recovered)
    assert not leftover.exists() and recovered.report.replayed == 5


def test_one_process_owns_a_state_folder(base, tmp_path):
    first = DurableCatalog.open(base, tmp_path / "state")
    with pytest.raises(WalError, match=rf"in use by another process \(pid {os.getpid()}\)"):
        DurableCatalog.open(base, tmp_path / "state")
    first.close()
    DurableCatalog.open(base, tmp_path / "state").close()  # free again once the owner closed it


def test_a_write_the_disk_refuses_is_not_applied(base, tmp_path, monkeypatch):
    """fsync failing (disk full, I/O error): the pipeline answers UNAVAILABLE and nothing changes, then or later."""
    from serving.gateway.errors import GatewayError
    from serving.gateway.pipeline import RecommendationPipeline

    catalog = DurableCatalog.open(base, tmp_path / "state")
    pipeline = RecommendationPipeline(None, Catalog(catalog.index, catalog.store, catalog), max_len=10)
    before = state(catalog)
    size = catalog.wal.path.stat().st_size
    real_fsync = os.fsync
    calls = []

    def fails_once(fd: int) -> None:  # the record's fsync fails; the undo's succeeds
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fails_once)
    with pytest.raises(GatewayError) as refused:
        pipeline.delete(["1", "2"])
    assert refused.value.code == "UNAVAILABLE" and "nothing was changed" in refused.value.message
    assert same_state(state(catalog), before)
    assert catalog.wal.path.stat().st_size == size  # the partial record was taken back
    pipeline.delete(["3"])  # the log still works after the failure
    crash(catalog)
    recovered = DurableCatalog.open(base, tmp_path / "state")
    assert 1 in recovered.index and 2 in recovered.index and 3 not in recovered.index


def same_state(a, b) -> bool:
    return a[0] == b[0] and a[2] == b[2] and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_replayed_log_rebuilds_exactly_the_live_state(base, tmp_path, seed):
    """Any interleaving of upserts (assigned ids, explicit ids, replacements of an existing id) and deletes (present,
    absent, re-deleted), with compactions between them: recovery from the log gives the same ids, vectors,
    titles, attributes, index entries and next id as the live catalogue it was written by."""
    rng = np.random.default_rng(seed)
    durable = DurableCatalog.open(base, tmp_path / "state", compact_every=int(rng.integers(3, 9)))
    live = Catalog(durable.index, durable.store, durable)
    for _ in range(60):
        kind = rng.choice(["assigned", "explicit", "replace", "delete"], p=[0.35, 0.15, 0.2, 0.3])
        known = [item.key for item in durable.store.get(durable.index.ids())]
        if kind == "delete":
            keys = [str(rng.choice(known)) if known and rng.random() < 0.8 else f"k{rng.integers(1, 400)}"
                    for _ in range(int(rng.integers(1, 4)))]
            live.delete(list(dict.fromkeys(keys)))
            continue
        n = int(rng.integers(1, 4))
        requested = {"assigned": [""] * n, "explicit": [f"k{i}" for i in rng.integers(1, 400, n)],
                     "replace": [str(rng.choice(known)) if known else "" for _ in range(n)]}[kind]
        requested = list(dict.fromkeys(requested)) if kind != "assigned" else requested
        keys = live.upsert(requested, rng.standard_normal((len(requested), DIM)).astype(np.float32),
                           [(f"title {rng.integers(1_000)}", {"year": str(rng.integers(1950, 2000))})
                            for _ in requested])
        assert [k for k, r in zip(keys, requested, strict=True) if r] == [r for r in requested if r]
        assert all(k.startswith("new-") for k, r in zip(keys, requested, strict=True) if not r)
        if live.needs_compaction() and rng.random() < 0.7:
            live.compact()
    live.delete([durable.store.get([durable.index.ids().max()])[0].key])  # the largest row gone: only the log
    # remembers it was used
    expected = state(durable), [item.attributes for item in durable.store.get(durable.index.ids())]
    entries, next_id = len(durable.index), live.next_id
    crash(durable)
    recovered = DurableCatalog.open(base, tmp_path / "state")
    same(durable, recovered)
    assert [item.attributes for item in recovered.store.get(recovered.index.ids())] == expected[1]
    assert len(recovered.index) == entries and sorted(recovered.store.ids().tolist()) == expected[0][0]
    assert Catalog(recovered.index, recovered.store, recovered).next_id == next_id  # no id is handed out twice
    recovered.close()
