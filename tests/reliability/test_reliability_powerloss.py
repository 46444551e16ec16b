"""Power loss, modelled: every fsync of the write-ahead log and snapshot code is recorded (a file's content, a
folder's entries), and the on-disk state a power cut would leave after each of them is rebuilt: data that was
never fsynced is gone, and so is every name (a created, renamed or deleted entry) whose folder was not fsynced
since. Recovery from every such state must open (nothing it should open refused) and hold every write
acknowledged before the cut. The same run with one fsync call site removed must fail: shown for each site.

SIGKILL tests cannot show this: the kernel's page cache survives a killed process, so removing every fsync but
the append's would still pass them."""

from __future__ import annotations

import os
import stat
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from serving.index import Item, ItemIndex, ItemStore
from serving.index.catalog import Catalog, DurableCatalog

DIM = 4
ROOT = Path(__file__).resolve().parents[2]
WRITE_JSON_DIR = ("llmrec/files.py", "write_json_atomic", "fsync_path(path.parent)")
SNAPSHOT_DIR = ("serving/index/snapshot.py", "write_snapshot", "fsync_path(tmp)")
# fsync call sites whose removal alone loses nothing here, and why
NOT_REQUIRED_ALONE = {
    # a snapshot folder's own entries are fsynced twice: by the manifest's atomic write (the last file written)
    # and by write_snapshot before the rename; either one suffices (removing both is caught, below)
    WRITE_JSON_DIR: "the snapshot folder is fsynced again by write_snapshot",
    SNAPSHOT_DIR: "the manifest's atomic write already fsynced the snapshot folder",
    # the state folder's entries (a new snapshot's name, pruned files) become durable together at the next fsync
    # of that folder; until then a power cut falls back to the previous snapshot, whose log is still all there:
    # these two only bound how long a finished snapshot may take to be durable, no acknowledged write needs them
    ("serving/index/snapshot.py", "write_snapshot", "fsync_path(directory.parent)"):
        "the state folder's next fsync names the snapshot; the previous one and the log cover it until then",
    ("serving/index/catalog.py", "_prune", "fsync_path(self.state_dir)"):
        "a pruned file that comes back after a power cut is one recovery ignores",
}


@dataclass
class Disk:
    """What fsync made durable: file contents and folder entries by inode, in the order they became so."""

    root: Path
    skip: frozenset = frozenset()  # call sites whose fsyncs are left out (as if removed from the code)
    events: list[tuple[str, int, object]] = field(default_factory=list)  # ("file"|"dir"|"ack", ino, payload)
    sites: set[tuple[str, str, str]] = field(default_factory=set)

    def fsync(self, real, fd: int) -> None:
        site = call_site()
        self.sites.add(site)
        if site in self.skip:
            return
        info = os.fstat(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if stat.S_ISDIR(info.st_mode):
            entries = {e.name: (e.inode(), e.is_dir(follow_symlinks=False)) for e in os.scandir(path)}
            self.events.append(("dir", info.st_ino, entries))
        elif path.startswith(str(self.root)):
            with open(f"/proc/self/fd/{fd}", "rb") as handle:  # the fd may be write-only
                self.events.append(("file", info.st_ino, handle.read()))
        real(fd)

    def ack(self, writes: int) -> None:
        self.events.append(("ack", 0, writes))

    def images(self):
        """(writes acknowledged, durable folder entries, durable contents) of a power cut just before each fsync,
        and after the last: a write acknowledged before the cut must be in it."""
        dirs: dict[int, dict] = {}
        files: dict[int, bytes] = {}
        acked = 0
        for kind, ino, payload in self.events:
            if kind == "ack":
                acked = payload
                continue
            yield acked, dict(dirs), dict(files)
            (dirs if kind == "dir" else files)[ino] = payload
        yield acked, dirs, files


def call_site() -> tuple[str, str, str]:
    """(file, function, source line) of the project code that asked for this fsync (fsync_path looked through)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = Path(frame.filename)
        if ROOT in path.parents and "tests" not in path.relative_to(ROOT).parts and frame.name != "fsync_path":
            return (path.relative_to(ROOT).as_posix(), frame.name, (frame.line or "").strip())
    raise AssertionError("an fsync outside the project")


def materialise(root_ino: int, dirs: dict, files: dict, out: Path) -> None:
    out.mkdir()
    for name, (ino, is_dir) in (dirs.get(root_ino) or {}).items():
        if is_dir:
            materialise(ino, dirs, files, out / name)
        else:
            (out / name).write_bytes(files.get(ino, b""))  # a name without fsynced content: an empty file


@pytest.fixture
def base(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    index = ItemIndex(DIM, use_gpu=False)
    index.upsert(np.arange(1, 7), rng.standard_normal((6, DIM)))
    folder = tmp_path / "index"
    index.save(folder, extra={"source": "test"}, store=ItemStore([Item(i, f"item {i}") for i in range(1, 7)]))
    return folder


def run_workload(base: Path, disk: Disk, monkeypatch) -> list[dict]:
    """Writes through the catalogue with compactions (segments rotated, snapshots written, old ones pruned) and a
    clean shutdown; returns the expected state after each write (the first: before any)."""
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: disk.fsync(real, fd))
    rng = np.random.default_rng(1)
    durable = DurableCatalog.open(base, disk.root / "state", compact_every=3)
    live = Catalog(durable.index, durable.store, durable)
    def snapshot() -> dict:
        return {item.key: (durable.index.vectors([item.id])[0].tobytes(), item.title)
                for item in durable.store.get(durable.index.ids())}

    states = [snapshot()]
    for n in range(14):
        if n % 4 == 3:
            live.delete([str(rng.choice(sorted(states[-1])))])
        else:
            requested = [""] * 2 if n % 2 else [str(rng.integers(1, 40))]
            vectors = rng.standard_normal((len(requested), DIM)).astype(np.float32)
            live.upsert(requested, vectors, [(f"t{n}.{k}", {}) for k in range(len(requested))])
        states.append(snapshot())
        disk.ack(len(states) - 1)
        if live.needs_compaction():
            live.compact()
    live.close(compact=True)
    monkeypatch.undo()
    return states


def check_images(base: Path, disk: Disk, states: list[dict], tmp: Path) -> list[str]:
    """Recover from every power-cut image; the problems found (empty when every image holds its writes)."""
    root_ino = os.stat(disk.root).st_ino
    problems = []
    for k, (acked, dirs, files) in enumerate(disk.images()):
        image = tmp / f"image-{k}"
        materialise(root_ino, dirs, files, image)
        try:
            recovered = DurableCatalog.open(base, image / "state")
        except Exception as exc:  # noqa: BLE001 - any refusal is a finding
            problems.append(f"image {k} ({acked} writes acknowledged): refused: {exc}")
            continue
        try:
            got = {item.key: (recovered.index.vectors([item.id])[0].tobytes(), item.title)
                   for item in recovered.store.get(recovered.index.ids())}
        finally:
            recovered.close(compact=False)
        if not any(got == states[j] for j in range(acked, len(states))):
            held = [j for j in range(len(states)) if got == states[j]]
            tree = sorted(f"{p.relative_to(image)}:{p.stat().st_size}" for p in image.rglob("*") if p.is_file())
            problems.append(f"image {k}: lost acknowledged writes ({acked} acknowledged, it holds the state after "
                            f"{held} writes; files {tree})")
    return problems


def test_every_power_cut_recovers_every_acknowledged_write(base, tmp_path, monkeypatch):
    disk = Disk(tmp_path / "disk")
    disk.root.mkdir()
    states = run_workload(base, disk, monkeypatch)
    images = sum(1 for _ in disk.images())
    print(f"{images} power-cut images, {len(disk.sites)} fsync call sites", file=sys.stderr)
    assert images > 40 and len(disk.sites) >= 6  # appends, segments, snapshots, folders, the shutdown
    assert check_images(base, disk, states, tmp_path) == []


def test_removing_any_required_fsync_loses_or_refuses_something(base, tmp_path, monkeypatch):
    probe = Disk(tmp_path / "probe")
    probe.root.mkdir()
    run_workload(base, probe, monkeypatch)
    assert set(NOT_REQUIRED_ALONE) <= probe.sites, sorted(probe.sites)

    def problems_without(sites: frozenset, n: int) -> list[str]:
        disk = Disk(tmp_path / f"disk-{n}", skip=sites)
        disk.root.mkdir()
        states = run_workload(base, disk, monkeypatch)
        (tmp_path / f"images-{n}").mkdir()
        return check_images(base, disk, states, tmp_path / f"images-{n}")

    caught = {site: problems_without(frozenset({site}), n) for n, site in enumerate(sorted(probe.sites))}
    print("\n".join(f"{'caught' if found else 'not required alone'}: {site} ({len(found)} images)"
                    for site, found in caught.items()), file=sys.stderr)
    assert {site for site, found in caught.items() if not found} == set(NOT_REQUIRED_ALONE)
    assert problems_without(frozenset({WRITE_JSON_DIR, SNAPSHOT_DIR}), len(caught))  # neither fsync: caught
