"""The catalogue: its items (`ItemStore`), what the gateway reads and writes through (`ItemCatalog`, `Catalog`),
and its one write path: row allocation, the order a write is applied in, and its log entry first.

Clients name items by their catalogue ids (keys, strings); the index, the store and the log work on internal
rows. A key in use keeps its row (the item is replaced); a new key gets the next row; an upsert without a key
is given "new-<row>". Rows are never chosen by a client and never reused, so they cannot be exhausted by a
write, and a stale history never names a different item.

Why one: the live gateway and the write-ahead log's replay (serving/index/wal.py) must leave exactly the same
state — the same ids, vectors, titles and tombstones — and two copies of "assign ids, apply to the store and the
index" drift apart. `apply_write` is the only place a write touches the index and the store, `advance_next_id`
the only id rule; `Catalog` (what the gateway writes through) and `DurableCatalog` (replay) both use them.

The items: `ItemStore` holds every item's catalogue id, title and attributes; the vectors live in ItemIndex.

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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from llmrec.files import sha256_file, write_json_atomic

from .item_index import ItemIndex
from .snapshot import MANIFEST_FILE, STORE_FILE, SnapshotError

if TYPE_CHECKING:
    from .wal import DurableCatalog

STORE_FORMAT = "llmrec.items/2"
READ_FORMATS = ("llmrec.items/1", STORE_FORMAT)


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


MAX_ITEM_ID = 2**63 - 1  # int64: the largest id FAISS and the protocol can hold
OPERATIONS = ("upsert", "delete")


class IdsExhausted(ValueError):
    """No internal row is left above the largest in use (2^63 - 1 rows handed out)."""


class NotDurable(OSError):
    """The write could not be logged (fsynced); nothing was applied."""


class MissingItems(KeyError):
    """Catalogue ids that are not in the catalogue (sorted, distinct)."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(sorted(set(keys)))
        self.keys: list[str] = sorted(set(keys))


Hit = tuple[Item, float]  # an item of a search result and its inner-product score


class ItemCatalog(Protocol):
    """What the gateway reads and writes, in catalogue ids: `Catalog` (FAISS, here) and `MilvusCatalog`
    (milvus_catalog.py) implement it."""

    dim: int
    durable: Any  # the write-ahead log the pipeline compacts in the background, or None
    observe: Callable[[str, float], None]
    provenance: dict[str, Any]

    def __len__(self) -> int: ...
    def vectors_of(self, keys: Sequence[str]) -> np.ndarray: ...
    def search(self, users: np.ndarray, k: int, exclude: Sequence[Sequence[str]]) -> list[list[Hit]]: ...
    def items(self, keys: Sequence[str]) -> list[Item | None]: ...
    def upsert(self, keys: Sequence[str], vectors: np.ndarray, items: Sequence[tuple[str, dict[str, str]]]
               ) -> list[str]: ...
    def delete(self, keys: Sequence[str]) -> tuple[int, list[str]]: ...
    def needs_compaction(self) -> bool: ...
    def compact(self) -> Any: ...
    def close(self, compact: bool = True) -> None: ...


def advance_next_id(next_id: int, ids: Sequence[int] | np.ndarray) -> int:
    """The next row to assign once rows `ids` exist: rows are never reused, not even after a delete or a restart."""
    return max(int(next_id), max((int(i) for i in ids), default=0) + 1)


def first_free_id(index: ItemIndex, store: ItemStore, floor: int = 0) -> int:
    """The next row for a catalogue opened as it is (`floor`: a next row recorded earlier, e.g. in a snapshot)."""
    return advance_next_id(floor, [int(i) for i in index.ids()[-1:]] + [int(i) for i in store.ids()[-1:]])


ASSIGNED_KEY = "new-{row}"  # the catalogue id of an item upserted without one


def allocate(next_id: int, keys: Sequence[str], store: ItemStore) -> tuple[list[int], list[str]]:
    """Rows and final keys of a batch: a key in use keeps its row, a new key gets the next free row, an empty key
    gets a new row and the key "new-<row>" (suffixed when that name is in use or given in the same batch)."""
    rows, final = [], []
    given = set(keys)
    fresh = next_id
    for key, row in zip(keys, store.rows_of(keys), strict=True):
        if row is None or not key:
            row, fresh = fresh, fresh + 1
        if not key:
            key, n = ASSIGNED_KEY.format(row=row), 0
            while store.rows_of([key])[0] is not None or key in final or key in given:
                n += 1
                key = f"{ASSIGNED_KEY.format(row=row)}-{n}"
        rows.append(int(row))
        final.append(key)
    if rows and max(rows) > MAX_ITEM_ID:
        raise IdsExhausted(f"no internal row is left above {next_id - 1}")
    return rows, final


def apply_write(index: ItemIndex, store: ItemStore, op: str, ids: np.ndarray, vectors: np.ndarray | None = None,
                items: Sequence[Item] = ()) -> int:
    """Apply one write; returns how many index entries it added or removed.

    Upserts go to the store first, deletes to the index first: an id a search can return always has its title.
    """
    if op == "upsert":
        store.upsert(items)
        index.upsert(ids, vectors)
        return len(ids)
    if op == "delete":
        removed = index.delete(ids)
        store.delete(ids)
        return removed
    raise ValueError(f"unknown catalogue operation {op!r}; one of {OPERATIONS}")


class Catalog:
    """Index + store (+ the durable log when persisting), written one batch at a time under one lock.

    What the gateway reads and writes, in catalogue ids (`dim`, `len`, `vectors_of`, `search`, `items`, `upsert`,
    `delete`, compaction): the interface the Milvus catalogue (milvus_catalog.py) offers too.
    `observe(operation, seconds)` receives the time of each log append ("wal_append") and index write
    ("upsert", "delete", "compact"), for the gateway's metrics.
    """

    def __init__(self, index: ItemIndex, store: ItemStore, durable: DurableCatalog | None = None,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self.index = index
        self.store = store
        self.durable = durable
        self.observe = observe or (lambda operation, seconds: None)
        self.lock = threading.Lock()
        self.provenance: dict[str, Any] = {}  # the snapshot manifest's provenance fields (set by who opened it)
        self.next_id = first_free_id(index, store, durable.next_id if durable is not None else 0)

    # ------------------------------------------------------------------ reads
    @property
    def dim(self) -> int:
        return self.index.dim

    def __len__(self) -> int:
        return len(self.index)

    def vectors_of(self, keys: Sequence[str]) -> np.ndarray:
        """The vectors [len(keys), dim] of catalogue ids, in order; MissingItems naming the ids it lacks."""
        rows = self.store.rows_of(keys)
        missing = [key for key, row in zip(keys, rows, strict=True) if row is None or row not in self.index]
        if missing:
            raise MissingItems(missing)
        try:
            return self.index.vectors(np.asarray(rows, dtype=np.int64))
        except KeyError:  # deleted between the check and the read
            raise MissingItems(keys) from None

    def search(self, users: np.ndarray, k: int, exclude: Sequence[Sequence[str]]) -> list[list[Hit]]:
        """The k best items per user vector (inner product), leaving out `exclude[b]` (ids; unknown ones ignored);
        an item deleted after the search found it is left out rather than shown without its title."""
        rows = [np.asarray([r for r in self.store.rows_of(e) if r is not None], dtype=np.int64) for e in exclude]
        ids, scores = self.index.search(users, k, exclude=rows)
        out = []
        for row_ids, row_scores in zip(ids, scores, strict=True):
            keep = row_ids >= 0
            found = self.store.get(row_ids[keep][:k])
            out.append([(item, float(s)) for item, s in zip(found, row_scores[keep][:k], strict=True)
                        if item is not None])
        return out

    def items(self, keys: Sequence[str]) -> list[Item | None]:
        """The items of catalogue ids, in order (None for an unknown id)."""
        return self.store.get([row if row is not None else -1 for row in self.store.rows_of(keys)])

    # ------------------------------------------------------------------ writes
    def upsert(self, keys: Sequence[str], vectors: np.ndarray, items: Sequence[tuple[str, dict[str, str]]]
               ) -> list[str]:
        """Store items (title, attributes) with their vectors under their catalogue ids (an empty key is
        assigned one). Returns the keys."""
        with self.lock:
            rows, keys = allocate(self.next_id, list(keys), self.store)
            records = [Item(row, title, dict(attributes), key)
                       for row, key, (title, attributes) in zip(rows, keys, items, strict=True)]
            self._log(lambda log: log.log_upsert(rows, vectors, records))
            self.next_id = advance_next_id(self.next_id, rows)
            t0 = time.perf_counter()
            apply_write(self.index, self.store, "upsert", np.asarray(rows, dtype=np.int64), vectors, records)
            self.observe("upsert", time.perf_counter() - t0)
        return keys

    def delete(self, keys: Sequence[str]) -> tuple[int, list[str]]:
        """Remove items by catalogue id; returns (index entries removed, the ids that were not there)."""
        with self.lock:
            found = self.store.rows_of(keys)
            missing = [key for key, row in zip(keys, found, strict=True) if row is None]
            rows = [row for row in found if row is not None]
            self._log(lambda log: log.log_delete(rows))
            t0 = time.perf_counter()
            removed = apply_write(self.index, self.store, "delete", np.asarray(rows, dtype=np.int64))
            self.observe("delete", time.perf_counter() - t0)
        return removed, missing

    def needs_compaction(self) -> bool:
        return self.durable is not None and self.durable.needs_compaction()

    def compact(self) -> Path | None:
        """Snapshot the state and drop the log it covers (serving/index/wal.py); None when not durable or unchanged."""
        if self.durable is None:
            return None
        with self.lock:
            t0 = time.perf_counter()
            folder = self.durable.compact()
        if folder is not None:
            self.observe("compact", time.perf_counter() - t0)
        return folder

    def close(self, compact: bool = True) -> None:
        if self.durable is not None:
            with self.lock:
                self.durable.close(compact=compact)

    def _log(self, append: Callable[[Any], object]) -> None:
        """Make a write durable before it is applied (lock held); NotDurable when the disk refuses it."""
        if self.durable is None:
            return
        t0 = time.perf_counter()
        try:
            append(self.durable)
        except OSError as error:
            raise NotDurable(str(error)) from error
        self.observe("wal_append", time.perf_counter() - t0)
