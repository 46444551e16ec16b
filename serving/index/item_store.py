"""ItemStore: every item's catalogue id, title and attributes; the vectors live in ItemIndex.

Two ids per item: `key`, the catalogue's own id that clients use (the dataset's
raw item id, MovieLens "242", or one an upsert brought or was assigned), and
`id`, the internal row (1..num_items for the rows of the item table, then rows
above, never reused) that the index and the write-ahead log use. The store maps
one to the other. Stored as one JSON file (`store.json`, format `llmrec.items/2`,
items sorted by row; `llmrec.items/1` files, without keys, are read with the key
taken from `attributes["raw_id"]`), written atomically; no pickle.
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

STORE_FORMAT = "llmrec.items/2"
READ_FORMATS = ("llmrec.items/1", STORE_FORMAT)
STORE_FILE = "store.json"


@dataclass
class Item:
    """One catalogue item: its internal row `id`, what it shows, and its catalogue id `key` (default: the
    `raw_id` attribute, else the row as text). `attributes` maps display names to strings."""

    id: int
    title: str
    attributes: dict[str, str] = field(default_factory=dict)
    key: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "title": self.title, "attributes": dict(self.attributes)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Item:
        return cls(id=int(obj["id"]), title=str(obj["title"]), attributes=dict(obj.get("attributes") or {}),
                   key=str(obj.get("key") or ""))


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
    key = item.key or attrs.get("raw_id") or str(item_id)
    if not isinstance(key, str):
        raise ValueError(f"item {item_id}: key must be a string, got {type(key).__name__}")
    return Item(item_id, item.title, attrs, key)


class ItemStore:
    """Thread-safe row -> Item map with its key -> row index, and JSON persistence."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: dict[int, Item] = {}
        self._rows: dict[str, int] = {}  # key -> row
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
        """Add or replace items (by row); duplicate rows or keys in one call, or a key another row holds, are
        refused (the catalogue maps a key to its row before it writes)."""
        checked = [_checked(item) for item in items]
        for what, values in (("ids", [item.id for item in checked]), ("keys", [item.key for item in checked])):
            if len(set(values)) != len(values):
                seen: set = set()
                dups = sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
                raise ValueError(f"duplicate item {what} in one upsert: {dups[:10]}")
        with self._lock:
            taken = [(item.key, self._rows[item.key]) for item in checked
                     if self._rows.get(item.key, item.id) != item.id]
            if taken:
                raise ValueError(f"item keys already held by other rows: {taken[:10]}")
            for item in checked:
                old = self._items.get(item.id)
                if old is not None and old.key != item.key:
                    self._rows.pop(old.key, None)
                self._items[item.id] = item
                self._rows[item.key] = item.id

    def delete(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove items by row; unknown rows are ignored. Returns how many were removed."""
        removed = 0
        with self._lock:
            for i in set(np.asarray(ids).reshape(-1).tolist()):
                item = self._items.pop(int(i), None)
                if item is not None:
                    self._rows.pop(item.key, None)
                    removed += 1
        return removed

    def get(self, ids: Iterable[int] | np.ndarray) -> list[Item | None]:
        """The items of these rows in the order asked, None for unknown rows (and the -1 padding of searches)."""
        items = self._items
        return [items.get(int(i)) for i in np.asarray(ids).reshape(-1).tolist()]

    def rows_of(self, keys: Iterable[str]) -> list[int | None]:
        """The row of each catalogue id, None for ids not in the store."""
        rows = self._rows
        return [rows.get(key) for key in keys]

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
        if not isinstance(obj, dict) or obj.get("format") not in READ_FORMATS:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise SnapshotError(f"item store {path}: format {found!r}, expected one of {list(READ_FORMATS)}")
        try:
            items = [Item.from_json(entry) for entry in obj["items"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"item store {path}: malformed item entry: {exc}") from exc
        if len(items) != obj.get("count"):
            raise SnapshotError(f"item store {path}: {len(items)} items, the file says {obj.get('count')}")
        try:
            return cls(items)
        except ValueError as exc:
            raise SnapshotError(f"item store {path}: {exc}") from exc
