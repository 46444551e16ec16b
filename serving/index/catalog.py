"""The catalogue's one write path: id allocation, the order a write is applied in, and its log entry first.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from .item_index import ItemIndex
from .item_store import Item, ItemStore

if TYPE_CHECKING:
    from .wal import DurableCatalog

MAX_ITEM_ID = 2**63 - 1  # int64: the largest id FAISS and the protocol can hold
OPERATIONS = ("upsert", "delete")


class IdsExhausted(ValueError):
    """No id is left above the largest in use: new items must be given ids explicitly."""


class NotDurable(OSError):
    """The write could not be logged (fsynced); nothing was applied."""


def advance_next_id(next_id: int, ids: Sequence[int] | np.ndarray) -> int:
    """The next id to assign once `ids` exist: ids are never reused, not even after a delete or a restart."""
    return max(int(next_id), max((int(i) for i in ids), default=0) + 1)


def first_free_id(index: ItemIndex, store: ItemStore, floor: int = 0) -> int:
    """The next id for a catalogue opened as it is (`floor`: a next id recorded earlier, e.g. in a snapshot)."""
    return advance_next_id(floor, [int(i) for i in index.ids()[-1:]] + [int(i) for i in store.ids()[-1:]])


def allocate(next_id: int, requested: Sequence[int]) -> list[int]:
    """Final ids of a batch: a requested id > 0 is kept, a 0 gets the next free id above every id in the batch."""
    start = advance_next_id(next_id, [i for i in requested if i > 0])
    ids, fresh = [], start
    for i in requested:
        if i > 0:
            ids.append(int(i))
        else:
            ids.append(fresh)
            fresh += 1
    if ids and max(ids) > MAX_ITEM_ID:
        raise IdsExhausted(f"no item id is left above the largest in use ({start - 1}): give the new items ids "
                           "explicitly")
    return ids


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
        self.next_id = first_free_id(index, store, durable.next_id if durable is not None else 0)

    def upsert(self, requested: Sequence[int], vectors: np.ndarray, items: Sequence[tuple[str, dict[str, str]]]
               ) -> list[int]:
        """Store items (title, attributes) with their vectors; ids 0 in `requested` are assigned. Returns the ids."""
        with self.lock:
            ids = allocate(self.next_id, requested)
            records = [Item(i, title, dict(attributes)) for i, (title, attributes) in zip(ids, items, strict=True)]
            self._log(lambda log: log.log_upsert(ids, vectors, records))
            self.next_id = advance_next_id(self.next_id, ids)
            t0 = time.perf_counter()
            apply_write(self.index, self.store, "upsert", np.asarray(ids, dtype=np.int64), vectors, records)
            self.observe("upsert", time.perf_counter() - t0)
        return ids

    def delete(self, ids: Sequence[int]) -> tuple[int, list[int]]:
        """Remove items; returns (index entries removed, the ids that were not there)."""
        with self.lock:
            missing = [int(i) for i in ids if int(i) not in self.index and int(i) not in self.store]
            self._log(lambda log: log.log_delete(ids))
            t0 = time.perf_counter()
            removed = apply_write(self.index, self.store, "delete", np.asarray(ids, dtype=np.int64))
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
