"""The SRS user encoder as ONNX: a history of item vectors -> one user vector.

Graph (`model.onnx`):
  item_vectors    float32 [batch, history, H]  rows of the SRS item table (`item_vectors.safetensors`) for the
                                               history, oldest first; padding rows are ignored (zeros by convention)
  attention_mask  int64   [batch, history]     1 = item, 0 = padding; left padding as in training (the SASRec and
                                               GRU4Rec encoders give the same vector under right padding)
  user_vector     float32 [batch, H]           same space as the item vectors: score = inner product

The graph is the checkpoint's own encoder module traced by torch's dynamo
exporter (`dynamo=True`): the older TorchScript exporter emits a boolean
EyeLike for SASRec's mask that onnxruntime cannot run, and a GRU whose result
differs. GRU4Rec moves the valid steps of every history to the front with a
sort over distinct keys (`train.srs.gru4rec.alignment`), which exports as it is.
Dropout is inactive
(the model is in eval mode; `FastDropout` is the identity there).

Histories longer than the trained `max_len` are not refused by the graph, but
SASRec has no positions beyond it: clients truncate to the most recent
`max_len` items (recorded in export.json).

`item_vectors.safetensors` is `model.item_vectors()`: tensor "embeddings" float32 [num_items + 1, H], row 0 =
padding (zeros), with metadata "item_ids" (the dataset's raw ids in row order) when the processed dataset the
checkpoint names is in the llmrec cache; the same layout `train.embed` writes, so `read_embedding_file` reads it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmrec.names import ATTENTION_MASK, ITEM_VECTORS, USER_ENCODER, USER_VECTOR

from .artifact import (
    EXPORT_FILE,
    FORMAT,
    ITEM_VECTORS_FILE,
    MODEL_FILE,
    ExportInputError,
    ExportValidationError,
    check_out,
    file_hashes,
    sha256_files,
    tensor_spec,
    write_manifest,
)

logger = logging.getLogger("llmrec.export")

KIND = USER_ENCODER
OPSET = 18


class UserEncoderGraph(nn.Module):
    """What the graph computes: the checkpoint's encoder on item vectors under an int64 mask."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, item_vectors: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(item_vectors, attention_mask != 0)


def load_srs(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """An SRS checkpoint (eval mode, CPU) and its config.json; ExportInputError naming --checkpoint otherwise."""
    from train.srs import load_checkpoint

    path = Path(checkpoint)
    if not path.is_dir():
        raise ExportInputError(f"--checkpoint {str(checkpoint)!r}: no such folder (an SRS seed folder holding "
                               "model.safetensors and config.json)")
    try:
        model, config = load_checkpoint(path, device="cpu")
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        raise ExportInputError(f"--checkpoint {str(checkpoint)!r}: {exc}") from None
    return model.eval(), config


def checkpoint_sha256(checkpoint: Path) -> str:
    """sha256 of an SRS checkpoint's config.json and model.safetensors (and pca.safetensors when present)."""
    names = ["config.json", "model.safetensors", "pca.safetensors"]
    return sha256_files([checkpoint / n for n in names if (checkpoint / n).is_file()])


def dataset_item_ids(config: dict[str, Any], rows: int, cache_dir: str | Path | None = None) -> list[str] | None:
    """The raw item id of every row, from the processed dataset the checkpoint names (name + key) in the llmrec
    cache; None when that dataset is not cached or its size differs."""
    from train.data import cache_folder, default_cache_dir

    dataset = config.get("dataset") or {}
    key = (dataset.get("manifest") or {}).get("key")
    if not dataset.get("name") or not key:
        return None
    folder = cache_folder(Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), dataset["name"], key)
    path = folder / "items.json"
    if not path.is_file():
        return None
    ids = [str(x) for x in json.loads(path.read_text(encoding="utf-8"))]
    return ids if len(ids) == rows else None


def write_item_table(path: Path, table: np.ndarray, item_ids: list[str] | None) -> None:
    from safetensors.numpy import save_file

    metadata = {"format": "llmrec.item_vectors/1", "space": "srs", "score": "inner_product"}
    if item_ids is not None:
        metadata["item_ids"] = json.dumps(item_ids)
    save_file({"embeddings": np.ascontiguousarray(table, dtype=np.float32)}, str(path), metadata=metadata)
    path.chmod(0o644)  # safetensors creates files private to the owner


def export_graph(model: Any, path: Path) -> None:
    """Trace the encoder into `path` (one file) with dynamic batch and history axes."""
    hidden, max_len = model.config.hidden_size, model.config.max_len
    graph = UserEncoderGraph(model.encoder).eval()
    # example sizes that equal no other size of the model (dynamo would otherwise tie the axes to them)
    length = max_len + 3
    example = (torch.randn(3, length, hidden), torch.ones(3, length, dtype=torch.long))
    example[1][0, :2] = 0
    dynamic = {ITEM_VECTORS: {0: "batch", 1: "history"}, ATTENTION_MASK: {0: "batch", 1: "history"},
               USER_VECTOR: {0: "batch"}}
    torch._dynamo.reset()  # state left by an earlier export in the same process can pin the history axis
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, example, str(path), input_names=[ITEM_VECTORS, ATTENTION_MASK],
                          output_names=[USER_VECTOR], dynamic_axes=dynamic, opset_version=OPSET, dynamo=True,
                          external_data=False, verbose=False)


def _export_graph_from_checkpoint(checkpoint: str, path: str) -> None:
    """Entry point of a fresh process: load the checkpoint and trace it (see `export_graph_isolated`)."""
    model, _ = load_srs(checkpoint)
    export_graph(model, Path(path))


def export_graph_isolated(model: Any, checkpoint: Path, path: Path) -> None:
    """`export_graph`, retried in a fresh interpreter when the trace fails in this one.

    A second dynamo export of a GRU in the same process can come out with the history axis pinned to the
    example's length (torch 2.13); a new process traces it as the first export does.
    """
    import multiprocessing

    try:
        export_graph(model, path)
        return
    except Exception as exc:  # noqa: BLE001 - any tracing failure is retried once, in isolation
        logger.info("user_encoder_trace_retry", extra={"reason": str(exc).splitlines()[0][:200]})
    process = multiprocessing.get_context("spawn").Process(target=_export_graph_from_checkpoint,
                                                           args=(str(checkpoint), str(path)))
    process.start()
    process.join()
    if process.exitcode != 0 or not path.is_file():
        raise RuntimeError(f"tracing the user encoder of {checkpoint} failed (exit code {process.exitcode})")


def export_user_encoder(checkpoint: str | Path, out: str | Path, min_cosine: float = 0.9999,
                        cache_dir: str | Path | None = None, seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Export an SRS checkpoint's user encoder and item table into `out`, validate it; returns the manifest.

    Everything is written into a temporary sibling folder and renamed to `out` only when validation passes,
    so `out` never holds a half-written or failing export; an existing `out` is replaced only when an export
    wrote it (or `force`). Raises ExportInputError / ExportValidationError.
    """
    from llmrec.files import replace_folder

    from .validate import print_report, validate_user_encoder

    t0 = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    check_out(out, force)
    if not 0.0 < min_cosine <= 1.0:
        raise ExportInputError(f"--min-cosine must be in (0, 1], got {min_cosine}")
    model, config = load_srs(checkpoint)
    srs = model.config
    with torch.no_grad():
        table = model.item_vectors().detach().float().numpy().copy()
    table[0] = 0.0
    item_ids = dataset_item_ids(config, table.shape[0], cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        export_graph_isolated(model, checkpoint, tmp / MODEL_FILE)
        write_item_table(tmp / ITEM_VECTORS_FILE, table, item_ids)
        report = validate_user_encoder(tmp / MODEL_FILE, model, table, min_cosine=min_cosine, seed=seed)
        print_report(report, title=f"user encoder ({srs.backbone}) onnx vs torch")
        if not report["passed"]:
            raise ExportValidationError(
                f"validation failed: min cosine {report['min_cosine']:.6f} < --min-cosine {min_cosine} "
                f"(max abs diff {report['max_abs_diff']:.3g}); nothing written to {out}")
        items_info = config.get("items") or {}
        manifest = {
            "format": FORMAT,
            "kind": KIND,
            "inputs": [tensor_spec(ITEM_VECTORS, "float32", [-1, -1, srs.hidden_size]),
                       tensor_spec(ATTENTION_MASK, "int64", [-1, -1])],
            "outputs": [tensor_spec(USER_VECTOR, "float32", [-1, srs.hidden_size])],
            "dim": srs.hidden_size,
            "hidden_size": srs.hidden_size,
            "max_len": srs.max_len,
            "padding_side": srs.padding,
            "backbone": srs.backbone,
            "items": {
                "kind": "ids" if srs.items == "ids" else "frozen",
                "fusion": srs.fusion,
                "adapter": None if srs.items == "ids" else "linear" if srs.fusion == "init" else srs.adapter,
                "standardize": srs.standardize,
                "num_items": int(model.num_items),
                "rows": int(table.shape[0]),
                "table": ITEM_VECTORS_FILE,
                "item_ids": item_ids is not None,
                "source": {k: items_info[k] for k in ("path", "sha256", "dim", "pca") if k in items_info},
            },
            "score": "inner_product",
            "opset": OPSET,
            "source": {"checkpoint": str(checkpoint.resolve()), "sha256": checkpoint_sha256(checkpoint),
                       "dataset": (config.get("dataset") or {}).get("name"),
                       "dataset_key": ((config.get("dataset") or {}).get("manifest") or {}).get("key")},
            "files": file_hashes(tmp),
            "validation": report,
            "export_seconds": round(time.perf_counter() - t0, 3),
        }
        write_manifest(tmp, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it private
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("user_encoder_exported", extra={"out": str(out), "backbone": srs.backbone,
                                                "hidden_size": srs.hidden_size, "max_len": srs.max_len,
                                                "min_cosine": report["min_cosine"],
                                                "seconds": manifest["export_seconds"]})
    return json.loads((out / EXPORT_FILE).read_text())
