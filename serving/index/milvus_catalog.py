"""The catalogue on Milvus: the same reads and writes as `Catalog` (catalog.py), kept by an engine built for
several writers, replicas and shards.

One collection holds every item: the catalogue id (primary key), its vector (FLAT, inner product: the SRS's
score; exact like the embedded Flat index), its title and its attributes (JSON). Any number of gateways may
read and write it: an upsert one gateway acknowledged is seen by every gateway's next call (the collection's
consistency level is Strong), and its durability is Milvus's own (its write-ahead log), not the gateway's.

The primary key is the id's UTF-8 bytes in hex, and the id itself is kept beside it: ids are opaque strings
(quotes, backslashes...), and Milvus looks primary keys up through its expression language, so the key holds
nothing that expression could misread. An item upserted without an id gets "new-<16 hex digits>" (random:
gateways that write at the same time need no shared counter).

Writes land in Milvus's growing segment, which a search scans row by row: measured on Milvus Lite with
1,349 64-d items, a search took ~130 ms over an unflushed collection and ~9 ms once flushed (a count 100 ms
and 2 ms), and it grows by ~0.09 ms per growing row. So the catalogue flushes (seals) the collection after
filling it, and again off the callers' path once FLUSH_EVERY writes have accumulated (the gateway's compaction
hook, `needs_compaction` / `compact`).

Clients: `uri` is a local file for Milvus Lite (the `milvus-lite` package runs the engine in this process;
tests and demos), or `http://host:19530` for a Milvus server (`milvus-lite server`, Milvus standalone or a
cluster, e.g. from its Helm chart; with GPU index types there when a GPU is present).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Hit, Item, MissingItems

MAX_TEXT = 65535  # Milvus's VARCHAR limit (bytes): titles and ids are far below the gateway's own limits
SEARCH_LIMIT = 16384  # Milvus's top-k limit
ASSIGNED_PREFIX = "new-"
FLUSH_EVERY = 128  # written rows (upserts + deletes) after which the gateway's compaction thread flushes


class MilvusError(RuntimeError):
    """The Milvus collection cannot be opened or used as a catalogue; the message says why."""


def primary_key(key: str) -> str:
    return key.encode("utf-8").hex()


@dataclass(frozen=True)
class MilvusSettings:
    uri: str  # a local .db file (Milvus Lite) or http://host:port
    collection: str = "llmrec_items"
    token: str | None = None  # "user:password" or an API key, for a server with authentication


class MilvusCatalog:
    """Items in one Milvus collection, read and written in catalogue ids (the interface of `Catalog`)."""

    durable = None  # no gateway-side log: Milvus persists its writes

    def __init__(self, settings: MilvusSettings, dim: int | None = None) -> None:
        """Open the collection, creating it (for `dim`-d vectors) when it does not exist."""
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self.settings = settings
        self.observe: Callable[[str, float], None] = lambda operation, seconds: None
        self.lock = threading.Lock()  # pymilvus' client is shared by the gateway's threads
        self.provenance: dict[str, Any] = {}  # of the snapshot the collection was filled from (set by who opened it)
        self.unflushed = 0  # rows written since the last flush (this gateway's)
        if "://" not in settings.uri:
            Path(settings.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MilvusClient(settings.uri, token=settings.token or "")
            self.created = False  # True when this client created the collection (and so fills it)
            if not self.client.has_collection(settings.collection):
                if dim is None:
                    raise MilvusError(f"Milvus collection {settings.collection!r} does not exist at {settings.uri}")
                try:
                    self._create(int(dim))
                    self.created = True
                except MilvusException:
                    if not self.client.has_collection(settings.collection):  # not another gateway's creation
                        raise
            self.dim = self._stored_dim()
            self.client.load_collection(settings.collection)  # searchable (a reopened collection starts released)
        except MilvusException as exc:
            raise MilvusError(f"Milvus at {settings.uri}: {exc.message}") from None
        if dim is not None and int(dim) != self.dim:
            raise MilvusError(f"Milvus collection {settings.collection!r} holds {self.dim}-d vectors, the models "
                              f"{dim}-d ones: another deployment's collection")

    def _create(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_TEXT)
        schema.add_field("id", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("title", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("attributes", DataType.JSON)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.settings.collection, schema=schema, index_params=index,
                                      consistency_level="Strong")

    def _stored_dim(self) -> int:
        fields = {f["name"]: f for f in self.client.describe_collection(self.settings.collection)["fields"]}
        if set(fields) != {"pk", "id", "vector", "title", "attributes"}:
            raise MilvusError(f"Milvus collection {self.settings.collection!r} has fields {sorted(fields)}: not an "
                              "llmrec catalogue")
        return int(fields["vector"]["params"]["dim"])

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        rows = self.client.query(self.settings.collection, filter="", output_fields=["count(*)"],
                                 consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def _rows(self, keys: Sequence[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        rows = self.client.get(self.settings.collection, ids=sorted({primary_key(k) for k in keys}),
                               output_fields=fields)
        return {row["id"]: row for row in rows}

    def vectors_of(self, keys: Sequence[str]) -> np.ndarray:
        found = self._rows(keys, ["id", "vector"])
        missing = [key for key in keys if key not in found]
        if missing:
            raise MissingItems(missing)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray([found[key]["vector"] for key in keys], dtype=np.float32)

    def search(self, users: np.ndarray, k: int, exclude: Sequence[Sequence[str]]) -> list[list[Hit]]:
        """Exact inner-product top-k per user; the excluded ids are fetched past and dropped (as ItemIndex does)."""
        excluded = [set(e) for e in exclude]
        limit = min(SEARCH_LIMIT, int(k) + max((len(e) for e in excluded), default=0))
        results = self.client.search(self.settings.collection, data=np.asarray(users, dtype=np.float32).tolist(),
                                     limit=limit, output_fields=["id", "title", "attributes"],
                                     search_params={"metric_type": "IP"}, consistency_level="Strong")
        out = []
        for hits, skip in zip(results, excluded, strict=True):
            row = []
            for hit in hits:
                entity = hit["entity"]
                if entity["id"] in skip:
                    continue
                row.append((Item(0, entity["title"], dict(entity["attributes"] or {}), entity["id"]),
                            float(hit["distance"])))
                if len(row) == k:
                    break
            out.append(row)
        return out

    def items(self, keys: Sequence[str]) -> list[Item | None]:
        found = self._rows(keys, ["id", "title", "attributes"])
        return [Item(0, found[key]["title"], dict(found[key]["attributes"] or {}), key) if key in found else None
                for key in keys]

    # ------------------------------------------------------------------ writes
    def upsert(self, keys: Sequence[str], vectors: np.ndarray, items: Sequence[tuple[str, dict[str, str]]]
               ) -> list[str]:
        final = [key or ASSIGNED_PREFIX + secrets.token_hex(8) for key in keys]
        rows = [{"pk": primary_key(key), "id": key, "vector": vector.tolist(), "title": title,
                 "attributes": dict(attributes)}
                for key, vector, (title, attributes) in zip(final, np.asarray(vectors, dtype=np.float32), items,
                                                            strict=True)]
        t0 = time.perf_counter()
        with self.lock:
            self.client.upsert(self.settings.collection, rows)
            self.unflushed += len(rows)
        self.observe("upsert", time.perf_counter() - t0)
        return final

    def delete(self, keys: Sequence[str]) -> tuple[int, list[str]]:
        t0 = time.perf_counter()
        with self.lock:
            present = set(self._rows(keys, ["id"]))
            if present:
                self.client.delete(self.settings.collection, ids=[primary_key(k) for k in present])
                self.unflushed += len(present)
        self.observe("delete", time.perf_counter() - t0)
        return len(present), [key for key in keys if key not in present]

    def needs_compaction(self) -> bool:
        return self.unflushed >= FLUSH_EVERY  # Milvus merges the sealed segments itself

    def compact(self) -> None:
        """Seal what was written since the last flush, so searches stop scanning it row by row."""
        with self.lock:
            if self.unflushed:
                self.client.flush(self.settings.collection)
                self.unflushed = 0

    def close(self, compact: bool = True) -> None:
        if compact:
            self.compact()
        self.client.close()

    # ------------------------------------------------------------------ loading a catalogue
    def import_items(self, vectors: np.ndarray, items: Sequence[Item], batch: int = 2000) -> None:
        """Write a whole catalogue (e.g. an index snapshot's vectors and items) into the collection."""
        for start in range(0, len(items), batch):
            part = items[start:start + batch]
            self.upsert([i.key for i in part], vectors[start:start + batch], [(i.title, i.attributes) for i in part])
        self.compact()


def open_milvus_catalog(settings: MilvusSettings, snapshot: str | Path | None) -> MilvusCatalog:
    """The Milvus catalogue; a collection that does not exist yet is created and filled from the index
    snapshot (`python -m export.index` output) at `snapshot`, by the one gateway whose create succeeded (an
    emptied collection is never refilled). A fill cut short leaves a partial catalogue: drop the collection and
    start again."""
    from .catalog import ItemStore
    from .item_index import ItemIndex

    try:
        return MilvusCatalog(settings)
    except MilvusError:
        if snapshot is None:
            raise
    index, store = ItemIndex.load(snapshot), ItemStore.load(snapshot)
    catalog = MilvusCatalog(settings, dim=index.dim)
    if catalog.created:  # only the gateway that created it fills it: a later fill could undo acknowledged deletes
        ids = np.asarray([i for i in index.ids() if i in store], dtype=np.int64)
        catalog.import_items(index.vectors(ids), [item for item in store.get(ids) if item is not None])
    return catalog
