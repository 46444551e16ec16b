"""File helpers every layer shares: content hashes, durable JSON, atomic folder replacement.

Why one copy: train writes the checkpoints and manifests that export and serving verify, so they must hash and
write files the same way; a reader (another stage, another process, the gateway after a crash) must never see
half a file or half a folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("llmrec.files")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's entry to disk (a rename is durable only once its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(path: str | Path) -> Path:
    """mkdir -p whose new folders survive a power cut: each new folder's entry is fsynced in its parent (a
    folder created and written into, but never named durably, can vanish with all it holds)."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    for folder in reversed(missing):
        fsync_path(folder.parent)
    return path


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temporary name in the same folder, fsync, rename over `path`, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def replace_folder(new: Path, target: Path) -> None:
    """Rename the complete folder `new` to `target`; an existing target is swapped out and deleted afterwards.

    If another process renames its folder into place at the same moment, that one is kept and `new` is left
    for the caller to delete (both writers produce the same content).
    """
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}-{time.time_ns()}")
        try:
            target.rename(old)
        except OSError:
            old = None
    try:
        new.rename(target)
    except OSError:
        logger.info("folder_written_concurrently", extra={"folder": str(target)})
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ForeignFolder(ValueError):
    """An output folder that holds files this project's tools did not write."""


def refuse_foreign_folder(out: str | Path, markers: tuple[str, ...], force: bool = False, flag: str = "--out") -> None:
    """Refuse to write into (or replace) `out` when it is a non-empty folder holding none of `markers` (the file
    names, or glob patterns, that the tool writes in every folder it makes), unless `force`.

    Why: every tool replaces or fills its output folder; pointed by mistake at a folder of other files (a home
    directory, a dataset) it would delete or mix into them.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ForeignFolder(f"{flag} {out} exists and is not a folder")
    if force or next(out.iterdir(), None) is None or any(next(out.glob(m), None) is not None for m in markers):
        return
    raise ForeignFolder(f"{flag} {out} is a non-empty folder this tool did not write (none of {list(markers)} in "
                        f"it): not replacing it; pass --force to replace it anyway")
