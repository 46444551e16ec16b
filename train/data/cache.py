"""On-disk cache of processed datasets.

Processing is cheap for MovieLens-100k but not for Amazon-sized sources, and
downstream stages (embedding export, evaluation) must all see the *same*
internal ids. A processed dataset is therefore stored once under
`<cache_dir>/datasets/<name>-<key>/`, where the key hashes the format version,
the source files' sha256 checksums and the processing parameters: editing a
source file or changing a parameter yields a new folder, never a stale hit.

Layout (no pickle anywhere; arrays load with `allow_pickle=False`):
  manifest.json                    format version, key, source files with sha256/size,
                                   parameters, counts, created time, split storage
  sequences.npy, offsets.npy       all sequences concatenated (int64) + offsets [n+1]
  {split}_seq_index.npy            example -> sequence index (int64)
  {split}_position.npy             example -> target position (int64)
  {split}_sequences.npy/_offsets   only for splits with their own sequences (LLM2Rec layout)
  items.json, users.json           raw item ids (row 0 = padding token), raw user ids
  features.json                    {"types": column -> RecBole type, "values": column -> list}

Folders are written to a temporary sibling and renamed into place, so a
reader never sees a half-written dataset; if a concurrent writer got there
first, its (identical) result is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from llmrec.files import sha256_file

from .dataset import Examples, SequenceData
from .sources import Source, source_files

logger = logging.getLogger("llmrec.data")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
CACHE_ENV = "LLMREC_CACHE"


def default_cache_dir() -> Path:
    """`$LLMREC_CACHE`, else `~/.cache/llmrec`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmrec"


def source_fingerprint(source: Source) -> dict:
    """Name, format and checksummed files of a source, as recorded in the manifest."""
    files = [
        {"name": p.name, "sha256": sha256_file(p), "size": p.stat().st_size} for p in source_files(source)
    ]
    return {"name": source.name, "format": source.format, "files": files}


def cache_key(fingerprint: dict, parameters: dict) -> str:
    """Short hash of everything the processed dataset depends on."""
    payload = json.dumps(
        {"format_version": FORMAT_VERSION, "source": fingerprint, "parameters": parameters}, sort_keys=True
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def cache_folder(cache_dir: Path, name: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
    return cache_dir / "datasets" / f"{safe}-{key}"


def dataset_counts(data: SequenceData) -> dict[str, int]:
    return {
        "users": data.num_users,
        "items": data.num_items,
        "interactions": int(sum(s.shape[0] for s in data.sequences)),
        "train_examples": len(data.train),
        "valid_examples": len(data.valid),
        "test_examples": len(data.test),
    }


def _flatten(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, dtype=np.int64)
    return flat, offsets


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(offsets.shape[0] - 1)]


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def _write_contents(data: SequenceData, folder: Path, manifest: dict) -> None:
    flat, offsets = _flatten(data.sequences)
    np.save(folder / "sequences.npy", flat, allow_pickle=False)
    np.save(folder / "offsets.npy", offsets, allow_pickle=False)
    storage = {}
    for split in SPLITS:
        examples: Examples = getattr(data, split)
        np.save(folder / f"{split}_seq_index.npy", examples.seq_index.astype(np.int64), allow_pickle=False)
        np.save(folder / f"{split}_position.npy", examples.position.astype(np.int64), allow_pickle=False)
        if examples.sequences is data.sequences:
            storage[split] = "shared"
        else:
            storage[split] = "own"
            own_flat, own_offsets = _flatten(examples.sequences)
            np.save(folder / f"{split}_sequences.npy", own_flat, allow_pickle=False)
            np.save(folder / f"{split}_offsets.npy", own_offsets, allow_pickle=False)
    _write_json(folder / "items.json", data.item_ids)
    _write_json(folder / "users.json", data.user_ids)
    _write_json(folder / "features.json", {"types": data.feature_types, "values": data.item_features})
    manifest = {**manifest, "storage": storage}
    # The manifest goes last: its presence marks a complete folder.
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")


def save_dataset(data: SequenceData, folder: Path, manifest: dict) -> Path:
    """Write `data` to `folder` atomically; returns the folder that holds the result."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        _write_contents(data, tmp, manifest)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():
                raise
            logger.info("dataset cache %s was written concurrently; using it", folder)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_array(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / name, allow_pickle=False)


def load_cached(folder: Path) -> SequenceData:
    """Read a cache folder written by `save_dataset`."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"no readable {MANIFEST} in {folder}")
    sequences = _unflatten(_load_array(folder, "sequences.npy"), _load_array(folder, "offsets.npy"))
    splits = {}
    for split in SPLITS:
        if manifest["storage"][split] == "shared":
            split_sequences = sequences
        else:
            split_sequences = _unflatten(
                _load_array(folder, f"{split}_sequences.npy"), _load_array(folder, f"{split}_offsets.npy")
            )
        splits[split] = Examples(
            split_sequences,
            _load_array(folder, f"{split}_seq_index.npy"),
            _load_array(folder, f"{split}_position.npy"),
        )
    item_ids = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    features = json.loads((folder / "features.json").read_text(encoding="utf-8"))
    return SequenceData(
        name=manifest["source"]["name"],
        num_items=len(item_ids) - 1,
        item_ids=item_ids,
        user_ids=json.loads((folder / "users.json").read_text(encoding="utf-8")),
        sequences=sequences,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        item_features=features["values"],
        feature_types=features["types"],
        manifest=manifest,
    )


def matches(manifest: dict | None, fingerprint: dict, parameters: dict) -> bool:
    """Whether a stored manifest was built from these exact files and parameters."""
    return (
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("source") == fingerprint
        and manifest.get("parameters") == parameters
    )


def new_manifest(fingerprint: dict, parameters: dict, key: str, data: SequenceData) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "key": key,
        "source": fingerprint,
        "parameters": parameters,
        "counts": dataset_counts(data),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def discard(folder: Path) -> None:
    """Move a broken cache folder aside, then delete it (renaming first keeps readers from using it)."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
