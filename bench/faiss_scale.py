"""FAISS at catalogue scale: Flat vs IVF vs HNSW on 100k and 1M synthetic item vectors (inner product).

    OMP_NUM_THREADS=1 python bench/faiss_scale.py [--sizes 100000 1000000] [--dims 64] [--threads 1]

Why synthetic, and which: MovieLens has 1,349 items; the question is what the
index costs when a catalogue has 10^5-10^6 items. Vectors are drawn like an
embedding table, not uniform noise (on isotropic Gaussians every ANN index
looks worse than on real embeddings): 1,000 cluster centres, each item = centre
+ 1.0 x Gaussian noise (overlapping clusters: with 0.6 every index is ~exact and
the comparison says nothing), normalised, with a log-normal norm (popular items have larger norms in SRS
tables, which matters for inner product). Queries come from the same
generator with another seed (a user vector lives in the item space). D=64 is
the SRS hidden size the MovieLens profile uses.

For each size: Flat (exact; the ground truth), IVF (nlist ~ 2 sqrt(N), trained
on a sample of 40 x nlist, nprobe 16 and 64), HNSW32 (efConstruction 40,
two efSearch settings). Reported: build time (train + add), batch QPS (1,000
queries in one call), single-query QPS (one query per call, as the gateway
issues them for single users), recall@10 against Flat, memory of the index.
Plus the ItemIndex wrapper (Flat) on the smallest size, to show its overhead.
Threads are fixed with faiss.omp_set_num_threads and recorded; the machine's
load average is recorded too, because a background job shares the cores.
Writes bench/results/faiss_scale.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from serving.index import ItemIndex  # noqa: E402

K = 10
CENTRES = 1000
NOISE = 1.0
NPROBES = (16, 64)
EF_SEARCH = (64, 128)


def synthetic(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Clustered vectors with log-normal norms (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(len(centres), size=m)] + NOISE * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x *= rng.lognormal(0.0, 0.25, size=(m, 1)).astype(np.float32)
        out[start:start + m] = x
    return out


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).size)


def timed_search(index: faiss.Index, queries: np.ndarray, single: int) -> tuple[np.ndarray, float, float]:
    """Labels of a batch search, batch QPS, and single-query QPS over the first `single` queries."""
    t0 = time.perf_counter()
    _, labels = index.search(queries, K)
    batch_qps = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(single):
        index.search(queries[i:i + 1], K)
    single_qps = single / (time.perf_counter() - t0)
    return labels, batch_qps, single_qps


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth, strict=True)]))


def run_size(n: int, dim: int, nq: int, single: int, hnsw_m: int) -> list[dict]:
    centres = np.random.default_rng(0).standard_normal((CENTRES, dim)).astype(np.float32)
    items = synthetic(n, dim, seed=1, centres=centres)
    queries = synthetic(nq, dim, seed=2, centres=centres)
    ip = faiss.METRIC_INNER_PRODUCT
    rows = []

    def row(name: str, params: str, build: float, index: faiss.Index, labels, bq: float, sq: float) -> None:
        rows.append({"n": n, "dim": dim, "index": name, "params": params, "build_seconds": round(build, 2),
                     "batch_qps": round(bq, 1), "single_qps": round(sq, 1),
                     "recall@10": round(recall_at_k(labels, truth), 4) if truth is not None else 1.0,
                     "index_mib": round(index_bytes(index) / 2**20, 1)})
        print(f"  {name:<10} {params:<22} build {build:7.2f}s  batch {bq:9.1f} q/s  single {sq:8.1f} q/s  "
              f"recall@10 {rows[-1]['recall@10']:.4f}", flush=True)

    truth = None
    t0 = time.perf_counter()
    flat = faiss.IndexFlat(dim, ip)
    flat.add(items)
    build = time.perf_counter() - t0
    truth, bq, sq = timed_search(flat, queries, single)
    row("Flat", "exact", build, flat, truth, bq, sq)
    del flat

    nlist = int(2 ** round(np.log2(2 * np.sqrt(n))))
    t0 = time.perf_counter()
    ivf = faiss.index_factory(dim, f"IVF{nlist},Flat", ip)
    sample = items[np.random.default_rng(3).choice(n, size=min(n, 40 * nlist), replace=False)]
    ivf.train(sample)
    ivf.add(items)
    build = time.perf_counter() - t0
    for nprobe in NPROBES:
        ivf.nprobe = nprobe
        labels, bq, sq = timed_search(ivf, queries, single)
        row("IVF", f"nlist={nlist} nprobe={nprobe}", build, ivf, labels, bq, sq)
    del ivf

    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, ip)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(items)
    build = time.perf_counter() - t0
    for ef in EF_SEARCH:
        hnsw.hnsw.efSearch = ef
        labels, bq, sq = timed_search(hnsw, queries, single)
        row("HNSW", f"M={hnsw_m} efSearch={ef}", build, hnsw, labels, bq, sq)
    del hnsw
    return rows, items, queries, truth


def wrapper_row(items: np.ndarray, queries: np.ndarray, truth: np.ndarray, single: int) -> dict:
    """ItemIndex (Flat) on the same data: ids 1..n, so FAISS label i is item i + 1."""
    t0 = time.perf_counter()
    index = ItemIndex(items.shape[1], "inner_product", "Flat", use_gpu=False)
    index.upsert(np.arange(1, len(items) + 1), items)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = index.search(queries, K)
    bq = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(single):
        index.search(queries[i:i + 1], K)
    sq = single / (time.perf_counter() - t0)
    rec = recall_at_k(ids - 1, truth)
    print(f"  ItemIndex  Flat                   build {build:7.2f}s  batch {bq:9.1f} q/s  single {sq:8.1f} q/s  "
          f"recall@10 {rec:.4f}", flush=True)
    return {"n": len(items), "dim": items.shape[1], "index": "ItemIndex(Flat)", "params": "exact, wrapper",
            "build_seconds": round(build, 2), "batch_qps": round(bq, 1), "single_qps": round(sq, 1),
            "recall@10": round(rec, 4), "index_mib": None}


def markdown(rows: list[dict], threads: int, load: tuple[float, float, float], seconds: float) -> str:
    lines = [
        "# FAISS at catalogue scale (inner product, synthetic clustered item vectors)",
        "",
        f"Threads: {threads} (faiss.omp_set_num_threads). Load average at start: "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores"
        + (" (other jobs shared the machine: absolute speeds are pessimistic and noisy, compare within a size)"
           if load[0] > 1.0 else "")
        + f". Queries: batch = 1,000 in one call, single = one per call. Recall@10 against Flat. "
        f"Total {seconds:.0f} s.",
        "",
        "| items | dim | index | parameters | build (s) | batch QPS | single QPS | recall@10 | size (MiB) |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = "" if r["index_mib"] is None else f"{r['index_mib']:.0f}"
        lines.append(f"| {r['n']:,} | {r['dim']} | {r['index']} | {r['params']} | {r['build_seconds']:.1f} | "
                     f"{r['batch_qps']:,.0f} | {r['single_qps']:,.0f} | {r['recall@10']:.3f} | {size} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = sorted({(r["n"], r["dim"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, (n, dim) in zip(axes[0], keys, strict=True):
        for r in rows:
            if (r["n"], r["dim"]) != (n, dim) or r["index"].startswith("ItemIndex"):
                continue
            ax.scatter(r["recall@10"], r["single_qps"], label=f"{r['index']} {r['params']}")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs Flat")
        ax.set_ylabel("single-query QPS")
        ax.set_title(f"{n:,} items, D={dim}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[64])
    p.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (recorded)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=200, help="queries timed one per call")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--name", default="faiss_scale", help="result file name under bench/results/")
    args = p.parse_args()

    faiss.omp_set_num_threads(args.threads)
    load = os.getloadavg()
    t_start = time.perf_counter()
    rows: list[dict] = []
    for dim in args.dims:
        for i, n in enumerate(sorted(args.sizes)):
            print(f"{n:,} items, D={dim}", flush=True)
            size_rows, items, queries, truth = run_size(n, dim, args.queries, args.single, args.hnsw_m)
            rows += size_rows
            if i == 0:
                rows.append(wrapper_row(items, queries, truth, args.single))
            del items
    seconds = time.perf_counter() - t_start
    png = RESULTS / f"{args.name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    has_png = plot(rows, png)
    path = write_result(args.name, {
        "benchmark": "faiss_scale",
        "settings": {"threads": args.threads, "omp_max_threads": faiss.omp_get_max_threads(), "k": K,
                     "queries": args.queries, "single_queries": args.single, "hnsw_m": args.hnsw_m,
                     "hnsw_ef_construction": 40, "metric": "inner_product",
                     "data": f"{CENTRES} Gaussian centres + {NOISE} x Gaussian noise, unit-normalised, "
                             "log-normal(0, 0.25) norms",
                     "ivf_train_sample": "40 x nlist", "load_average_at_start": [round(x, 2) for x in load]},
        "seconds": round(seconds, 1),
        "rows": rows,
        "plot": png.name if has_png else None,
    })
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, args.threads, load, seconds))
    print(f"wrote {path} and {args.name}.md" + (f", {png.name}" if has_png else "") + f" in {seconds:.0f} s")


if __name__ == "__main__":
    main()
