"""Item-index memory: bytes per vector of the FAISS index types, measured, checked against the formulas of
serving/index/SCALING.md, and extrapolated to 10M / 100M items.

    OMP_NUM_THREADS=1 python bench/index_memory.py [--sizes 50000 100000] [--sizes-576 10000 20000]

For each factory and dimension an index is built at two sizes and serialized with faiss.serialize_index; the
serialized size is fitted as `fixed + per_vector x n` (two points: the slope is the per-vector cost, the
intercept the centroids / codebooks), so the extrapolation is linear in n by construction and the slope is what
the formula predicts. Serialized size is the index's memory up to a few bytes per vector (FAISS writes its
arrays as they are held). Also measured: what ItemIndex keeps beside FAISS per item (the exact float32 vector,
the slot table, the id -> slot dict), from tracemalloc. Vectors are Gaussian: the size of these indexes does not
depend on the data. Writes bench/results/index_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HNSW_M = 32
PQ_M = 64
TRAIN_SAMPLE = 10_000  # >= 39 x nlist (256): enough for k-means; the sizes do not depend on the training


def factories(dim: int, n: int) -> dict[str, str]:
    """Index type -> factory string (nlist small enough to train quickly; the real nlist only changes the fixed
    part, which SCALING.md computes)."""
    nlist = 256
    return {"Flat": "IDMap,Flat", "IVF-Flat": f"IVF{nlist},Flat", f"IVF-PQ{PQ_M}": f"IVF{nlist},PQ{PQ_M}",
            f"HNSW{HNSW_M}": f"IDMap,HNSW{HNSW_M}"}


def formula(kind: str, dim: int) -> float:
    """Predicted bytes per vector (the per-vector terms of SCALING.md, the ids included)."""
    if kind == "Flat":
        return 4 * dim + 8  # float32 vector + IndexIDMap's int64 id
    if kind == "IVF-Flat":
        return 4 * dim + 8  # vector in its inverted list + int64 id
    if kind.startswith("IVF-PQ"):
        return PQ_M + 8  # one byte per sub-quantizer + int64 id
    # HNSW: vector + level-0 links (2M int32) + upper levels (on average M int32 x 1/(M-1) levels) + level and
    # offset bookkeeping (int32 + int64) + IndexIDMap's int64 id
    return 4 * dim + 2 * HNSW_M * 4 + HNSW_M * 4 / (HNSW_M - 1) + 4 + 8 + 8


def empty_index(factory: str, vectors: np.ndarray) -> faiss.Index:
    """The empty index, trained once on a sample when it needs training (IVF, PQ): sizes do not depend on it."""
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors[: min(len(vectors), TRAIN_SAMPLE)])
    return index


def serialized_bytes(empty: faiss.Index, vectors: np.ndarray) -> int:
    index = faiss.clone_index(empty)
    index.add_with_ids(vectors, np.arange(1, len(vectors) + 1, dtype=np.int64))
    return int(faiss.serialize_index(index).nbytes)


def item_index_overhead(n: int, dim: int) -> dict[str, float]:
    """Bytes per item that ItemIndex holds besides FAISS (numpy tables and the id -> slot dict)."""
    from serving.index import ItemIndex

    vectors = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    tracemalloc.start()
    index = ItemIndex(dim, factory="Flat", use_gpu=False)
    index.upsert(np.arange(1, n + 1) * 7, vectors)  # ids that are not small cached ints
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    table = index._vectors.nbytes + index._slot_ids.nbytes
    return {"total": current / n, "vectors_and_slots": table / n, "dict_and_rest": (current - table) / n}


def item_store_bytes(n: int) -> float:
    """Bytes per item of the ItemStore (titles and attributes as Python objects), MovieLens-like items."""
    from serving.index import Item, ItemStore

    tracemalloc.start()
    store = ItemStore([Item(id=7 * i, title=f"Some Movie Title Number {i} (1995)",
                            attributes={"release_year": "1995", "genres": "Comedy|Drama"}, key=str(7 * i))
                       for i in range(1, n + 1)])
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store) == n
    return current / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs=2, default=[50_000, 100_000], help="two sizes at dim 64")
    p.add_argument("--sizes-576", type=int, nargs=2, default=[10_000, 20_000], help="two sizes at dim 576")
    p.add_argument("--out", default=str(RESULTS / "index_memory"))
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for dim, sizes in ((64, args.sizes), (576, args.sizes_576)):
        vectors = np.random.default_rng(0).standard_normal((max(sizes), dim)).astype(np.float32)
        for kind, factory in factories(dim, max(sizes)).items():
            t = time.perf_counter()
            empty = empty_index(factory, vectors)
            small, large = (serialized_bytes(empty, vectors[:n]) for n in sizes)
            slope = (large - small) / (sizes[1] - sizes[0])
            fixed = large - slope * sizes[1]
            rows.append({"dim": dim, "index": kind, "factory": factory, "sizes": sizes, "bytes": [small, large],
                         "per_vector": round(slope, 2), "fixed": round(fixed), "formula": round(formula(kind, dim), 2),
                         "gib_10M": round((fixed + slope * 10**7) / 2**30, 2),
                         "gib_100M": round((fixed + slope * 10**8) / 2**30, 1),
                         "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(rows[-1]), flush=True)
    overhead = {dim: item_index_overhead(args.sizes[1], dim) for dim in (64,)}
    store = item_store_bytes(args.sizes[1])
    result = {"rows": rows, "item_index_overhead_bytes_per_item": overhead, "item_store_bytes_per_item": store,
              "faiss": faiss.__version__,
              "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Item-index memory: measured bytes per vector (faiss.serialize_index, two sizes, linear fit)", "",
             f"FAISS {faiss.__version__}. Gaussian vectors; the slope of the fit is the per-vector cost, the "
             "intercept the centroids / codebooks of the measured nlist (SCALING.md uses the nlist of the real "
             "size). Extrapolated linearly.", "",
             "| dim | index | sizes | per vector (B), measured | formula (B) | fixed (B) | 10M (GiB) | 100M (GiB) |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dim']} | {r['index']} (`{r['factory']}`) | {r['sizes'][0]:,} / {r['sizes'][1]:,} | "
                     f"{r['per_vector']:.1f} | {r['formula']:.1f} | {r['fixed']:,} | {r['gib_10M']} | "
                     f"{r['gib_100M']} |")
    o = overhead[64]
    lines += ["", f"ItemIndex beside FAISS (dim 64, {args.sizes[1]:,} items, tracemalloc): {o['total']:.0f} B per item "
              f"= {o['vectors_and_slots']:.0f} B exact vector + slot table, {o['dict_and_rest']:.0f} B id -> slot "
              f"dict. ItemStore (titles, attributes): {store:.0f} B per item (a 35-character title, 3 attributes).", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
