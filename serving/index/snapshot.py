"""Snapshot folders: written completely beside the target, fsynced, then renamed into place.

A snapshot is a folder of files plus `manifest.json` naming the sha256 of each
file. It is first written into a hidden sibling folder (`.NAME-new-*`), every
file and the folder are fsynced, and only then is the complete folder renamed
to NAME (an existing NAME is renamed away to `.NAME-old-*` first and deleted
afterwards; the same swap the rest of the project uses for its folders). So a
reader sees the old snapshot or the new one, never a mixture, and a crash
leaves at worst the previous snapshot under `.NAME-old-*` (the error for a
missing NAME points at it). Reading verifies every checksum, so a truncated or
edited file is refused instead of being served.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrec.files import fsync_path, sha256_file, write_json_atomic

MANIFEST_FILE = "manifest.json"
STORE_FILE = "store.json"  # the item store inside a snapshot (catalog.ItemStore)


class IndexMismatch(ValueError):
    """A snapshot that does not fit the deployed models (the message names the field, expected and found)."""


class SnapshotError(IndexMismatch):
    """A snapshot that is missing, incomplete or corrupt.

    A subclass of IndexMismatch so that one `except IndexMismatch` refuses every unusable snapshot at start-up.
    """


def write_snapshot(directory: str | Path, write_files: Callable[[Path], None], manifest: dict[str, Any]) -> dict:
    """Create the snapshot folder `directory` atomically; returns the manifest with its `files` checksums.

    `write_files(folder)` writes the data files into a fresh temporary folder; the manifest is written last.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-new-", dir=directory.parent))
    try:
        write_files(tmp)
        files = {}
        for path in sorted(tmp.iterdir()):
            if not path.is_file():
                raise ValueError(f"snapshot writer left a non-file entry {path.name!r}")
            fsync_path(path)
            files[path.name] = sha256_file(path)
        manifest = {**manifest, "files": files}
        write_json_atomic(tmp / MANIFEST_FILE, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it private to the owner
        fsync_path(tmp)
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}-old-{os.getpid()}-{time.time_ns()}")
            directory.rename(old)
        tmp.rename(directory)
        fsync_path(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def read_manifest(directory: str | Path, fmt: str) -> dict[str, Any]:
    """The manifest of a snapshot folder, checked for its format; SnapshotError when absent or unreadable."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        leftovers = sorted(directory.parent.glob(f".{directory.name}-old-*")) if directory.parent.is_dir() else []
        hint = f" (a previous snapshot was left at {leftovers[-1]} by an interrupted save)" if leftovers else ""
        raise SnapshotError(f"index snapshot {directory}: {MANIFEST_FILE} not found{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"index snapshot {directory}: unreadable {MANIFEST_FILE}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise SnapshotError(f"index snapshot {directory}: format {found!r}, expected {fmt!r}")
    return manifest


def verify_files(directory: str | Path, manifest: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    """Raise SnapshotError naming every file that is missing or whose sha256 differs from the manifest."""
    directory = Path(directory)
    files = manifest.get("files") or {}
    problems = [f"{name} is not listed in the manifest" for name in required if name not in files]
    for name, digest in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        else:
            found = sha256_file(path)
            if found != digest:
                problems.append(f"{name} has sha256 {found[:12]}…, the manifest says {digest[:12]}…")
    if problems:
        raise SnapshotError(f"index snapshot {directory} is corrupt or incomplete: " + "; ".join(problems))


def check_expected(directory: str | Path, manifest: dict[str, Any], expect: dict[str, Any] | None) -> None:
    """Raise IndexMismatch for the first field of `expect` whose value the manifest does not hold."""
    for field, expected in (expect or {}).items():
        if field not in manifest:
            raise IndexMismatch(f"index snapshot {directory} does not fit the deployed models: "
                                f"{field} expected {expected!r}, the snapshot records none")
        found = manifest[field]
        if found != expected:
            raise IndexMismatch(f"index snapshot {directory} does not fit the deployed models: "
                                f"{field} expected {expected!r}, found {found!r}")
