"""The catalogue: its items (`ItemStore`), what the gateway reads and writes through (`ItemCatalog`, `Catalog`),
and its one write path: row allocation, the order a write is applied in, and its log entry first.

Clients name items by their catalogue ids (keys, strings); the index, the store and the log work on internal
rows. A key in use keeps its row (the item is replaced); a new key gets the next row; an upsert without a key
is given "new-<row>". Rows are never chosen by a client and never reused, so they cannot be exhausted by a
write, and a stale history never names a different item.

Why one: the live gateway and the write-ahead log's replay (below) must leave exactly the same
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

Durable writes (`DurableCatalog`): an append-only write-ahead log replayed over the last good snapshot.

Why: an acknowledged UpsertItems / DeleteItems must survive a crash of the
gateway at any moment, and saving the whole index after every write costs
O(catalogue) per call. Instead every write is appended to a log and fsynced
*before* it is applied and acknowledged; the index is saved as a snapshot only
now and then (compaction), after which the log it covers is dropped.

State folder (`state_dir`, beside the exported base snapshot, which is never modified)::

    snapshot-000000000120/   an ItemIndex snapshot (index + store + manifest with sha256 of every file);
                             its manifest records wal_seq (the last record it contains), wal_base and next_id
    snapshot-000000000240/   the newest; the two most recent are kept
    wal-000000000121.log     log segments, named by the sequence number of their first record
    wal-000000000241.log     the segment being appended to

Record framing (little-endian): u32 payload length, u32 crc32 of the payload,
payload = u32 JSON length, UTF-8 JSON, raw float32 vectors (upserts only).
JSON: {"seq", "op": "upsert" | "delete", "ids": [...], "items": [{"key", "title", "attributes"}]} (ids are
internal rows, keys the catalogue ids; a record without keys, written before they existed, replays with the
store's default key).
The first record of a segment is a header {"op": "header", "format", "start_seq", "dim", "base"}.
No pickle anywhere: JSON and raw float32 only.

Recovery (`DurableCatalog.open`):
  1. read every segment; records must be numbered without gaps. A bad record at the
     end of the newest segment (length past the end of file, or a checksum mismatch
     with nothing but that record or zeros after it) is a torn write from a crash:
     it was never acknowledged, so it is cut off with a warning. A bad record with
     valid data after it is corruption: start-up is refused (silently dropping
     acknowledged writes is never an option);
  2. try the snapshots newest first, then the base snapshot (sequence 0): a snapshot
     is used only when its checksums verify and the log still holds every record
     after it; a corrupt one is refused with a warning naming the problem, and the
     previous one is used instead;
  3. replay the records after the chosen snapshot, and start a fresh segment.
Compaction (every `compact_every` records, and at shutdown): a new segment is
started, the state is saved as a new snapshot (atomic: written beside, fsynced,
renamed), snapshots beyond the last two are deleted, and so are the segments the
older kept snapshot already contains, so falling back to it is always possible.
A full disk: an append that cannot be fsynced is taken back and refused (the
caller answers UNAVAILABLE, nothing applied); a segment that cannot be created is
removed and appends go on in the current one; a failed compaction is retried
after a back-off (COMPACT_BACKOFF_S doubling up to COMPACT_BACKOFF_MAX_S), not on
every later write, so a full disk costs no snapshot attempt per call. Reads never
touch the disk. Once space returns, writes and compaction resume by themselves.

The state folder is tied to its base snapshot (`wal_base` = sha256 of the base
manifest): a state written over another export is refused, never replayed onto it.
One process at a time owns it: `LOCK` is held with flock(2) while the catalogue is
open (the kernel drops it when the process dies, kill -9 included), so a second
gateway pointed at the same folder is refused instead of interleaving its log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmrec.files import fsync_path, make_dirs_durable, sha256_file, write_json_atomic

from .item_index import RESERVED, ItemIndex
from .snapshot import MANIFEST_FILE, STORE_FILE, IndexMismatch, SnapshotError

logger = logging.getLogger("llmrec.serving.index")

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
        """Snapshot the state and drop the log it covers; None when not durable or unchanged."""
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


# ---------------------------------------------------------------------------------------------- the write-ahead log

WAL_FORMAT = "llmrec.wal/1"
FRAME = struct.Struct("<II")  # payload length, crc32(payload)
JSON_LEN = struct.Struct("<I")
MAX_RECORD_BYTES = 256 << 20  # a larger length field can only be garbage
SEGMENT_RE = re.compile(r"^wal-(\d{12})\.log$")
SNAPSHOT_RE = re.compile(r"^snapshot-(\d{12})$")
KEEP_SNAPSHOTS = 2
COMPACT_BACKOFF_S = 5.0  # wait after a failed compaction, doubled for each further failure in a row
COMPACT_BACKOFF_MAX_S = 300.0
STATE_KEYS = ("wal_seq", "wal_base", "next_id")


class WalError(SnapshotError):
    """The log cannot be trusted (corrupt in the middle, a gap, another base): start-up is refused."""


# ---------------------------------------------------------------------------------------------- records
@dataclass
class WalRecord:
    seq: int
    op: str  # "upsert" | "delete"
    ids: np.ndarray  # int64
    vectors: np.ndarray | None = None  # float32 [n, dim] (upserts)
    items: list[Item] = field(default_factory=list)  # (upserts)


def encode_payload(obj: dict[str, Any], vectors: np.ndarray | None = None) -> bytes:
    """u32 JSON length + JSON + raw little-endian float32 vectors."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw = b"" if vectors is None else np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    return JSON_LEN.pack(len(text)) + text + raw


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes, dim: int | None) -> tuple[dict[str, Any], np.ndarray | None]:
    (size,) = JSON_LEN.unpack_from(payload, 0)
    obj = json.loads(payload[4:4 + size].decode("utf-8"))
    rest = payload[4 + size:]
    vectors = None
    if rest:
        if not dim:
            raise ValueError("vectors in a record but no dimension in the segment header")
        vectors = np.frombuffer(rest, dtype="<f4").reshape(-1, dim).astype(np.float32)
    return obj, vectors


def _record(obj: dict[str, Any], vectors: np.ndarray | None) -> WalRecord:
    ids = np.asarray(obj["ids"], dtype=np.int64)
    items = [Item(int(i), str(e["title"]), dict(e.get("attributes") or {}), str(e.get("key") or ""))
             for i, e in zip(ids.tolist(), obj.get("items") or [], strict=False)]
    if obj["op"] == "upsert" and (vectors is None or len(vectors) != len(ids) or len(items) != len(ids)):
        raise ValueError(f"upsert record {obj.get('seq')}: {len(ids)} ids but "
                         f"{0 if vectors is None else len(vectors)} vectors and {len(items)} items")
    return WalRecord(int(obj["seq"]), str(obj["op"]), ids, vectors, items)


@dataclass
class Segment:
    path: Path
    start_seq: int
    header: dict[str, Any]
    records: list[WalRecord]
    valid_bytes: int  # where the last good record ends
    torn_bytes: int  # bytes after it that were cut off as a torn write (0 = none)


def _segment_start(path: Path) -> int:
    match = SEGMENT_RE.match(path.name)
    if match is None:
        raise WalError(f"{path}: not a write-ahead log segment name")
    return int(match.group(1))


def read_segment(path: Path, is_last: bool) -> Segment:
    """Parse one segment; a torn tail is tolerated only in the newest segment (see the module docstring)."""
    data = path.read_bytes()
    pos = 0
    header: dict[str, Any] | None = None
    records: list[WalRecord] = []
    while pos < len(data):
        problem = None
        end = pos
        if len(data) - pos < FRAME.size:
            problem = f"{len(data) - pos} bytes, shorter than a record header"
            end = len(data)
        else:
            length, crc = FRAME.unpack_from(data, pos)
            end = pos + FRAME.size + length
            if length == 0 or length > MAX_RECORD_BYTES:
                problem = f"impossible record length {length}"
                end = len(data)
            elif end > len(data):
                problem = f"record of {length} bytes runs past the end of the file"
                end = len(data)
            elif zlib.crc32(data[pos + FRAME.size:end]) != crc:
                problem = "checksum mismatch"
        if problem is None:
            payload = data[pos + FRAME.size:end]
            try:
                obj, vectors = decode_payload(payload, header.get("dim") if header else None)
                if header is None:
                    if obj.get("op") != "header" or obj.get("format") != WAL_FORMAT:
                        raise ValueError(f"first record is not a {WAL_FORMAT} header")
                    header = obj
                else:
                    records.append(_record(obj, vectors))
            except (ValueError, KeyError, TypeError) as exc:
                # the checksum matched, so this is not a torn write: the writer or the file is broken
                raise WalError(f"write-ahead log {path}: record at byte {pos} is unreadable: {exc}") from None
            pos = end
            continue
        rest_is_garbage = end >= len(data) or not data[end:].strip(b"\0")
        if is_last and rest_is_garbage:
            if header is None:  # a crash while the segment was being created: it holds no write
                return Segment(path, _segment_start(path), {}, [], 0, len(data))
            return Segment(path, int(header["start_seq"]), header, records, pos, len(data) - pos)
        raise WalError(f"write-ahead log {path} is corrupt at byte {pos} ({problem}) and valid data follows: "
                       "acknowledged writes may be damaged; restore the folder from a backup or move it away "
                       "to start from the last snapshot")
    if header is None:
        if is_last:  # created, then a crash before its header reached the disk
            return Segment(path, _segment_start(path), {}, [], 0, 0)
        raise WalError(f"write-ahead log {path} is empty (no header)")
    return Segment(path, int(header["start_seq"]), header, records, pos, 0)


# ---------------------------------------------------------------------------------------------- the log
class WriteAheadLog:
    """Appends records to the newest segment of `directory`; every append is fsynced before it returns."""

    def __init__(self, directory: Path, base: str, dim: int, next_seq: int) -> None:
        self.directory = Path(directory)
        self.base = base
        self.dim = int(dim)
        self.next_seq = int(next_seq)
        self._file: Any = None
        self.path: Path | None = None
        self.broken: str | None = None  # set when an append failed and could not be undone (yet)
        self._good_offset = 0  # where the segment's valid records end while broken
        self.open_segment()

    def open_segment(self) -> None:
        """Start a new segment whose first record will be `next_seq`, then close the current one.

        When the new file cannot be written (a full disk) it is removed and OSError raised: appends go on in
        the current segment, which stays valid. A current segment that holds no record yet is kept as it is."""
        if self._file is not None:
            self._repair()  # a segment is never left with a partial record at its end
        path = self.directory / f"wal-{self.next_seq:012d}.log"
        if path == self.path and self._file is not None:
            return  # nothing was appended since it was started: it already begins at next_seq
        header = {"op": "header", "format": WAL_FORMAT, "start_seq": self.next_seq, "dim": self.dim,
                  "base": self.base}
        handle = None
        try:
            handle = path.open("wb")
            handle.write(frame(encode_payload(header)))
            handle.flush()
            os.fsync(handle.fileno())
            fsync_path(self.directory)  # the new file's name is durable too
        except OSError:
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            raise
        self.close()
        self._file, self.path = handle, path

    def append(self, obj: dict[str, Any], vectors: np.ndarray | None = None) -> int:
        """Write one record and fsync it; returns its sequence number. OSError leaves the log as it was.

        When taking a failed record back fails too (the disk refuses even that), the log is `broken`: every
        append first retries the undo and is refused until it succeeds, so no record ever follows garbage."""
        self._repair()
        seq = self.next_seq
        data = frame(encode_payload({"seq": seq, **obj}, vectors))
        offset = self._file.tell()
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            try:  # undo a partial record so that later appends do not follow garbage
                self._truncate(offset)
            except OSError as again:
                self.broken, self._good_offset = f"{exc}; the undo failed too: {again}", offset
            raise
        self.next_seq = seq + 1
        return seq

    def _repair(self) -> None:
        """A broken log: take the partial record back now, or raise OSError (nothing may follow it)."""
        if self.broken is None:
            return
        try:
            self._truncate(self._good_offset)
        except OSError as again:
            raise OSError(f"the write-ahead log is unusable since an earlier failure ({self.broken}); taking the "
                          f"partial record back still fails: {again}") from None
        self.broken = None

    def _truncate(self, offset: int) -> None:
        self._file.seek(offset)
        self._file.truncate(offset)
        self._file.flush()
        os.fsync(self._file.fileno())

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None


# ---------------------------------------------------------------------------------------------- catalogue
LOCK_FILE = "LOCK"


def lock_state(state_dir: Path) -> Any:
    """Hold the state folder's lock (an open file; closing it releases the lock); WalError when taken."""
    handle = (state_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise WalError(f"state folder {state_dir} is in use by another process (pid {owner}): one gateway per "
                       "state_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def base_identity(base_dir: Path) -> str:
    """sha256 of the base snapshot's manifest (which holds the sha256 of each of its files)."""
    path = Path(base_dir) / MANIFEST_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise SnapshotError(f"index snapshot {base_dir}: {MANIFEST_FILE} cannot be read ({exc.strerror})") from None


def _load_snapshot(directory: Path) -> tuple[ItemIndex, ItemStore, dict[str, Any]]:
    index = ItemIndex.load(directory)
    store = ItemStore.load(directory)
    manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    return index, store, manifest


@dataclass
class RecoveryReport:
    """What start-up did, for the log and the tests."""

    snapshot: str  # the folder used
    snapshot_seq: int
    replayed: int  # records applied over it
    last_seq: int
    refused: list[str] = field(default_factory=list)  # snapshots refused, with the reason
    torn_bytes: int = 0  # bytes of a torn last record cut off


class DurableCatalog:
    """Index + store + write-ahead log + compaction, recovered at open; written through serving/index/catalog.py's
    Catalog, which serialises writes (one lock around log + apply)."""

    def __init__(self, index: ItemIndex, store: ItemStore, extra: dict[str, Any], wal: WriteAheadLog,
                 state_dir: Path, base: str, snapshot_seq: int, next_id: int, compact_every: int,
                 report: RecoveryReport) -> None:
        self.index = index
        self.store = store
        self.extra = extra
        self.wal = wal
        self.state_dir = state_dir
        self.base = base
        self.snapshot_seq = snapshot_seq
        self.next_id = next_id
        self.compact_every = int(compact_every)
        self.report = report
        self._closed = False
        self._lock: Any = None  # the state folder's flock, held from open() to close()
        self.compactions = 0
        self.failed_compactions = 0  # in a row; reset by a compaction that succeeds
        self._retry_at = 0.0  # monotonic time before which a failed compaction is not tried again

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, base_dir: str | Path, state_dir: str | Path, compact_every: int = 1000,
             reserved: frozenset[str] = frozenset()) -> DurableCatalog:
        """Recover the catalogue (see the module docstring); WalError / SnapshotError when it cannot be trusted.

        `reserved`: more manifest keys that are not provenance (left out of `extra`, the fields carried over).
        """
        base_dir, state_dir = Path(base_dir), Path(state_dir)
        base = base_identity(base_dir)
        make_dirs_durable(state_dir)
        lock = lock_state(state_dir)
        try:
            catalog = cls._recover(base_dir, state_dir, base, compact_every, reserved)
        except BaseException:
            lock.close()
            raise
        catalog._lock = lock
        return catalog

    @classmethod
    def _recover(cls, base_dir: Path, state_dir: Path, base: str, compact_every: int,
                 reserved: frozenset[str]) -> DurableCatalog:
        for leftover in state_dir.glob(".snapshot-*"):  # an interrupted compaction's temporary folder
            shutil.rmtree(leftover, ignore_errors=True)
        segment_paths = sorted((p for p in state_dir.iterdir() if SEGMENT_RE.match(p.name)),
                               key=lambda p: int(SEGMENT_RE.match(p.name).group(1)))
        segments = [read_segment(p, is_last=(i == len(segment_paths) - 1)) for i, p in enumerate(segment_paths)]
        records: list[WalRecord] = []
        for segment in segments:
            if segment.header and segment.header.get("base") != base:
                raise WalError(f"write-ahead log {segment.path} belongs to another base snapshot than {base_dir}: "
                               f"this state folder was written over a different export; move {state_dir} away "
                               "or point `index` at the snapshot it was written over")
            expected = records[-1].seq + 1 if records else segment.start_seq
            if segment.start_seq != expected:
                raise WalError(f"write-ahead log {segment.path} starts at record {segment.start_seq}, "
                               f"expected {expected}: a segment is missing")
            for record in segment.records:
                if record.seq != expected:
                    raise WalError(f"write-ahead log {segment.path}: record {record.seq} where {expected} was "
                                   "expected")
                records.append(record)
                expected += 1
        torn = segments[-1].torn_bytes if segments else 0
        if torn:
            logger.warning("write-ahead log %s: a torn last record (%d bytes, never acknowledged) is ignored",
                           segments[-1].path, torn)
        first_seq = records[0].seq if records else None
        # the newest write the log knows of: its last record, or at least the one before its newest segment
        ends = [records[-1].seq] if records else []
        ends += [segment.start_seq - 1 for segment in segments[-1:]]
        log_end = max(ends, default=0)
        snapshots = sorted(((int(m.group(1)), p) for p in state_dir.iterdir()
                            if (m := SNAPSHOT_RE.match(p.name)) and p.is_dir()), reverse=True)
        candidates = [*snapshots, (0, base_dir)]
        refused: list[str] = []
        chosen = None
        for seq, folder in candidates:
            if seq < log_end and (first_seq is None or first_seq > seq + 1):
                refused.append(f"{folder}: the log no longer holds the records after it "
                               f"({seq + 1}..{log_end if first_seq is None else first_seq - 1})")
                continue
            try:
                index, store, manifest = _load_snapshot(folder)
            except (IndexMismatch, OSError, ValueError) as exc:
                refused.append(f"{folder}: {exc}")
                logger.warning("snapshot refused, trying the previous one: %s: %s", folder, exc)
                continue
            if folder != base_dir and manifest.get("wal_base") != base:
                refused.append(f"{folder}: written over another base snapshot")
                continue
            chosen = (seq, folder, index, store, manifest)
            break
        if chosen is None:
            raise WalError(f"no usable snapshot for {state_dir}: " + "; ".join(refused))
        seq, folder, index, store, manifest = chosen
        extra = {k: v for k, v in manifest.items() if k not in reserved | RESERVED and k not in STATE_KEYS}
        next_id = int(manifest.get("next_id") or 0)
        replay = [r for r in records if r.seq > seq]
        for record in replay:  # the live path's own apply (serving/index/catalog.py)
            if record.op not in OPERATIONS:
                raise WalError(f"record {record.seq}: unknown operation {record.op!r}")
            apply_write(index, store, record.op, record.ids, record.vectors, record.items)
            if record.op == "upsert":
                next_id = advance_next_id(next_id, record.ids)
        next_id = first_free_id(index, store, next_id)
        last_seq = max(log_end, seq)
        if torn:  # cut the torn bytes so the file reads cleanly from now on
            with segments[-1].path.open("r+b") as handle:
                handle.truncate(segments[-1].valid_bytes)
                os.fsync(handle.fileno())
        wal = WriteAheadLog(state_dir, base, index.dim, last_seq + 1)
        report = RecoveryReport(str(folder), seq, len(replay), last_seq, refused, torn)
        logger.info("catalogue recovered: snapshot %s (record %d) + %d replayed records, %d items",
                    folder, seq, len(replay), len(index))
        return cls(index, store, extra, wal, state_dir, base, seq, next_id, compact_every, report)

    # ------------------------------------------------------------------ writes (the caller serialises them)
    def log_upsert(self, ids: Sequence[int], vectors: np.ndarray, items: Sequence[Item]) -> int:
        """Append an upsert (final ids, vectors, titles) and fsync it, before the caller applies it."""
        obj = {"op": "upsert", "ids": [int(i) for i in ids],
               "items": [{"key": item.key, "title": item.title, "attributes": dict(item.attributes)}
                         for item in items]}
        seq = self.wal.append(obj, np.asarray(vectors, dtype=np.float32))
        self.next_id = advance_next_id(self.next_id, ids)
        return seq

    def log_delete(self, ids: Sequence[int]) -> int:
        return self.wal.append({"op": "delete", "ids": [int(i) for i in ids]})

    def needs_compaction(self) -> bool:
        """Enough records since the last snapshot, and not backing off from a failed compaction."""
        return (self.wal.last_seq - self.snapshot_seq >= self.compact_every
                and time.monotonic() >= self._retry_at)

    def compact(self, force: bool = False) -> Path | None:
        """Save the state as a new snapshot and drop what the older kept snapshot already holds.

        The caller holds its write lock (no write in between). Returns the new snapshot, None when nothing changed
        or while backing off from a failed compaction (unless `force`, as at shutdown). Raises what the disk
        answered (OSError; faiss's RuntimeError): the log still holds every write, and the next attempt waits
        (module docstring)."""
        seq = self.wal.last_seq
        if seq == self.snapshot_seq or (not force and time.monotonic() < self._retry_at):
            return None
        folder = self.state_dir / f"snapshot-{seq:012d}"
        try:
            self.wal.open_segment()  # records after `seq` go to a segment of their own
            self.index.save(folder, extra={**self.extra, "wal_seq": seq, "wal_base": self.base,
                                           "next_id": self.next_id}, store=self.store)
        except Exception as exc:  # OSError, or faiss's RuntimeError for a write that failed: back off either way
            self.failed_compactions += 1
            delay = min(COMPACT_BACKOFF_MAX_S, COMPACT_BACKOFF_S * 2 ** (self.failed_compactions - 1))
            self._retry_at = time.monotonic() + delay
            logger.warning("catalogue compaction failed (%s); the log keeps every write, next attempt in %.0f s",
                           exc, delay)
            raise
        self.failed_compactions, self._retry_at = 0, 0.0
        self.snapshot_seq = seq
        self.compactions += 1
        self._prune()
        logger.info("catalogue compacted into %s (%d items)", folder, len(self.index))
        return folder

    def _prune(self) -> None:
        snapshots = sorted((int(m.group(1)), p) for p in self.state_dir.iterdir()
                           if (m := SNAPSHOT_RE.match(p.name)) and p.is_dir())
        kept = snapshots[-KEEP_SNAPSHOTS:]
        for _, folder in snapshots[:-KEEP_SNAPSHOTS]:
            shutil.rmtree(folder, ignore_errors=True)
        oldest_kept = kept[0][0] if len(kept) == KEEP_SNAPSHOTS else 0
        segments = sorted((int(m.group(1)), p) for p in self.state_dir.iterdir() if (m := SEGMENT_RE.match(p.name)))
        for (_, path), (next_start, _) in zip(segments, segments[1:], strict=False):
            if next_start - 1 <= oldest_kept:  # every record of this segment is in the older kept snapshot
                path.unlink(missing_ok=True)
        fsync_path(self.state_dir)

    def close(self, compact: bool = True) -> None:
        """Compact (when asked and something changed) and close the log; safe to call twice."""
        if self._closed:
            return
        try:
            if compact and self.wal.broken is None:
                self.compact(force=True)
        finally:
            self.wal.close()
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            self._closed = True
