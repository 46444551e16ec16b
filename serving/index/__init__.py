"""The item index: FAISS top-k over the SRS item vectors, plus the item store (titles, attributes).

API (the gRPC gateway is written against it; extend only compatibly)::

    from serving.index import ItemIndex, ItemStore, Item, IndexMismatch, SnapshotError

    index = ItemIndex(dim=64, metric="inner_product", factory="Flat", use_gpu=None, shards=1)
        # metric "inner_product" (what the SRS is trained with) | "l2"; factory: any FAISS index_factory
        # string without IDMap ("Flat", "IVF1024,Flat", "HNSW32", "IVF4096,PQ16"...); use_gpu None = auto;
        # shards > 1: items split by id % shards into that many FAISS indexes (one per GPU on GPU) searched
        # together through faiss.IndexShards; same API and results as one shard for Flat (see item_index.py)
    index.dim, index.metric, index.factory, len(index), 42 in index
    index.ids()                            # int64 [n], sorted
    index.upsert(ids, vectors)             # int64 [n] (> 0), float32 [n, dim]; replaces existing ids;
                                           # duplicate ids in one call -> ValueError naming them;
                                           # an untrained index (IVF, PQ) is trained on the first upsert
    index.delete(ids) -> int               # number removed; unknown ids ignored
    index.vectors(ids)                     # float32 [n, dim], the exact stored vectors; KeyError naming unknown ids
    ids, scores = index.search(queries, k, exclude=None)
        # queries float32 [B, dim] -> int64 [B, k], float32 [B, k], best first; padded with -1 / -inf;
        # exclude[b]: ids query b must not get (searches k + max len(exclude) and filters: exact for Flat);
        # scores are higher-is-better (inner product, or minus the squared L2 distance)
    manifest = index.save(directory, extra=None, store=None)   # atomic snapshot, returns the manifest
    index = ItemIndex.load(directory, expect=None, use_gpu=None)
        # verifies sha256 of every file (SnapshotError when corrupt or missing) and raises IndexMismatch
        # naming the field, expected and found value when a manifest field differs from `expect`,
        # e.g. expect={"dim": 64, "metric": "inner_product", "item_vectors_sha256": ...}
    Extensions: index.train(sample), index.set_search_params(nprobe=, ef_search=), index.compact(),
    index.describe() (counts for health/metrics), index.is_trained, index.on_gpu.

    store = ItemStore([Item(id=1, title="Kolya", attributes={"genres": "Comedy"}, key="242")])
    store.upsert(items); store.delete(ids) -> int; store.get(ids) -> list[Item | None]; len(store); 1 in store
    store.rows_of(keys) -> list[int | None]; store.ids(); store.save(directory); ItemStore.load(directory)

Snapshot layout (one folder, replaced as a whole: written beside it, fsynced, renamed):
    index.faiss    faiss.write_index of the CPU index (labels are slots, see item_index.py); a sharded index
                   has index.shard-000.faiss, index.shard-001.faiss, ... instead (shard s: ids with id % shards == s)
    slots.npy      int64 [slots]: slot -> public id, -1 = dead (np.save, allow_pickle=False)
    vectors.npy    float32 [slots, dim]: the exact vectors (what `vectors()` returns)
    store.json     the item store, when saved with `save(..., store=store)`
    manifest.json  {"format": "llmrec.index/1", "dim", "metric", "factory", "shards", "count", "slots",
                    "search": {"nprobe", "ef_search"}, "faiss_version", "created",
                    "files": {name: sha256}, plus the `extra` fields at top level}
`python -m export.index` writes the first snapshot from an SRS item table and records in `extra`:
item_vectors_sha256, item_ids_sha256, dataset, dataset_key, score, source, and, when the table comes from a
user-encoder export folder, user_encoder_sha256 (the SRS checkpoint) and embeddings_sha256 (the LLM item
embeddings it was trained on).

Ids: the index and the store work on internal rows (1..num_items = rows of the item table; new items take
rows above the maximum, never reused); clients use the catalogue's own ids (`Item.key`, the dataset's raw
item id), which the store maps to rows (serving/index/catalog.py allocates them).

Deletes on HNSW (FAISS cannot remove from HNSW) are tombstones filtered at search time through an
IDSelectorBitmap; the index is rebuilt from the kept vectors when dead entries outnumber live ones.

Thread safety: searches share a readers-writer lock, updates take it alone; a search never sees a half-applied
update, and no search returns an id after its `delete` returned. This package never imports torch or train.
"""

from .catalog import STORE_FORMAT, Item, ItemStore
from .item_index import FORMAT, METRICS, ItemIndex, gpu_available
from .snapshot import STORE_FILE, IndexMismatch, SnapshotError

__all__ = [
    "FORMAT",
    "METRICS",
    "STORE_FILE",
    "STORE_FORMAT",
    "IndexMismatch",
    "Item",
    "ItemIndex",
    "ItemStore",
    "SnapshotError",
    "gpu_available",
]
