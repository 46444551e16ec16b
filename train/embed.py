"""python -m train.embed: item embeddings for a dataset from an embedder checkpoint (or a raw base model).

  python -m train.embed --embedder runs/r/embedder/item-contrastive --dataset ml-100k --out runs/r/embeddings

The item text (--text, --domain) defaults to the one the embedder was trained on (its stage.json: LLM2Rec's
stages read titles, LLMEmb's SCFT the attribute sentence), and to the bare title (LLM2Rec's extraction) for a
base model.

Writes into --out:
  items.safetensors  tensor "embeddings" float32 [num_items + 1, D], row 0 = zeros (padding), row i = item i;
                     metadata "item_ids" = JSON list of the dataset's raw item ids in row order (row 0 "[PAD]"),
                     i.e. `data.item_ids`; what `train.srs.items.load_item_embeddings` reads
  manifest.json      embedder (folder, sha256 of its config + weights, its EmbedderConfig), dataset manifest key,
                     text kind, dim, count, the file's sha256, created
Both files are written to temporary names and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.cli import HelpFormatter, add_force_option
from llmrec.files import refuse_foreign_folder
from llmrec.itemtext import DEFAULT_KIND, TEXT_KINDS, ItemText
from llmrec.logs import setup_logging
from llmrec.manifests import EMBEDDINGS_FORMAT, EMBEDDINGS_MANIFEST

from .data import DataConfig, SequenceData, load_dataset
from .data.text import recipe_texts

__all__ = ["extract", "item_texts", "write_embeddings"]

logger = logging.getLogger("llmrec.stages")

FORMAT = EMBEDDINGS_FORMAT
ITEMS_FILE = "items.safetensors"
MANIFEST_FILE = EMBEDDINGS_MANIFEST  # llmrec.manifests.EmbeddingsManifest reads it
EXIT_BAD_INPUT = 2


def item_texts(data: SequenceData, kind: str = DEFAULT_KIND, domain: str = "movie") -> list[str]:
    """One text per internal id (row 0 empty), by the item-text recipe `kind` (llmrec.itemtext)."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"--text must be one of {TEXT_KINDS}, got {kind!r}")
    return recipe_texts(data, ItemText(kind, domain))


def trained_item_text(source: str | Path) -> tuple[str, str] | None:
    """(kind, domain) of the item text a stage trained the embedder `source` on (its stage.json), else None."""
    from .stages.common import embedder_checkpoint_dir

    folder = embedder_checkpoint_dir(source)
    record = folder.parent / "stage.json" if folder is not None else None
    if record is None or not record.is_file():
        return None
    done = json.loads(record.read_text())
    config = done.get("config", {})
    if done.get("stage") == "scft":
        return "attributes", str(config.get("domain", "movie"))
    if "item_text" in config:
        return str(config["item_text"]), str(config.get("domain", "movie"))
    return None


def write_embeddings(path: Path, matrix: np.ndarray, item_ids: list[str]) -> None:
    """Atomically write the [rows, D] float32 matrix with its row ids."""
    from safetensors.numpy import save_file

    if matrix.shape[0] != len(item_ids):
        raise ValueError(f"{matrix.shape[0]} rows for {len(item_ids)} item ids")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({"embeddings": np.ascontiguousarray(matrix, dtype=np.float32)}, str(tmp),
                  metadata={"item_ids": json.dumps(list(item_ids)), "format": FORMAT})
        tmp.chmod(0o644)  # safetensors creates files private to the owner
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def extract(embedder: Any, data: SequenceData, out: str | Path, text: str = DEFAULT_KIND, domain: str = "movie",
            batch_size: int = 32, progress: bool = True, embedder_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed every item of `data` with `embedder` into `out`; returns the manifest."""
    from llmrec.files import sha256_file, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = item_texts(data, text, domain)
    t0 = time.perf_counter()
    vectors = embedder.encode(texts[1:], batch_size=batch_size, progress=progress)
    if not np.isfinite(vectors).all():
        raise ValueError("the embedder produced NaN or infinite vectors")
    matrix = np.zeros((data.num_items + 1, vectors.shape[1]), dtype=np.float32)
    matrix[1:] = vectors
    write_embeddings(out / ITEMS_FILE, matrix, data.item_ids)
    manifest = {
        "format": FORMAT,
        "embedder": {**(embedder_info or {}), "config": embedder.config.to_dict(),
                     "architecture": embedder.architecture},
        "dataset": {"name": data.name, "key": data.manifest.get("key")},
        "text": text,
        "item_text": ItemText(text, domain).to_dict(),
        "dim": int(matrix.shape[1]),
        "count": int(data.num_items),
        "rows": int(matrix.shape[0]),
        "file": ITEMS_FILE,
        "sha256": sha256_file(out / ITEMS_FILE),
        "seconds": round(time.perf_counter() - t0, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    logger.info("embeddings_written", extra={"out": str(out), "rows": manifest["rows"], "dim": manifest["dim"],
                                             "seconds": manifest["seconds"]})
    return manifest


def parser() -> argparse.ArgumentParser:
    from .embedder import ATTENTIONS, POOLINGS

    p = argparse.ArgumentParser(prog="python -m train.embed", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--embedder", default="smollm2",
                   help="an embedder checkpoint, a stage's out folder, smollm2 or a local HF causal-LM folder")
    p.add_argument("--dataset", default="ml-100k", help="ml-100k, a RecBole atomic folder, or an LLM2Rec folder")
    p.add_argument("--out", required=True, help="output folder (items.safetensors + manifest.json)")
    add_force_option(p)
    p.add_argument("--text", default=None, choices=TEXT_KINDS,
                   help="item-text recipe (llmrec/itemtext.py): the title alone, with year, with year and genres, "
                        "LLMEmb's attribute sentence, or a PromptEOL prompt for last-token pooling (default: the "
                        "embedder's training text, the title for a base model)")
    p.add_argument("--domain", default=None,
                   help="the item kind named in attribute sentences and prompts (default: the embedder's, movie)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--pooling", default=None, choices=POOLINGS, help="override the embedder's pooling")
    p.add_argument("--attention", default=None, choices=ATTENTIONS, help="override the embedder's attention")
    p.add_argument("--max-length", type=int, default=None, help="override the embedder's max tokens per text")
    p.add_argument("--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item")
    p.add_argument("--cache-dir", default=None, help="processed datasets and base models (default $LLMREC_CACHE)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--save-embedder", default=None, metavar="DIR",
                   help="also save the embedder as used (overrides applied) as a checkpoint folder, e.g. a raw base "
                        "model for export (python -m export.onnx all --embedder DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(verbose=not args.quiet)
    from .stages.common import StageError, embedder_checkpoint_dir, embedder_hash, input_identity, load_input_embedder

    try:
        if args.batch_size <= 0:
            raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
        refuse_foreign_folder(args.out, (MANIFEST_FILE, ITEMS_FILE), args.force)
        overrides = {k: v for k, v in (("pooling", args.pooling), ("attention", args.attention),
                                       ("max_length", args.max_length)) if v is not None}
        if not (embedder_checkpoint_dir(args.embedder) or args.embedder == "smollm2" or Path(args.embedder).is_dir()):
            raise ValueError(f"--embedder {args.embedder!r} is neither an embedder checkpoint, 'smollm2', "
                             "nor a local model folder")
        data = load_dataset(args.dataset, DataConfig(k_core=args.k_core), cache_dir=args.cache_dir)
        trained = trained_item_text(args.embedder) or ("title", "movie")
        args.text = args.text or trained[0]
        args.domain = args.domain or trained[1]
        item_texts(data, args.text, args.domain)  # fail on a dataset without titles before loading the model
        embedder = load_input_embedder(args.embedder, device=args.device, cache_dir=args.cache_dir, **overrides)
        source = args.embedder
        if args.save_embedder:  # the saved checkpoint is what the embeddings are then made by (export checks it)
            source = str(embedder.save(args.save_embedder))
        info = {"source": source, "dir": input_identity(source),
                "sha256": embedder_hash(source, cache_dir=args.cache_dir), "overrides": overrides}
        manifest = extract(embedder, data, args.out, args.text, args.domain, args.batch_size,
                           progress=not args.quiet, embedder_info=info)
    except (StageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{manifest['rows']} x {manifest['dim']} embeddings -> {Path(args.out) / ITEMS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
