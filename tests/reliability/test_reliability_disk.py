"""A full disk under the write-ahead log: an append that cannot be fsynced, a segment that cannot be created and a
compaction that cannot be written each leave the catalogue serving (writes refused with UNAVAILABLE and a message,
reads unaffected), compaction backs off instead of retrying on every write, and once space returns writes resume
with nothing acknowledged lost. Injected at the os-call level, and on a real 2 MB tmpfs where it can be mounted."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from serving.gateway.errors import GatewayError
from serving.gateway.pipeline import RecommendationPipeline
from serving.index import ItemIndex
from serving.index import catalog as catalog_module
from serving.index.catalog import Catalog, DurableCatalog, NotDurable

DIM = 8


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def upsert(catalog: Catalog, ids: list[int], rng: np.random.Generator) -> list[str]:
    return catalog.upsert([str(i) for i in ids], rng.standard_normal((len(ids), DIM)).astype(np.float32),
                          [(f"new {i}", {}) for i in ids])


def recovered_ids(base: Path, state: Path, durable: DurableCatalog) -> set[str]:
    """The catalogue ids a restart finds (after a kill -9: only what is on disk counts)."""
    durable.wal.close()
    durable._lock.close()
    again = DurableCatalog.open(base, state)
    try:
        return {item.key for item in again.store.get(again.index.ids())}
    finally:
        again.close(compact=False)


def test_a_segment_that_cannot_be_created_leaves_appends_in_the_current_one(base, tmp_path, monkeypatch):
    state = tmp_path / "state"
    durable = DurableCatalog.open(base, state, compact_every=2)
    catalog = Catalog(durable.index, durable.store, durable)
    rng = np.random.default_rng(1)
    acknowledged = upsert(catalog, [101, 102], rng)
    real_open = Path.open

    def open_refusing_segments(self, mode="r", *args, **kwargs):
        if catalog_module.SEGMENT_RE.match(self.name) and "w" in mode:
            handle = real_open(self, mode, *args, **kwargs)  # created, then the disk fills up
            handle.close()
            no_space()
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_refusing_segments)
    segments = sorted(p.name for p in state.glob("wal-*.log"))
    with pytest.raises(OSError, match="No space left"):
        catalog.compact()
    assert sorted(p.name for p in state.glob("wal-*.log")) == segments  # the half-made segment is gone
    acknowledged += upsert(catalog, [103], rng)  # appends go on in the segment that was current
    monkeypatch.setattr(Path, "open", real_open)
    assert recovered_ids(base, state, durable) >= set(acknowledged)


def test_a_failed_compaction_backs_off_and_resumes_when_space_returns(base, tmp_path, monkeypatch):
    state = tmp_path / "state"
    durable = DurableCatalog.open(base, state, compact_every=2)
    catalog = Catalog(durable.index, durable.store, durable)
    rng = np.random.default_rng(2)
    saves = []
    real_save = ItemIndex.save

    def full_disk_save(self, *args, **kwargs):
        saves.append(1)
        no_space()

    monkeypatch.setattr(ItemIndex, "save", full_disk_save)
    clock = [1000.0]
    monkeypatch.setattr(catalog_module.time, "monotonic", lambda: clock[0])
    acknowledged = upsert(catalog, [101, 102], rng) + upsert(catalog, [103], rng)
    assert catalog.needs_compaction()
    with pytest.raises(OSError):
        catalog.compact()
    attempts = 0
    for n in range(50):  # fifty more writes within the back-off: not one more snapshot attempt
        acknowledged += upsert(catalog, [200 + n], rng)
        if catalog.needs_compaction():
            attempts += 1
            catalog.compact()
    assert (len(saves), attempts) == (1, 0) and catalog.compact() is None
    clock[0] += catalog_module.COMPACT_BACKOFF_S  # the back-off is over: one more attempt, which fails again
    assert catalog.needs_compaction()
    with pytest.raises(OSError):
        catalog.compact()
    clock[0] += catalog_module.COMPACT_BACKOFF_S  # now it doubles
    assert not catalog.needs_compaction()
    clock[0] += catalog_module.COMPACT_BACKOFF_S
    assert catalog.needs_compaction() and len(saves) == 2
    monkeypatch.setattr(ItemIndex, "save", real_save)  # space is back
    assert catalog.compact() is not None and durable.failed_compactions == 0
    assert recovered_ids(base, state, durable) >= set(acknowledged)


def test_an_append_the_disk_refuses_is_unavailable_and_reads_go_on(base, tmp_path, monkeypatch):
    durable = DurableCatalog.open(base, tmp_path / "state")
    pipeline = RecommendationPipeline(None, Catalog(durable.index, durable.store, durable), max_len=10)
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(GatewayError) as refused:
        pipeline.delete(["1"])
    assert refused.value.code == "UNAVAILABLE" and "retry later" in refused.value.message
    items, missing = pipeline.get(["1", "2"])  # reads never touch the disk
    assert [i.id for i in items] == [1, 2] and missing == []
    assert len(durable.index.search(np.ones((1, DIM), np.float32), 3)[0][0]) == 3
    monkeypatch.undo()
    pipeline.delete(["1"])  # space is back
    assert 1 not in recovered_ids(base, tmp_path / "state", durable)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs mounted for this test (root on Linux); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                            text=True) if shutil.which("mount") else None
    if result is None or result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() if result else 'no mount command'}); the "
                    "injected-error tests above cover the same paths")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk(base, small_disk):
    state = small_disk / "state"
    durable = DurableCatalog.open(base, state, compact_every=10_000)
    catalog = Catalog(durable.index, durable.store, durable)
    rng = np.random.default_rng(3)
    filler = small_disk / "filler"
    with filler.open("wb") as handle:  # leave ~48 KB free
        free = shutil.disk_usage(small_disk).free
        handle.write(b"\0" * max(0, free - 48 * 1024))
    acknowledged, refused, next_id = [], 0, 1000
    while refused < 3:
        try:
            acknowledged += upsert(catalog, [next_id, next_id + 1], rng)
        except NotDurable:
            refused += 1
        next_id += 2
    assert len(acknowledged) > 20  # it filled up through writes
    assert durable.store.rows_of([acknowledged[0]])[0] is not None  # reads go on
    with pytest.raises((OSError, RuntimeError)):  # a snapshot cannot be written either (faiss: RuntimeError)
        catalog.compact()
    assert not catalog.needs_compaction()
    filler.unlink()  # space returns
    acknowledged += upsert(catalog, [next_id], rng)
    assert durable.compact(force=True) is not None
    assert recovered_ids(base, state, durable) >= set(acknowledged)
