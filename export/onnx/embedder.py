"""The LLM item embedder as one ONNX graph: token ids -> the final item vector.

Graph (`model.onnx`):
  input_ids       int64   [batch, sequence]
  attention_mask  int64   [batch, sequence]   1 = token, 0 = padding; right or left padding
  item_vector     float32 [batch, D]

How it is built:
1. The checkpoint's merged Hugging Face decoder (LoRA folded in; an unmerged
   adapter checkpoint is merged in memory) is exported by Optimum
   (`onnx_export_from_model`, task "feature-extraction": input_ids,
   attention_mask, position_ids -> last_hidden_state).
   Bidirectional checkpoints: the HF model would build a causal mask from the
   2D mask, so while Optimum traces it, the modeling module's
   `create_causal_mask` (and the sliding-window variant) is swapped for a
   padding-only additive mask (`bidirectional_masks`), the mask
   `train.embedder.attention` passes in torch.
2. Position ids are computed inside the graph from the mask, `cumsum(mask) - 1`
   clipped at 0, as the torch embedder does, so left and right padding give the
   same vectors; the graph input `position_ids` disappears.
3. The head (pooling as the checkpoint says, the embedder's own L2
   normalisation if it has one, optionally an SRS checkpoint's item adapter:
   [PCA], standardisation, linear/MLP; optionally a final L2 normalisation) is a
   small torch module exported with torch.onnx and spliced after the decoder.
   The adapter reuses the SRS checkpoint's modules, so the output lives in the
   SRS item space (for LLM-initialised IDs it is the text -> ID map, i.e. the
   vector of a cold or new item).
Weights stay in `model.onnx` unless Optimum had to write them externally
(> 2 GB); then they are in `model.onnx_data` beside it, referenced by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmrec.names import ATTENTION_MASK, INPUT_IDS, ITEM_VECTOR

from .artifact import (
    DATA_FILE,
    EXPORT_FILE,
    FORMAT,
    MODEL_FILE,
    TOKENIZER_DIR,
    ExportInputError,
    ExportValidationError,
    check_out,
    file_hashes,
    tensor_spec,
    write_manifest,
)

logger = logging.getLogger("llmrec.export")

KIND = "embedder"
OPSET = 18
MASK_FACTORIES = ("create_causal_mask", "create_sliding_window_causal_mask", "create_chunked_causal_mask")


# ----------------------------------------------------------------------------------------------- bidirectional
def padding_only_mask(config: Any = None, input_embeds: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
    """Stand-in for transformers' mask factories: additive float [B, 1, 1, L], 0 on valid keys and
    finfo.min on padding, no causal triangle. It broadcasts over the queries in eager attention."""
    dtype = input_embeds.dtype
    valid = attention_mask.to(torch.bool)[:, None, None, :]
    return torch.where(valid, torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min, dtype=dtype))


@contextlib.contextmanager
def bidirectional_masks(model: nn.Module) -> Iterator[None]:
    """While active, the modeling module of `model` (e.g. transformers.models.llama.modeling_llama) builds
    padding-only masks instead of causal ones: what Optimum traces is then the bidirectional embedder."""
    module = sys.modules[type(model).__module__]
    originals = {name: getattr(module, name) for name in MASK_FACTORIES if hasattr(module, name)}
    if "create_causal_mask" not in originals:
        raise ExportInputError(f"--checkpoint: {type(model).__name__} does not build its mask with "
                               "create_causal_mask; bidirectional export is not supported for it")
    for name in originals:
        setattr(module, name, padding_only_mask)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


# ----------------------------------------------------------------------------------------------- head
class SRSItemAdapter(nn.Module):
    """An LLM item vector -> the SRS item space, as `FrozenItemEmbedding` maps a stored row:
    [PCA projection (LLMEmb's RAT)], per-dimension standardisation, then the trained adapter."""

    def __init__(self, frozen_items: nn.Module, pca: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.adapter = frozen_items.adapter
        self.register_buffer("mean", frozen_items.mean.detach().clone())
        self.register_buffer("std", frozen_items.std.detach().clone())
        self.use_pca = pca is not None
        if pca is not None:
            self.register_buffer("pca_mean", torch.from_numpy(np.asarray(pca["mean"], dtype=np.float32)))
            self.register_buffer("pca_components", torch.from_numpy(np.asarray(pca["components"], dtype=np.float32)))

    @property
    def in_dim(self) -> int:
        return int(self.pca_components.shape[1]) if self.use_pca else int(self.mean.shape[0])

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.use_pca:
            vectors = (vectors - self.pca_mean) @ self.pca_components.T
        return self.adapter((vectors - self.mean) / self.std)


class ItemHead(nn.Module):
    """Hidden states -> item vector: pooling, the embedder's normalisation, [adapter], [final L2 norm]."""

    def __init__(self, pooling: str, embedder_normalize: bool, adapter: SRSItemAdapter | None,
                 normalize: bool, skip_first: bool = False) -> None:
        super().__init__()
        self.pooling = pooling
        self.skip_first = skip_first  # mean pooling leaves the tokenizer's BOS out (ItemEmbedder.adds_bos)
        self.embedder_normalize = embedder_normalize
        self.adapter = adapter
        self.normalize = normalize

    def finish(self, vectors: torch.Tensor) -> torch.Tensor:
        """What follows the embedder's own output (`ItemEmbedder.forward`): adapter and final normalisation."""
        if self.adapter is not None:
            vectors = self.adapter(vectors)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from train.embedder import pool

        vectors = pool(hidden_states, attention_mask, self.pooling, skip_first=self.skip_first)
        if self.embedder_normalize:
            vectors = F.normalize(vectors, dim=-1)
        return self.finish(vectors)


def load_adapter(srs_checkpoint: str | Path, llm_dim: int) -> tuple[SRSItemAdapter, dict[str, Any]]:
    """The item adapter of an SRS checkpoint trained on frozen LLM embeddings, and its description."""
    from .user_encoder import checkpoint_sha256, load_srs

    path = Path(srs_checkpoint)
    try:
        model, config = load_srs(path)
    except ExportInputError as exc:
        raise ExportInputError(str(exc).replace("--checkpoint", "--adapter", 1)) from None
    frozen_items = model.text_path()  # with IDs fused in, a cold item's vector: the text path alone
    if frozen_items is None:
        raise ExportInputError(f"--adapter {str(srs_checkpoint)!r}: the SRS uses ID embeddings "
                               f"(items={model.config.items!r}, fusion={model.config.fusion!r}); only an SRS "
                               "whose items keep a text path has an item adapter")
    items_info = config.get("items") or {}
    pca = None
    if items_info.get("pca"):
        from train.srs import load_pca

        pca_path = path / items_info["pca"].get("file", "pca.safetensors")
        if not pca_path.is_file():
            raise ExportInputError(f"--adapter {str(srs_checkpoint)!r}: config names a PCA but {pca_path} is missing")
        pca = load_pca(pca_path)
    adapter = SRSItemAdapter(frozen_items, pca).eval()
    if adapter.in_dim != llm_dim:
        raise ExportInputError(f"--adapter {str(srs_checkpoint)!r}: the adapter reads {adapter.in_dim}-d vectors, "
                               f"the embedder gives {llm_dim}-d ones (trained on another embedder?)")
    info = {
        "checkpoint": str(path.resolve()),
        "sha256": checkpoint_sha256(path),
        "kind": "linear" if model.config.fusion == "init" else model.config.adapter,
        "standardize": bool(model.config.standardize),
        "pca": int(pca["components"].shape[0]) if pca is not None else None,
        "fusion": model.config.fusion,
        "item_text": item_text_of(config),
        "input_dim": adapter.in_dim,
        "output_dim": int(model.config.hidden_size),
        "embeddings": items_info.get("path"),
    }
    return adapter, info


def item_text_of(srs_meta: dict[str, Any]) -> dict[str, str]:
    """The item-text recipe (llmrec.itemtext) the SRS's frozen embeddings were made with: what the gateway
    must build from an upserted item's title and attributes for its vector to equal the offline one."""
    from .quantize import srs_text_kind

    kind, domain = srs_text_kind(srs_meta)
    return {"kind": kind, "domain": domain}


def embeddings_made_by(adapter_info: dict[str, Any], embedder_sha256: str) -> bool | None:
    """Whether the embeddings the SRS was trained on came from this embedder (their manifest's sha256);
    None when that manifest is not found."""
    from llmrec.manifests import EmbeddingsManifest

    path = adapter_info.get("embeddings")
    manifest = EmbeddingsManifest.read(Path(path).parent) if path else None
    if manifest is None or manifest.embedder_sha256 is None:
        return None
    return manifest.embedder_sha256 == embedder_sha256


# ----------------------------------------------------------------------------------------------- graph surgery
def export_head(head: ItemHead, hidden_size: int, path: Path) -> None:
    """The head alone: hidden_states float32 [B, L, hidden], attention_mask int64 [B, L] -> item_vector [B, D]."""
    example = (torch.randn(2, 5, hidden_size), torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]))
    dynamic = {"hidden_states": {0: "batch_size", 1: "sequence_length"},
               ATTENTION_MASK: {0: "batch_size", 1: "sequence_length"}, ITEM_VECTOR: {0: "batch_size"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(head.eval(), example, str(path), input_names=["hidden_states", ATTENTION_MASK],
                          output_names=[ITEM_VECTOR], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def position_id_nodes(mask: str, out: str) -> tuple[list[Any], list[Any]]:
    """Nodes computing `out = max(cumsum(mask, axis 1) - 1, 0)` and their constant initializers."""
    from onnx import helper, numpy_helper

    prefix = "llmrec/position_ids"
    constants = [numpy_helper.from_array(np.array(1, dtype=np.int64), f"{prefix}/axis"),
                 numpy_helper.from_array(np.array(1, dtype=np.int64), f"{prefix}/one"),
                 numpy_helper.from_array(np.array(0, dtype=np.int64), f"{prefix}/zero")]
    nodes = [
        helper.make_node("CumSum", [mask, f"{prefix}/axis"], [f"{prefix}/cumsum"], name=f"{prefix}/CumSum"),
        helper.make_node("Sub", [f"{prefix}/cumsum", f"{prefix}/one"], [f"{prefix}/minus_one"], name=f"{prefix}/Sub"),
        helper.make_node("Max", [f"{prefix}/minus_one", f"{prefix}/zero"], [out], name=f"{prefix}/Max"),
    ]
    return nodes, constants


def splice(decoder: Any, head: Any, dim: int) -> Any:
    """One model: position ids from the mask -> decoder -> head; inputs input_ids, attention_mask; output
    item_vector. `decoder` is modified in place and returned."""
    from onnx import TensorProto, compose, helper

    graph = decoder.graph
    inputs = [i.name for i in graph.input]
    if inputs != [INPUT_IDS, ATTENTION_MASK, "position_ids"] or graph.output[0].name != "last_hidden_state":
        raise RuntimeError(f"unexpected decoder graph: inputs {inputs}, outputs {[o.name for o in graph.output]}")
    nodes, constants = position_id_nodes(ATTENTION_MASK, "position_ids")
    kept = [i for i in graph.input if i.name != "position_ids"]
    del graph.input[:]
    graph.input.extend(kept)
    head = compose.add_prefix(head, "head/")
    rename = {"head/hidden_states": "last_hidden_state", f"head/{ATTENTION_MASK}": ATTENTION_MASK,
              f"head/{ITEM_VECTOR}": ITEM_VECTOR}
    for node in head.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes + list(head.graph.node))
    graph.initializer.extend(constants + list(head.graph.initializer))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(ITEM_VECTOR, TensorProto.FLOAT, ["batch_size", dim]))
    known = {o.domain for o in decoder.opset_import}
    decoder.opset_import.extend(o for o in head.opset_import if o.domain not in known)
    return decoder


def export_decoder(decoder: Any, attention: str, out_dir: Path) -> Path:
    """Optimum feature-extraction export of the HF decoder into `out_dir`; returns the model path."""
    from optimum.exporters.onnx import onnx_export_from_model

    patch = bidirectional_masks(decoder) if attention == "bidirectional" else contextlib.nullcontext()
    optimum_logger = logging.getLogger("optimum")
    level = optimum_logger.level
    optimum_logger.setLevel(logging.ERROR)
    try:
        with patch, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_export_from_model(decoder, output=out_dir, task="feature-extraction", opset=OPSET,
                                   do_validation=False, device="cpu")
    finally:
        optimum_logger.setLevel(level)
    path = out_dir / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(f"Optimum wrote no {MODEL_FILE} into {out_dir}: {sorted(p.name for p in out_dir.iterdir())}")
    return path


def build_graph(decoder_path: Path, head_path: Path, dim: int, out_dir: Path) -> None:
    """Write the spliced model into `out_dir` (weights inline, or in DATA_FILE when the decoder's were external)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    decoder = onnx.load(str(decoder_path), load_external_data=False)
    external = sorted({e.value for t in decoder.graph.initializer if uses_external_data(t)
                       for e in t.external_data if e.key == "location"})
    model = splice(decoder, onnx.load(str(head_path)), dim)
    if external:
        if external != [DATA_FILE]:
            raise RuntimeError(f"unexpected external data files {external} (expected [{DATA_FILE!r}])")
        shutil.move(str(decoder_path.parent / DATA_FILE), str(out_dir / DATA_FILE))
        onnx.save(model, str(out_dir / MODEL_FILE))
        onnx.checker.check_model(str(out_dir / MODEL_FILE))
    else:
        onnx.checker.check_model(model)
        onnx.save(model, str(out_dir / MODEL_FILE))


# ----------------------------------------------------------------------------------------------- export
def load_embedder(checkpoint: str | Path, cache_dir: str | Path | None = None) -> tuple[Any, Path]:
    """The checkpoint as an fp32 CPU `ItemEmbedder` with LoRA merged, and the checkpoint folder."""
    from train.embedder import ItemEmbedder
    from train.stages import embedder_checkpoint_dir

    folder = embedder_checkpoint_dir(checkpoint)
    if folder is None:
        raise ExportInputError(f"--checkpoint {str(checkpoint)!r}: not an embedder checkpoint (a folder with an "
                               "llmrec.embedder/1 config.json, or a stage out folder holding embedder/)")
    try:
        embedder = ItemEmbedder.load(folder, device="cpu", dtype=torch.float32, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ExportInputError(f"--checkpoint {str(checkpoint)!r}: {exc}") from None
    if embedder.is_peft:
        embedder.merge_lora()
    return embedder.eval(), folder


def export_embedder(checkpoint: str | Path, out: str | Path, adapter: str | Path | None = None,
                    normalize: bool = False, min_cosine: float = 0.9999, cache_dir: str | Path | None = None,
                    texts: Sequence[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Export an embedder checkpoint (+ optional SRS adapter) into `out`, validate it; returns the manifest.

    Written into a temporary sibling folder and renamed to `out` only when validation passes; an existing `out`
    is replaced only when an export wrote it (or `force`). Raises ExportInputError / ExportValidationError.
    """
    from llmrec.files import replace_folder
    from train.stages import embedder_hash

    from .validate import print_report, validate_embedder

    t0 = time.perf_counter()
    out = Path(out)
    check_out(out, force)
    if not 0.0 < min_cosine <= 1.0:
        raise ExportInputError(f"--min-cosine must be in (0, 1], got {min_cosine}")
    if adapter is not None and not Path(adapter).is_dir():
        raise ExportInputError(f"--adapter {str(adapter)!r}: no such folder (an SRS seed folder)")
    embedder, folder = load_embedder(checkpoint, cache_dir)
    config = embedder.config
    source_sha = embedder_hash(folder)
    srs_adapter, adapter_info = (None, None)
    if adapter is not None:
        srs_adapter, adapter_info = load_adapter(adapter, embedder.hidden_size)
        adapter_info["embeddings_from_this_embedder"] = embeddings_made_by(adapter_info, source_sha)
        if adapter_info["embeddings_from_this_embedder"] is False:
            logger.warning("adapter_embedder_mismatch", extra={
                "adapter": str(adapter), "detail": "the SRS was trained on embeddings of another embedder"})
    head = ItemHead(config.pooling, config.normalize, srs_adapter, normalize, skip_first=embedder.adds_bos).eval()
    dim = adapter_info["output_dim"] if adapter_info else embedder.hidden_size
    final_normalize = normalize or (config.normalize and srs_adapter is None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        work = tmp / ".work"
        work.mkdir()
        decoder_path = export_decoder(embedder.causal_lm.get_decoder(), config.attention, work / "decoder")
        export_head(head, embedder.hidden_size, work / "head.onnx")
        build_graph(decoder_path, work / "head.onnx", dim, tmp)
        shutil.rmtree(work)
        if (folder / TOKENIZER_DIR / "tokenizer.json").is_file():
            shutil.copytree(folder / TOKENIZER_DIR, tmp / TOKENIZER_DIR)
        else:
            embedder.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        tokenizer = embedder.tokenizer
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "kind": KIND,
            "inputs": [tensor_spec(INPUT_IDS, "int64", [-1, -1]), tensor_spec(ATTENTION_MASK, "int64", [-1, -1])],
            "outputs": [tensor_spec(ITEM_VECTOR, "float32", [-1, dim])],
            "dim": dim,
            "hidden_size": embedder.hidden_size,
            "pooling": config.pooling,
            "pool_skips_bos": bool(embedder.adds_bos and config.pooling == "mean"),
            "attention": config.attention,
            "normalize": bool(final_normalize),
            "embedder_normalize": bool(config.normalize),
            "adapter": adapter_info,
            "max_length": config.max_length,
            "template": config.template,
            "item_text": (adapter_info or {}).get("item_text"),
            "append_eos": config.appends_eos,
            "padding_side": "right",
            "padding_sides": ["right", "left"],
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": embedder.eos_token_id,
            "pad_token_id": embedder.pad_token_id,
            "architecture": embedder.architecture,
            "model_type": embedder.causal_lm.config.model_type,
            "opset": OPSET,
            "source": {"checkpoint": str(folder.resolve()), "sha256": source_sha, "base": config.base,
                       "lora_merged": bool(embedder.lora_merged)},
        }

        def reference(batch: Sequence[str]) -> np.ndarray:
            with torch.no_grad():
                vectors = torch.from_numpy(embedder.encode(batch, batch_size=32, progress=False))
                return head.finish(vectors).numpy()

        report = validate_embedder(tmp / MODEL_FILE, tmp / TOKENIZER_DIR, manifest, reference, texts=texts,
                                   min_cosine=min_cosine)
        print_report(report, title=f"item embedder ({embedder.architecture}, {config.attention}, {config.pooling}) "
                                   "onnx vs torch")
        if not report["passed"]:
            raise ExportValidationError(
                f"validation failed: min cosine {report['min_cosine']:.6f} < --min-cosine {min_cosine} "
                f"(max abs diff {report['max_abs_diff']:.3g}); nothing written to {out}")
        manifest["files"] = file_hashes(tmp)
        manifest["validation"] = report
        manifest["export_seconds"] = round(time.perf_counter() - t0, 3)
        write_manifest(tmp, manifest)
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp and safetensors make private files
            path.chmod(0o755 if path.is_dir() else 0o644)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("embedder_exported", extra={"out": str(out), "dim": dim, "attention": config.attention,
                                            "pooling": config.pooling, "adapter": adapter_info is not None,
                                            "min_cosine": report["min_cosine"], "seconds": manifest["export_seconds"]})
    return json.loads((out / EXPORT_FILE).read_text())
