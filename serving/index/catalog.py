"""The catalogue's one write path: row allocation, the order a write is applied in, and its log entry first.

Clients name items by their catalogue ids (keys, strings); the index, the store and the log work on internal
rows. A key in use keeps its row (the item is replaced); a new key gets the next row; an upsert without a key
is given "new-<row>". Rows are never chosen by a client and never reused, so they cannot be exhausted by a
write, and a stale history never names a different item.

Why one: the live gateway and the write-ahead log's replay (serving/index/wal.py) must leave exactly the same
state — the same ids, vectors, titles and tombstones — and two copies of "assign ids, apply to the store and the
index" drift apart. `apply_write` is the only place a write touches the index and the store, `advance_next_id`
the only id rule; `Catalog` (what the gateway writes through) and `DurableCatalog` (replay) both use them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .item_index import ItemIndex
from .item_store import Item, ItemStore

if TYPE_CHECKING:
    from .wal import DurableCatalog

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
