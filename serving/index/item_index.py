"""ItemIndex: FAISS top-k over the SRS item vectors, with stable ids, safe concurrent updates and snapshots.

How ids reach FAISS. Every stored vector gets a *slot* (0, 1, 2, ... never reused
until the next rebuild); FAISS holds slots as its labels and this class maps
slot -> public id and id -> slot. That one mechanism serves every index type:
  - Flat (and other indexes that support `remove_ids`) sit under `IndexIDMap`
    (FAISS renumbers its storage on removal; the map keeps the labels); IVF
    indexes store labels natively and are used as they are (`IndexIDMap` over
    IVF would mislabel after a removal: IVF does not renumber);
  - HNSW cannot remove (`remove_ids` is not implemented in FAISS): a deleted or
    replaced item's slot becomes a *tombstone*, skipped at search time with an
    `IDSelectorBitmap` of live slots passed in the search parameters (so the k
    results are k live items, not k minus the tombstones).
When dead slots outnumber live ones (and exceed 1,024) the index is rebuilt
from the kept vectors, off the readers' lock, then swapped in; trained indexes
(IVF) keep their training. `compact()` forces it.

Why keep the exact vectors beside FAISS: `vectors(ids)` feeds the user encoder
(history item ids -> item vectors), which must read exactly the table the SRS
was trained with, whatever compression the index uses (IVF-PQ, SQ8 are lossy);
and rebuilds need them. Cost: one extra float32 copy of the table.

Concurrency: a readers-writer lock. Searches, `vectors` and `ids` share it;
upserts, deletes and the rebuild swap take it alone, so a reader never sees a
half-applied update and, once `delete` has returned, no search returns the
deleted id. Writers are serialized by a second mutex, which also lets `save`
and a rebuild read a stable state while searches continue. FAISS releases the
GIL during search, so concurrent searches run in parallel on CPU.

GPU: with `use_gpu` (default: when FAISS sees a GPU), searches run on a GPU copy
made with `index_cpu_to_gpu`; the CPU index stays the source of truth for
updates and snapshots, and the GPU copy is refreshed at the first search after a
write (bursts of writes cost one copy). GPU indexes are not safe for concurrent
use, so on GPU searches take the lock exclusively. HNSW has no GPU version and
stays on CPU (logged). Searches needing k > 2,048 (the GPU limit) run on CPU.

Sharding (`shards` > 1): the catalogue is split by public id, item `id` living in
shard `id % shards`; each shard is its own FAISS index built from the same
factory string (IVF shards share the first shard's training, so sharded IVF
probes exactly the lists unsharded IVF probes), and a `faiss.IndexShards`
(threaded: one worker per shard) searches them all and merges the per-shard
top-k by score. Slots stay global (one slot table, one vector table), so
`vectors`, `ids`, tombstones and snapshots work as with one shard; only adds
and removals are routed to the id's shard. Searches filtered by the tombstone
bitmap (HNSW after deletes) visit the shards one after another: FAISS's
IndexIDMap writes its id translation into the shared search parameters, which
parallel shards would race on. A snapshot holds one FAISS file per
shard (`index.shard-000.faiss`, ...; `index.faiss` when unsharded) and the
manifest records `shards`. Sharding pays when one index is too large for one
device's memory (one shard per GPU) or when a search should use several cores
at once; on one CPU box FAISS already parallelises a batch of queries, so it
mostly splits memory, not work (serving/index/SCALING.md has the arithmetic).
On GPU every shard is copied to GPU `shard % num_gpus` (several GPUs: one
shard per GPU when shards == num_gpus) and a GPU-side `IndexShards` merges
them. That path is written for FAISS GPU builds but has only been checked on
CPU (tests/serving/test_serving_index_shards.py runs it against a CPU stand-in for the
GPU copy). `faiss.index_cpu_to_gpu_multiple` with
`GpuMultipleClonerOptions(shard=True)` is not used: it splits one CPU index by
position (Flat) or label % n (IVF) and cannot clone an `IndexShards`, so it
would lose the routing by id this class keeps for updates.

Scores are "higher is better": the inner product, or minus the squared L2
distance for metric "l2". Rows with fewer than k results are padded with id -1
and score -inf.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .snapshot import (
    STORE_FILE,
    IndexMismatch,
    SnapshotError,
    check_expected,
    read_manifest,
    verify_files,
    write_snapshot,
)

__all__ = ["FORMAT", "METRICS", "IndexMismatch", "ItemIndex", "SnapshotError"]

logger = logging.getLogger("llmrec.serving.index")

FORMAT = "llmrec.index/1"
INDEX_FILE = "index.faiss"
SHARD_FILE = "index.shard-{:03d}.faiss"  # shard s of a sharded snapshot
MAX_SHARDS = 1024
SLOTS_FILE = "slots.npy"
VECTORS_FILE = "vectors.npy"
METRICS = {"inner_product": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
RESERVED = frozenset({"format", "dim", "metric", "factory", "count", "slots", "search", "files", "created",
                      "faiss_version", "shards"})
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
GPU_MAX_K = 2048
REBUILD_MIN_DEAD = 1024


class _RWLock:
    """Many readers or one writer; a waiting writer blocks new readers so updates are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_ids(ids: Any, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_shards(shards: Any) -> int:
    """`shards` as an int; ValueError naming the field when it is not an integer in [1, MAX_SHARDS]."""
    if isinstance(shards, bool) or not isinstance(shards, int | np.integer) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be an integer from 1 to {MAX_SHARDS}, got {shards!r}")
    return int(shards)


def shard_files(shards: int) -> tuple[str, ...]:
    """The FAISS file names of a snapshot with this many shards."""
    return (INDEX_FILE,) if shards == 1 else tuple(SHARD_FILE.format(s) for s in range(shards))


def _names(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


class ItemIndex:
    """Top-k item search over (public id, vector) pairs; see the module docstring for the design."""

    def __init__(self, dim: int, metric: str = "inner_product", factory: str = "Flat",
                 use_gpu: bool | None = None, shards: int = 1) -> None:
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if factory.replace(" ", "").upper().startswith("IDMAP"):
            raise ValueError(f"factory {factory!r}: ids are managed by ItemIndex; pass the factory without IDMap")
        self.dim = int(dim)
        self.metric = metric
        self.factory = factory
        self.shards = check_shards(shards)
        self.nprobe = DEFAULT_NPROBE
        self.ef_search = DEFAULT_EF_SEARCH
        self._parts = [self._new_index() for _ in range(self.shards)]  # shard s holds the ids with id % shards == s
        self._index = self._combine(self._parts)  # what searches run on: the one part, or an IndexShards over all
        self._removable = self._supports_remove(self._parts[0])
        self._n_slots = 0
        self._slot_ids = np.empty(0, dtype=np.int64)  # slot -> public id, -1 = dead
        self._vectors = np.empty((0, self.dim), dtype=np.float32)  # slot -> exact vector
        self._slot_of: dict[int, int] = {}  # public id -> slot
        self._dead = 0
        self._live_bitmap: np.ndarray | None = None  # tombstone filter (non-removable indexes only)
        self._rw = _RWLock()
        self._write_mutex = threading.Lock()
        if use_gpu is None:
            use_gpu = gpu_available()
        elif use_gpu and not gpu_available():
            raise RuntimeError("use_gpu=True, but this FAISS build has no GPU support or sees no GPU")
        if use_gpu and not self._removable:
            logger.warning("index %r has no GPU version in FAISS; it stays on CPU", factory)
            use_gpu = False
        self.use_gpu = bool(use_gpu)
        devices = min(self.shards, faiss.get_num_gpus()) if self.use_gpu else 0
        self._gpu_resources: list[Any] = [faiss.StandardGpuResources() for _ in range(devices)]
        self._gpu_index: Any = None
        self._gpu_parts: list[Any] = []  # the per-shard GPU copies behind a sharded GPU index (kept alive here)

    # ----------------------------------------------------------------- construction
    def _new_index(self) -> faiss.Index:
        """An empty index for the factory: IVF as is (it stores labels), anything else under IndexIDMap."""
        try:
            core = faiss.index_factory(self.dim, self.factory, METRICS[self.metric])
        except RuntimeError as exc:
            raise ValueError(f"FAISS cannot build factory {self.factory!r} for dim {self.dim}: "
                             f"{str(exc).strip().splitlines()[-1]}") from exc
        if faiss.try_extract_index_ivf(core) is not None:
            return core
        return faiss.index_factory(self.dim, f"IDMap,{self.factory}", METRICS[self.metric])

    def _combine(self, parts: list[faiss.Index], threaded: bool = True) -> faiss.Index:
        """The index searches run on: the only part, or an IndexShards merging every part's top-k (threaded: one
        worker thread per part)."""
        if len(parts) == 1:
            return parts[0]
        combined = faiss.IndexShards(self.dim, threaded, False)  # labels kept as they are (global slots)
        for part in parts:
            combined.add_shard(part)  # the metric is taken from the parts: the merge sorts by it
        combined.syncWithSubIndexes()
        return combined

    def _train_parts(self, parts: list[faiss.Index], vectors: np.ndarray) -> list[faiss.Index]:
        """Train the first part on `vectors`; the other (empty) parts become copies of it, so every shard has the
        same coarse quantizer and codebooks. Returns the new list of parts."""
        self._train(parts[0], vectors, self.factory)
        return [parts[0], *(faiss.clone_index(parts[0]) for _ in parts[1:])]

    def _add(self, parts: list[faiss.Index], combined: faiss.Index, ids: np.ndarray, vectors: np.ndarray,
             slots: np.ndarray) -> None:
        """Add `vectors` under labels `slots` to the parts their `ids` route to."""
        if len(parts) == 1:
            parts[0].add_with_ids(vectors, slots)
            return
        route = ids % len(parts)
        for s in np.unique(route).tolist():
            rows = route == s
            parts[s].add_with_ids(np.ascontiguousarray(vectors[rows]), np.ascontiguousarray(slots[rows]))
        combined.syncWithSubIndexes()

    def _remove(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """Remove labels `slots` (of items `ids`) from the parts holding them."""
        if self.shards == 1:
            self._parts[0].remove_ids(faiss.IDSelectorBatch(slots))
            return
        route = ids % self.shards
        for s in np.unique(route).tolist():
            self._parts[s].remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(slots[route == s])))
        self._index.syncWithSubIndexes()

    @staticmethod
    def _supports_remove(index: faiss.Index) -> bool:
        try:
            index.remove_ids(faiss.IDSelectorBatch(np.zeros(0, dtype=np.int64)))
            return True
        except RuntimeError:
            return False

    @staticmethod
    def _train(index: faiss.Index, vectors: np.ndarray, factory: str) -> None:
        try:
            index.train(vectors)
        except RuntimeError as exc:
            raise ValueError(f"factory {factory!r} needs training and {len(vectors)} vectors are not enough "
                             f"(IVF needs at least nlist, ideally 39 x nlist): "
                             f"{str(exc).strip().splitlines()[-1]}") from exc

    # ----------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item_id: object) -> bool:
        try:
            return int(item_id) in self._slot_of  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    @property
    def is_trained(self) -> bool:
        return bool(self._parts[0].is_trained)

    @property
    def on_gpu(self) -> bool:
        return self.use_gpu

    def describe(self) -> dict[str, Any]:
        """Counts and settings for health and metrics endpoints."""
        return {"dim": self.dim, "metric": self.metric, "factory": self.factory, "shards": self.shards,
                "count": len(self),
                "tombstones": self._dead, "slots": self._n_slots, "on_gpu": self.use_gpu,
                "shard_entries": [int(part.ntotal) for part in self._parts],  # FAISS entries per shard (+ tombstones)
                "trained": self.is_trained, "nprobe": self.nprobe, "ef_search": self.ef_search}

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """IVF lists probed per query and HNSW candidate-list size (larger: better recall, slower)."""
        if nprobe is not None:
            if nprobe < 1:
                raise ValueError(f"nprobe must be >= 1, got {nprobe}")
            self.nprobe = int(nprobe)
            self._gpu_index = None  # nprobe is set on the GPU copy when it is made
        if ef_search is not None:
            if ef_search < 1:
                raise ValueError(f"ef_search must be >= 1, got {ef_search}")
            self.ef_search = int(ef_search)

    def ids(self) -> np.ndarray:
        """Live public ids, int64, sorted."""
        with self._rw.read():
            slots = self._slot_ids[: self._n_slots]
            return np.sort(slots[slots >= 0])

    def vectors(self, ids: Any) -> np.ndarray:
        """The exact stored vectors of `ids` (float32 [n, dim]); KeyError naming the unknown ids."""
        ids = _as_ids(ids)
        with self._rw.read():
            slot_of = self._slot_of
            slots = np.fromiter((slot_of.get(int(i), -1) for i in ids), dtype=np.int64, count=len(ids))
            if (slots < 0).any():
                raise KeyError(f"unknown item ids: {_names(ids[slots < 0])}")
            return self._vectors[slots].copy()

    # ----------------------------------------------------------------- updates
    def _check_vectors(self, vectors: Any, n: int | None = None) -> np.ndarray:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim or (n is not None and arr.shape[0] != n):
            want = f"[{n if n is not None else 'n'}, {self.dim}]"
            raise ValueError(f"vectors must have shape {want}, got {list(arr.shape)}")
        if not np.isfinite(arr).all():
            raise ValueError("vectors hold NaN or infinite values")
        return arr

    def train(self, vectors: Any) -> None:
        """Train an empty index that needs it (IVF, PQ...) on a sample; otherwise the first upsert trains it."""
        arr = self._check_vectors(vectors)
        with self._write_mutex, self._rw.write():
            if self._parts[0].is_trained:
                return
            self._parts = self._train_parts(self._parts, arr)
            self._index = self._combine(self._parts)

    def upsert(self, ids: Any, vectors: Any) -> None:
        """Add items or replace the vectors of existing ids; duplicate ids in one call are refused."""
        ids = _as_ids(ids)
        arr = self._check_vectors(vectors, len(ids))
        if (ids <= 0).any():
            raise ValueError(f"item ids must be > 0 (0 is padding): {_names(ids[ids <= 0])}")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate item ids in one upsert: {_names(uniq[counts > 1])}")
        if not len(ids):
            return
        with self._write_mutex:
            with self._rw.write():
                if not self._parts[0].is_trained:
                    self._parts = self._train_parts(self._parts, arr)
                    self._index = self._combine(self._parts)
                replaced = np.fromiter((self._slot_of.get(int(i), -1) for i in ids), dtype=np.int64, count=len(ids))
                self._kill_slots(replaced[replaced >= 0])
                start = self._n_slots
                self._reserve(start + len(ids))
                slots = np.arange(start, start + len(ids), dtype=np.int64)
                self._slot_ids[slots] = ids
                self._vectors[slots] = arr
                self._n_slots = start + len(ids)
                self._add(self._parts, self._index, ids, arr, slots)
                self._slot_of.update(zip(ids.tolist(), slots.tolist(), strict=True))
                self._after_write()
            self._maybe_rebuild()

    def delete(self, ids: Any) -> int:
        """Remove items; unknown ids are ignored. Returns how many were removed."""
        ids = _as_ids(ids)
        with self._write_mutex:
            with self._rw.write():
                slots = np.fromiter((self._slot_of.get(int(i), -1) for i in np.unique(ids)), dtype=np.int64)
                slots = slots[slots >= 0]
                self._kill_slots(slots)
                self._after_write()
            self._maybe_rebuild()
        return int(len(slots))

    def _reserve(self, n: int) -> None:
        if n <= len(self._slot_ids):
            return
        cap = max(n, 2 * len(self._slot_ids), 1024)
        slot_ids = np.full(cap, -1, dtype=np.int64)
        slot_ids[: self._n_slots] = self._slot_ids[: self._n_slots]
        vectors = np.zeros((cap, self.dim), dtype=np.float32)
        vectors[: self._n_slots] = self._vectors[: self._n_slots]
        self._slot_ids, self._vectors = slot_ids, vectors

    def _kill_slots(self, slots: np.ndarray) -> None:
        """Forget these slots: removed from FAISS when it can, tombstoned otherwise (write lock held)."""
        if not len(slots):
            return
        ids = self._slot_ids[slots].copy()
        for item_id in ids.tolist():
            del self._slot_of[item_id]
        self._slot_ids[slots] = -1
        self._dead += len(slots)
        if self._removable:
            self._remove(ids, slots)

    def _after_write(self) -> None:
        self._gpu_index = None
        self._gpu_parts = []
        if not self._removable and self._dead:
            live = self._slot_ids[: self._n_slots] >= 0
            self._live_bitmap = np.packbits(live, bitorder="little")
        else:
            self._live_bitmap = None

    def _maybe_rebuild(self) -> None:
        if self._dead > max(REBUILD_MIN_DEAD, len(self._slot_of)):
            self._rebuild()

    def compact(self) -> None:
        """Rebuild without dead slots (tombstones and freed slots); searches continue meanwhile."""
        with self._write_mutex:
            self._rebuild()

    def _rebuild(self) -> None:
        """Build a fresh index from the live vectors (write mutex held, readers still served), then swap it in."""
        live = np.flatnonzero(self._slot_ids[: self._n_slots] >= 0)
        live = live[np.argsort(self._slot_ids[live], kind="stable")]
        ids, vectors = self._slot_ids[live].copy(), self._vectors[live].copy()
        if self._removable:
            parts = [faiss.clone_index(part) for part in self._parts]  # keeps IVF training; few entries left to copy
            for part in parts:
                part.reset()
        else:
            parts = [self._new_index() for _ in range(self.shards)]
            if not parts[0].is_trained:
                parts = self._train_parts(parts, vectors)
        index = self._combine(parts)
        slots = np.arange(len(ids), dtype=np.int64)
        if len(ids):
            self._add(parts, index, ids, vectors, slots)
        cap = max(len(ids), 1024)
        slot_ids = np.full(cap, -1, dtype=np.int64)
        slot_ids[: len(ids)] = ids
        table = np.zeros((cap, self.dim), dtype=np.float32)
        table[: len(ids)] = vectors
        with self._rw.write():
            self._parts, self._index, self._slot_ids, self._vectors = parts, index, slot_ids, table
            self._n_slots, self._dead = len(ids), 0
            self._slot_of = dict(zip(ids.tolist(), slots.tolist(), strict=True))
            self._after_write()
        logger.info("item index rebuilt: %d items", len(ids))

    # ----------------------------------------------------------------- search
    def _search_params(self, fetch: int) -> tuple[Any, list[Any]]:
        """SearchParameters for the CPU index (nprobe, efSearch, tombstone filter) and objects to keep alive."""
        keep: list[Any] = []
        sel = None
        if self._live_bitmap is not None:
            bitmap = self._live_bitmap
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # n = bytes, not bits
            keep += [bitmap, sel]
        part = self._parts[0]  # every shard has the same type; IndexShards passes the parameters to each
        ivf = faiss.try_extract_index_ivf(part)
        if ivf is not None:
            params: Any = faiss.SearchParametersIVF(nprobe=min(self.nprobe, ivf.nlist), sel=sel) if sel \
                else faiss.SearchParametersIVF(nprobe=min(self.nprobe, ivf.nlist))
            if isinstance(part, faiss.IndexPreTransform):
                keep.append(params)
                params = faiss.SearchParametersPreTransform(index_params=params)
        elif hasattr(faiss.downcast_index(part.index), "hnsw"):
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
            if sel is not None:
                params.sel = sel
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        keep.append(params)
        return params, keep

    def _gpu_copy(self) -> Any:
        """The GPU copy of the CPU index, made at the first search after a write.

        One shard: the index on GPU 0. Several: shard s on GPU s % len(resources) (one StandardGpuResources per
        GPU used), merged by a GPU-side threaded IndexShards. Only checked on CPU (see the module docstring).
        """
        if self._gpu_index is None:
            ivf = faiss.try_extract_index_ivf(self._parts[0]) is not None
            copies = []
            for s, part in enumerate(self._parts):
                device = s % len(self._gpu_resources)
                copy = faiss.index_cpu_to_gpu(self._gpu_resources[device], device, part)
                if ivf:
                    faiss.GpuParameterSpace().set_index_parameter(copy, "nprobe", self.nprobe)
                copies.append(copy)
            self._gpu_parts = copies
            self._gpu_index = self._combine(copies)
        return self._gpu_index

    def search(self, queries: Any, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids (int64 [B, k]) and scores (float32 [B, k]) per query, best first.

        `exclude[b]` lists ids that query b must not get (e.g. the user's history): the search asks FAISS for
        k + max(len(exclude[b])) results and filters, which is exact for Flat. Short rows are padded with -1/-inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape [batch, {self.dim}], got {list(q.shape)}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = int(k)
        if exclude is not None and len(exclude) != len(q):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(q)} queries")
        excl = [np.zeros(0, np.int64) if e is None else _as_ids(e, "exclude") for e in (exclude or [None] * len(q))]
        extra = max((len(e) for e in excl), default=0)
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if not len(q):
            return out_ids, out_scores
        lock = self._rw.write() if self.use_gpu else self._rw.read()
        with lock:
            live = len(self._slot_of)
            if live == 0:
                return out_ids, out_scores
            fetch = min(k + extra, live)
            if self.use_gpu and fetch <= GPU_MAX_K:
                dist, labels = self._gpu_copy().search(q, fetch)
            else:
                params, keep = self._search_params(fetch)
                index = self._index
                if self.shards > 1 and self._live_bitmap is not None:
                    # IndexIDMap swaps its own id translation into the caller's SearchParameters.sel while it
                    # searches (faiss ScopedSelChange): shards searched in parallel with one parameter object
                    # would race on it (wrong filter, or a crash). A filtered search visits the shards in turn.
                    index = self._combine(self._parts, threaded=False)
                    keep.append(index)
                dist, labels = index.search(q, fetch, params=params)
                del keep
            valid = labels >= 0
            found = np.where(valid, self._slot_ids[np.where(valid, labels, 0)], -1)
        scores = dist if self.metric == "inner_product" else -dist
        for b in range(len(q)):
            row_ok = found[b] >= 0
            if len(excl[b]):
                row_ok &= ~np.isin(found[b], excl[b])
            row_ids, row_scores = found[b][row_ok][:k], scores[b][row_ok][:k]
            out_ids[b, : len(row_ids)] = row_ids
            out_scores[b, : len(row_ids)] = row_scores
        return out_ids, out_scores

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path, extra: dict | None = None, store: Any = None) -> dict:
        """Write an atomic snapshot (index.faiss, or index.shard-NNN.faiss per shard; slots.npy, vectors.npy
        [, store.json], manifest.json).

        `extra` is merged into the manifest (e.g. embedder / user-encoder sha256, dataset key) so that `load`
        can check it against the deployed models; `store` (an ItemStore) is saved into the same snapshot.
        Writers wait while the snapshot is written; searches continue. Returns the manifest.
        """
        extra = dict(extra or {})
        clash = sorted(RESERVED & set(extra))
        if clash:
            raise ValueError(f"extra manifest fields {clash} are reserved")
        with self._write_mutex:
            n = self._n_slots
            count = len(self._slot_of)

            def write_files(folder: Path) -> None:
                for part, name in zip(self._parts, shard_files(self.shards), strict=True):
                    faiss.write_index(part, str(folder / name))
                np.save(folder / SLOTS_FILE, self._slot_ids[:n], allow_pickle=False)
                np.save(folder / VECTORS_FILE, self._vectors[:n], allow_pickle=False)
                if store is not None:
                    store.write_file(folder / STORE_FILE)

            manifest = {
                "format": FORMAT,
                "dim": self.dim,
                "metric": self.metric,
                "factory": self.factory,
                "shards": self.shards,
                "count": count,
                "slots": n,
                "search": {"nprobe": self.nprobe, "ef_search": self.ef_search},
                "faiss_version": faiss.__version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                **extra,
            }
            return write_snapshot(directory, write_files, manifest)

    @classmethod
    def load(cls, directory: str | Path, expect: dict | None = None, use_gpu: bool | None = None) -> ItemIndex:
        """Read a snapshot: IndexMismatch when a field differs from `expect`, SnapshotError when corrupt.

        The shard count is the snapshot's (`shards` in the manifest; 1 when it records none)."""
        directory = Path(directory)
        manifest = read_manifest(directory, FORMAT)
        check_expected(directory, manifest, expect)
        try:
            shards = check_shards(manifest.get("shards", 1))
        except ValueError as exc:
            raise SnapshotError(f"index snapshot {directory}: manifest {exc}") from None
        names = shard_files(shards)
        verify_files(directory, manifest, required=(*names, SLOTS_FILE, VECTORS_FILE))
        try:
            index = cls(int(manifest["dim"]), manifest["metric"], manifest["factory"], use_gpu=use_gpu, shards=shards)
            parts = [faiss.read_index(str(directory / name)) for name in names]
            slot_ids = np.load(directory / SLOTS_FILE, allow_pickle=False)
            vectors = np.load(directory / VECTORS_FILE, allow_pickle=False)
        except (KeyError, ValueError, RuntimeError, OSError) as exc:
            raise SnapshotError(f"index snapshot {directory} cannot be read: {exc}") from exc
        n = int(manifest.get("slots", -1))
        problems = []
        for name, part in zip(names, parts, strict=True):
            if part.d != index.dim or part.metric_type != METRICS[index.metric]:
                problems.append(f"{name} has dim {part.d} / metric {part.metric_type}")
        if slot_ids.dtype != np.int64 or slot_ids.shape != (n,):
            problems.append(f"slots.npy has {slot_ids.dtype} {list(slot_ids.shape)}, expected int64 [{n}]")
        if vectors.dtype != np.float32 or vectors.shape != (n, index.dim):
            problems.append(f"vectors.npy has {vectors.dtype} {list(vectors.shape)}, "
                            f"expected float32 [{n}, {index.dim}]")
        live = slot_ids[slot_ids >= 0] if slot_ids.ndim == 1 else np.empty(0, np.int64)
        if len(live) != manifest.get("count") or len(np.unique(live)) != len(live):
            problems.append(f"{len(live)} live slots for count {manifest.get('count')}")
        removable = cls._supports_remove(parts[0])
        if removable:  # removals are real: shard s holds exactly the live ids routed to it
            held = [int(part.ntotal) for part in parts]
            routed = np.bincount(live % shards, minlength=shards).tolist() if len(live) else [0] * shards
            if held != routed:
                problems.append(f"the FAISS files hold {held} entries, the live ids route {routed} to them "
                                f"(id % {shards})")
        elif sum(int(part.ntotal) for part in parts) != n:  # tombstones stay in FAISS until a rebuild
            problems.append(f"the FAISS files hold {sum(int(part.ntotal) for part in parts)} entries for {n} slots")
        if problems:
            raise SnapshotError(f"index snapshot {directory} is inconsistent: " + "; ".join(problems))
        index._parts = parts
        index._index = index._combine(parts)
        index._removable = removable
        index._n_slots = n
        index._slot_ids = slot_ids.copy()
        index._vectors = np.ascontiguousarray(vectors)
        live_slots = np.flatnonzero(slot_ids >= 0)
        index._slot_of = dict(zip(slot_ids[live_slots].tolist(), live_slots.tolist(), strict=True))
        index._dead = n - len(live_slots)
        search = manifest.get("search") or {}
        index.set_search_params(search.get("nprobe"), search.get("ef_search"))
        index._after_write()
        return index
