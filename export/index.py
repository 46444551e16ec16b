"""python -m export.index: the first item-index snapshot from an SRS item table and the dataset's texts.

  python -m export.index --item-vectors runs/r/onnx/user_encoder --dataset ml-100k --out runs/r/index
  python -m export.index --item-vectors runs/r/onnx/user_encoder/item_vectors.safetensors --dataset ml-100k \
      --out runs/r/index --factory IVF64,Flat
  python -m export.index ... --factory IVF4096,PQ16 --shards 4     # split by id % 4 (serving/index/SCALING.md)

--item-vectors is a table file (tensor "embeddings" float32 [num_items + 1, D], row 0 = padding, optional
metadata "item_ids") or a folder holding `item_vectors.safetensors` (a user-encoder export, whose export.json
is then read) or `items.safetensors`. Row i is internal item i; clients name it by the dataset's raw item id
(its catalogue id, kept in the store). The table must belong to --dataset (same item count, and the same raw
ids when the table names them).

Writes the snapshot folder --out (see serving/index/__init__.py): the FAISS index over rows 1..n, the exact
vectors, store.json with every item's catalogue id, title and attributes (release year, genres...), and
manifest.json whose extra fields tie it to what it was built from:
  item_vectors_sha256   sha256 of the table file (export.json lists the same under files)
  item_ids_sha256       sha256 of the JSON list of raw ids in row order (row 0 "[PAD]")
  dataset, dataset_key  the processed dataset's name and cache key
  score                 the SRS score the metric was chosen for (from export.json, else the --metric)
  user_encoder_sha256   the SRS checkpoint's sha256 (export.json source.sha256), when exported
  embeddings_sha256     the LLM item-embedding file the SRS read (export.json items.source.sha256), when any
  source                the table's path
A metric that contradicts the export's score is refused (an index searched with L2 for a model trained with
inner product ranks wrongly without any error). Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.cli import HelpFormatter
from llmrec.files import ForeignFolder, refuse_foreign_folder, sha256_file

logger = logging.getLogger("llmrec.export")

ITEM_VECTORS_FILE = "item_vectors.safetensors"
EMBEDDINGS_FILE = "items.safetensors"
EXPORT_FILE = "export.json"
EXIT_BAD_INPUT = 2
PAD_TOKEN = "[PAD]"


class IndexBuildError(ValueError):
    """Bad input to the index builder (the message names the file or flag); exit code 2."""


def resolve_table(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The table file and, when it sits in an export folder, that folder's export.json."""
    path = Path(path)
    if path.is_dir():
        for name in (ITEM_VECTORS_FILE, EMBEDDINGS_FILE):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise IndexBuildError(f"--item-vectors {path}: no {ITEM_VECTORS_FILE} or {EMBEDDINGS_FILE} in the folder")
    if not path.is_file():
        raise IndexBuildError(f"--item-vectors {path} not found")
    export_path = path.parent / EXPORT_FILE
    export = json.loads(export_path.read_text()) if export_path.is_file() else None
    return path, export


def read_table(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The [rows, D] float32 table and its raw item ids (None when the file does not name them)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            if "embeddings" not in handle.keys():
                raise IndexBuildError(f"{path}: no tensor 'embeddings' (tensors: {list(handle.keys())})")
            table = handle.get_tensor("embeddings")
            metadata = handle.metadata() or {}
    except IndexBuildError:
        raise
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise IndexBuildError(f"{path}: not a readable safetensors file: {exc}") from exc
    if table.ndim != 2 or table.shape[0] < 2:
        raise IndexBuildError(f"{path}: 'embeddings' must be [num_items + 1, D], got {list(table.shape)}")
    table = np.ascontiguousarray(table, dtype=np.float32)
    if not np.isfinite(table[1:]).all():
        raise IndexBuildError(f"{path}: the table holds NaN or infinite values")
    ids = json.loads(metadata["item_ids"]) if "item_ids" in metadata else None
    if ids is not None and len(ids) != table.shape[0]:
        raise IndexBuildError(f"{path}: {len(ids)} item ids for {table.shape[0]} rows")
    return table, ids


def build_store(data: Any) -> Any:
    """Items 1..n (the rows of the item table) with the dataset's titles and attributes, each under its catalogue
    id: the dataset's raw item id (what clients send and receive)."""
    from serving.index import Item, ItemStore
    from train.data import item_attributes, title_texts

    titles = title_texts(data)
    attributes = item_attributes(data) if data.item_features else [[] for _ in range(data.num_items + 1)]
    items = []
    for i in range(1, data.num_items + 1):
        attrs = {key: value for key, value in attributes[i] if key != "title"}
        items.append(Item(id=i, title=titles[i] or str(data.item_ids[i]), attributes=attrs,
                          key=str(data.item_ids[i])))
    return ItemStore(items)


def build_index(item_vectors: str | Path, dataset: str, out: str | Path, factory: str = "Flat",
                metric: str | None = None, k_core: int | None = None, cache_dir: str | Path | None = None,
                use_gpu: bool | None = False, shards: int = 1, nprobe: int | None = None,
                ef_search: int | None = None, force: bool = False) -> dict[str, Any]:
    """Build and save the snapshot; returns its manifest. Raises IndexBuildError on bad input, and for an `out`
    that is a non-empty folder holding no index snapshot (unless `force`).

    `shards` > 1 splits the items by id % shards into that many FAISS indexes searched together (the snapshot and
    its manifest record it; the gateway loads it as it is)."""
    from serving.index import ItemIndex
    from serving.index.item_index import check_shards
    from serving.index.snapshot import MANIFEST_FILE

    try:
        shards = check_shards(shards)
        refuse_foreign_folder(out, (MANIFEST_FILE,), force)
    except ForeignFolder as exc:
        raise IndexBuildError(str(exc)) from None
    except ValueError as exc:
        raise IndexBuildError(f"--{exc}") from None
    from train.data import DataConfig, load_dataset

    t0 = time.perf_counter()
    path, export = resolve_table(item_vectors)
    score = (export or {}).get("score")
    if metric is None:
        metric = score or "inner_product"
    if score is not None and metric != score:
        raise IndexBuildError(f"--metric {metric} contradicts {path.parent / EXPORT_FILE}: the SRS scores with {score}")
    table, raw_ids = read_table(path)
    config = DataConfig() if k_core is None else DataConfig(k_core=k_core)
    data = load_dataset(dataset, config, cache_dir=cache_dir)
    if table.shape[0] != data.num_items + 1:
        raise IndexBuildError(f"{path} has {table.shape[0] - 1} items, dataset {data.name!r} has {data.num_items}: "
                              "the table was made from another dataset or k-core")
    if raw_ids is not None and [str(x) for x in raw_ids[1:]] != [str(x) for x in data.item_ids[1:]]:
        first = next(i for i in range(1, len(raw_ids)) if str(raw_ids[i]) != str(data.item_ids[i]))
        raise IndexBuildError(f"{path}: row {first} is raw item {raw_ids[first]!r}, dataset {data.name!r} has "
                              f"{data.item_ids[first]!r} there: the table does not belong to this dataset")
    try:
        index = ItemIndex(table.shape[1], metric=metric, factory=factory, use_gpu=use_gpu, shards=shards)
        index.set_search_params(nprobe=nprobe, ef_search=ef_search)
        index.upsert(np.arange(1, table.shape[0], dtype=np.int64), table[1:])
    except (ValueError, RuntimeError) as exc:  # a factory FAISS cannot build or train; --gpu without a GPU
        raise IndexBuildError(f"cannot build index {factory!r}: {exc}") from exc
    store = build_store(data)
    ids_json = json.dumps([PAD_TOKEN, *[str(x) for x in data.item_ids[1:]]])
    extra: dict[str, Any] = {
        "item_vectors_sha256": sha256_file(path),
        "item_ids_sha256": hashlib.sha256(ids_json.encode()).hexdigest(),
        "dataset": data.name,
        "dataset_key": data.manifest.get("key"),
        "score": score or metric,
        "source": str(path.resolve()),
    }
    if export is not None:
        if (export.get("source") or {}).get("sha256"):
            extra["user_encoder_sha256"] = export["source"]["sha256"]
        items_source = (export.get("items") or {}).get("source") or {}
        if items_source.get("sha256"):
            extra["embeddings_sha256"] = items_source["sha256"]
    manifest = index.save(out, extra=extra, store=store)
    logger.info("index_written", extra={"out": str(out), "count": manifest["count"], "dim": manifest["dim"],
                                        "factory": factory, "metric": metric, "shards": shards,
                                        "seconds": round(time.perf_counter() - t0, 3)})
    return manifest


def parser() -> argparse.ArgumentParser:
    from serving.index.item_index import DEFAULT_EF_SEARCH, DEFAULT_NPROBE

    p = argparse.ArgumentParser(prog="python -m export.index", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--item-vectors", required=True, help="SRS item table (.safetensors) or a folder holding one")
    p.add_argument("--dataset", default="ml-100k", help="the dataset the table was trained on (titles, attributes)")
    p.add_argument("--out", required=True, help="snapshot folder to write (replaced atomically)")
    p.add_argument("--force", action="store_true", help="replace --out even when it holds no index snapshot")
    p.add_argument("--factory", default="Flat", help="FAISS index_factory string: Flat, IVF256,Flat, HNSW32, ...")
    p.add_argument("--shards", type=int, default=1,
                   help="split the items by id %% SHARDS into that many FAISS indexes searched together (default 1)")
    p.add_argument("--metric", default=None, choices=("inner_product", "l2"),
                   help="default: the export's score, else inner_product")
    p.add_argument("--k-core", type=int, default=None, help="the dataset's k-core (default: the data default)")
    p.add_argument("--cache-dir", default=None, help="processed-dataset cache (default $LLMREC_CACHE)")
    p.add_argument("--nprobe", type=int, default=None,
                   help=f"IVF lists searched per query, kept in the snapshot (default: {DEFAULT_NPROBE})")
    p.add_argument("--ef-search", type=int, default=None,
                   help=f"HNSW candidate list per query, kept in the snapshot (default: {DEFAULT_EF_SEARCH})")
    p.add_argument("--gpu", action="store_true", help="build on GPU (the snapshot is the same CPU index)")
    p.add_argument("--quiet", action="store_true", help="warnings only, no summary line")
    return p


def main(argv: list[str] | None = None) -> int:
    from llmrec.logs import setup_logging

    args = parser().parse_args(argv)
    setup_logging(verbose=not args.quiet)
    try:
        manifest = build_index(args.item_vectors, args.dataset, args.out, factory=args.factory, metric=args.metric,
                               k_core=args.k_core, cache_dir=args.cache_dir, use_gpu=True if args.gpu else False,
                               shards=args.shards, nprobe=args.nprobe, ef_search=args.ef_search,
                               force=args.force)
    except IndexBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        print(f"{args.out}: {manifest['count']} items, dim {manifest['dim']}, {manifest['metric']}, "
              f"{manifest['factory']}" + (f", {manifest['shards']} shards" if manifest["shards"] > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
