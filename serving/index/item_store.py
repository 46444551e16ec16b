"""ItemStore: what a recommendation shows besides the id (title, attributes); the vectors live in ItemIndex.

Ids are the dataset's internal ids (1..num_items, the rows of the item table);
the raw id of the source data (MovieLens "242") is kept in
`attributes["raw_id"]`. Stored as one JSON file (`store.json`, format
`llmrec.items/1`, items sorted by id), written atomically; no pickle.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.files import sha256_file, write_json_atomic

from .snapshot import MANIFEST_FILE, SnapshotError

__all__ = ["STORE_FILE", "STORE_FORMAT", "Item", "ItemStore"]

STORE_FORMAT = "llmrec.items/1"
STORE_FILE = "store.json"


@dataclass
class Item:
    """One catalogue item. `attributes` maps display names to strings (e.g. "genres": "Comedy, Drama")."""

    id: int
    title: str
    attributes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "attributes": dict(self.attributes)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Item:
        return cls(id=int(obj["id"]), title=str(obj["title"]), attributes=dict(obj.get("attributes") or {}))


def _checked(item: Item) -> Item:
    """A private copy with validated types, so later edits of the caller's object do not leak in."""
    if not isinstance(item, Item):
        raise TypeError(f"expected Item, got {type(item).__name__}")
    item_id = int(item.id)
    if item_id <= 0:
        raise ValueError(f"item ids must be > 0 (0 is padding), got {item.id}")
    if not isinstance(item.title, str):
        raise ValueError(f"item {item_id}: title must be a string, got {type(item.title).__name__}")
    attrs = dict(item.attributes or {})
    bad = [k for k, v in attrs.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"item {item_id}: attributes must map strings to strings (bad keys: {bad})")
    return Item(item_id, item.title, attrs)


class ItemStore:
    """Thread-safe id -> Item map with JSON persistence."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: dict[int, Item] = {}
        self._lock = threading.Lock()
        self.upsert(list(items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        try:
            return int(item_id) in self._items  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def upsert(self, items: list[Item]) -> None:
        """Add or replace items; duplicate ids in one call are refused (as in ItemIndex.upsert)."""
        checked = [_checked(item) for item in items]
        ids = [item.id for item in checked]
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            dups = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate item ids in one upsert: {dups[:10]}")
        with self._lock:
            for item in checked:
                self._items[item.id] = item

    def delete(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove items; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            return sum(self._items.pop(int(i), None) is not None for i in set(np.asarray(ids).reshape(-1).tolist()))

    def get(self, ids: Iterable[int] | np.ndarray) -> list[Item | None]:
        """The items in the order asked, None for unknown ids (and for the -1 padding of search results)."""
        items = self._items
        return [items.get(int(i)) for i in np.asarray(ids).reshape(-1).tolist()]

    def ids(self) -> np.ndarray:
        """Known ids, int64, sorted."""
        with self._lock:
            return np.array(sorted(self._items), dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            items = [self._items[i].to_json() for i in sorted(self._items)]
        return {"format": STORE_FORMAT, "count": len(items), "items": items}

    def write_file(self, path: str | Path) -> None:
        """Write the store to one JSON file atomically (used by `save` and inside index snapshots)."""
        write_json_atomic(Path(path), self.to_json())

    def save(self, directory: str | Path) -> Path:
        """Write DIRECTORY/store.json atomically.

        Refused when DIRECTORY is an index snapshot whose manifest already checksums store.json: save both
        together with `ItemIndex.save(directory, store=store)` instead.
        """
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if manifest_path.is_file() and STORE_FILE in (json.loads(manifest_path.read_text()).get("files") or {}):
            raise ValueError(f"{directory} is an index snapshot holding {STORE_FILE}; "
                             "save the store with ItemIndex.save(directory, store=store)")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STORE_FILE
        self.write_file(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ItemStore:
        """Read DIRECTORY/store.json; when an index manifest beside it lists the file, its sha256 must match."""
        directory = Path(directory)
        path = directory / STORE_FILE
        if not path.is_file():
            raise SnapshotError(f"item store {path} not found")
        manifest_path = directory / MANIFEST_FILE
        if manifest_path.is_file():
            try:
                digest = (json.loads(manifest_path.read_text()).get("files") or {}).get(STORE_FILE)
            except ValueError as exc:
                raise SnapshotError(f"unreadable {manifest_path}: {exc}") from exc
            if digest is not None and sha256_file(path) != digest:
                raise SnapshotError(f"item store {path} is corrupt: its sha256 differs from {manifest_path}")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise SnapshotError(f"item store {path} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("format") != STORE_FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise SnapshotError(f"item store {path}: format {found!r}, expected {STORE_FORMAT!r}")
        try:
            items = [Item.from_json(entry) for entry in obj["items"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"item store {path}: malformed item entry: {exc}") from exc
        if len(items) != obj.get("count"):
            raise SnapshotError(f"item store {path}: {len(items)} items, the file says {obj.get('count')}")
        return cls(items)
