"""Faster variants of an exported ONNX graph, and the quality gate a variant must pass before it is deployed.

Variants (each reads one `.onnx` file and writes another; the graph's inputs and outputs are unchanged):
  optimize(src, dst)                     ONNX Runtime graph optimisation saved offline (constant folding, fusions)
  quantize_int8(src, dst, recipe)        int8 variants for the CPU, by named recipe (`RECIPES`)
  to_fp16(src, dst)                      float16 weights/compute for the GPU, float32 inputs/outputs kept
TensorRT needs no file of its own: onnxruntime's TensorRT execution provider builds its engine from the
fp32 (or fp16) graph; the Triton config selects it.

Why the gate is not cosine. Raw LLM item embeddings are anisotropic (mean pairwise cosine ~.96 for
SmolLM2): every vector lies in a narrow cone, so a quantized vector keeps a cosine of .97 with its fp32
twin while its *neighbours* change completely (plain dynamic int8: 18% of the top-10 kept). What a
deployment needs is the same neighbours and the same recommendations, so `gate` checks
  * top-k neighbour overlap of the item vectors (the set of the k nearest other items, per item, mean
    over items; inner product on the vectors the index holds) - `GATE_MIN_OVERLAP`;
  * downstream: Recall@10 of the trained SRS with its item table recomputed from the variant's
    embeddings, on validation + test users, paired with fp32's on the same users: the variant passes
    when even the worst end of the 95% bootstrap interval of the difference is at most
    `GATE_MAX_RECALL_DROP` (2%) below fp32 (non-inferiority; a point estimate on 943 users moves by
    more than 2% when 7 users change).
Cosine is reported too, as a sanity check only.

Recipes (`RECIPES`), all from `onnxruntime.quantization`; bench/export_speed.py measures them:
  dynamic             quantize_dynamic defaults: int8 MatMul and embedding Gather, per-tensor weights
  dynamic-pc-skip     per-channel weights, MatMul only (the embedding table stays fp32), every down_proj left
                      in fp32 (its input carries the LLM's massive-activation outliers, which per-tensor
                      activation quantization flattens)
  nbits8              MatMulNBits: 8-bit block-wise (block 32) weights, int8 compute with block-wise
                      activation quantization (accuracy_level 4)
  nbits8-w            nbits8's weights with float32 compute (accuracy_level 1): weight-only int8, no activation
                      quantization; passes the gate (barely) but is slower than fp32 on a CPU: a size option

None of the int8-compute recipes passes the gate on the SmolLM2 embedder: int8 per-channel weights alone
(float activations) already leave only ~.72 of the top-10 neighbours, and the activations' massive outliers
(~2700 in two channels of the BOS token before down_proj of layers 11 and 28) make per-tensor activation
quantization far worse. The recipes searched beyond these (static QDQ, SmoothQuant, layers kept in fp32 by
sensitivity) are in docs/decisions.md.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("llmrec.export")

GATE_K = 10
GATE_MIN_OVERLAP = 0.80  # mean top-10 neighbour overlap with fp32 on the final item vectors
GATE_MAX_RECALL_DROP = 0.02  # relative drop of the downstream SRS Recall@10 allowed
EXTERNAL_DATA_BYTES = 2_000_000_000  # protobuf's 2 GB limit: larger graphs keep weights in a side file


# ----------------------------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """How to quantize: `method` is "dynamic" or "nbits"; the rest are that method's options."""

    name: str
    method: str
    description: str
    per_channel: bool = False
    op_types: tuple[str, ...] | None = None  # None: the method's defaults
    exclude: tuple[str, ...] = ()  # regular expressions on node names left in float
    bits: int = 8
    block_size: int = 32
    accuracy_level: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("dynamic", "dynamic", "quantize_dynamic defaults (MatMul + Gather, per-tensor weights)"),
    Recipe("dynamic-pc-skip", "dynamic", "dynamic, per-channel weights, MatMul only, down_proj kept in fp32",
           per_channel=True, op_types=("MatMul",), exclude=(r"down_proj",)),
    Recipe("nbits8", "nbits", "MatMulNBits 8-bit block-32 weights, int8 compute (accuracy_level 4)", bits=8),
    Recipe("nbits8-w", "nbits", "MatMulNBits 8-bit block-32 weights, fp32 compute (accuracy_level 1): weight-only",
           bits=8, accuracy_level=1),
)}


def _save(model: Any, dst: Path) -> Path:
    import onnx

    dst.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save_model(model, str(dst), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=f"{dst.name}.data" if large else None)
    return dst


def matching_nodes(model_path: str | Path, patterns: Iterable[str], op_types: Iterable[str] | None = None) -> list[str]:
    """Names of the nodes whose name matches any of `patterns` (regular expressions), optionally of `op_types`."""
    import onnx

    patterns = [re.compile(p) for p in patterns]
    if not patterns:
        return []
    ops = set(op_types) if op_types else None
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node
            if (ops is None or n.op_type in ops) and any(p.search(n.name) for p in patterns)]


def quantize_int8(src: str | Path, dst: str | Path, recipe: str | Recipe = "nbits8") -> Path:
    """Write the `recipe` variant of `src` to `dst` (see `RECIPES`); returns `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    exclude = matching_nodes(src, recipe.exclude)
    large = src.stat().st_size > EXTERNAL_DATA_BYTES
    t0 = time.perf_counter()
    if recipe.method == "dynamic":
        quantize_dynamic(src, dst, op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
                         per_channel=recipe.per_channel, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                         use_external_data_format=large)
    elif recipe.method == "nbits":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=recipe.bits, block_size=recipe.block_size,
                                         is_symmetric=True, accuracy_level=recipe.accuracy_level,
                                         nodes_to_exclude=exclude,
                                         op_types_to_quantize=recipe.op_types or ("MatMul",))
        quantizer.process()
        _save(quantizer.model.model, dst)
    else:
        raise ValueError(f"unknown quantization method {recipe.method!r}")
    logger.info("quantized", extra={"recipe": recipe.name, "src": str(src), "dst": str(dst),
                                    "excluded_nodes": len(exclude), "seconds": round(time.perf_counter() - t0, 1)})
    return dst


def optimize(src: str | Path, dst: str | Path, level: str = "extended") -> Path:
    """ONNX Runtime's graph optimisations applied once and saved (`level`: "basic" or "extended"; "all" adds
    layout changes for this machine's CPU, not meant to be saved and shipped)."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if level not in levels:
        raise ValueError(f"level must be one of {sorted(levels)}, got {level!r}")
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.optimized_model_filepath = str(dst)
    if src.stat().st_size > EXTERNAL_DATA_BYTES:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         f"{dst.name}.data")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return dst


def to_fp16(src: str | Path, dst: str | Path, keep_io_types: bool = True,
            op_block_list: Sequence[str] | None = None) -> Path:
    """float16 variant for GPUs (onnxruntime.transformers.float16): inputs/outputs stay as they are
    (int64 ids in, float32 item_vector out) when `keep_io_types`; ops in `op_block_list` stay float32
    (default: onnxruntime's list). On a CPU float16 is emulated and slow: measure it on the GPU."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types,
                                         op_block_list=list(op_block_list) if op_block_list else None)
    return _save(converted, Path(dst))


# ----------------------------------------------------------------------------------------------- running
def collate(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded int64 `input_ids` / `attention_mask` [B, L]."""
    length = max((len(r) for r in ids), default=0)
    input_ids = np.full((len(ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def session(path: str | Path, threads: int = 1, level: str = "all", providers: Sequence[str] | None = None):
    """An onnxruntime session with `threads` intra-op threads (1 inter-op) and graph optimisation `level`
    ("disabled", "basic", "extended", "all")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def pool_output(output: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """[B, D] as is; a [B, L, D] last_hidden_state (a bare feature-extraction graph) is mean-pooled."""
    if output.ndim == 2:
        return output
    weights = attention_mask[..., None].astype(output.dtype)
    return (output * weights).sum(1) / np.maximum(weights.sum(1), 1.0)


def encode_ids(sess: Any, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int = 32,
               bucket: bool = True) -> np.ndarray:
    """Item vectors float32 [N, D] for token id lists, in input order. `bucket`: batch texts of similar
    length together (sorted longest first), so batches carry little padding."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i])) if bucket else list(range(len(ids)))
    names = {i.name for i in sess.get_inputs()}
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        feed = collate([ids[i] for i in rows], pad_id)
        result = pool_output(sess.run(None, {k: v for k, v in feed.items() if k in names})[0],
                             feed["attention_mask"]).astype(np.float32)
        if out is None:
            out = np.empty((len(ids), result.shape[1]), dtype=np.float32)
        out[rows] = result
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


# ----------------------------------------------------------------------------------------------- the gate
def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity [N]."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def neighbours(vectors: np.ndarray, k: int = GATE_K, metric: str = "ip") -> np.ndarray:
    """The k nearest other rows of every row [N, k] (`metric` "ip" inner product, or "cosine")."""
    v = vectors.astype(np.float64)
    if metric == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(v) - 1)
    top = np.argpartition(-sims, k, axis=1)[:, :k] if k < len(v) - 1 else np.argsort(-sims, axis=1)[:, :k]
    return top


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = GATE_K, metric: str = "ip") -> float:
    """Mean over rows of |top-k(reference) ∩ top-k(candidate)| / k, self excluded."""
    a, b = neighbours(reference, k, metric), neighbours(candidate, k, metric)
    return float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b, strict=True)]))


def mean_pairwise_cosine(vectors: np.ndarray, sample: int = 2000) -> float:
    """Anisotropy: the mean cosine between distinct rows (a random sample of rows for large sets)."""
    v = vectors[np.random.default_rng(0).permutation(len(vectors))[:sample]].astype(np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    n = len(v)
    return float((sims.sum() - np.trace(sims)) / max(n * (n - 1), 1))


@dataclass
class GateResult:
    """Quality of a variant against fp32. `passed` needs the overlap and, when measured, recall that is not
    worse than fp32's by more than `max_recall_drop` at the 95% interval's worst end (a non-inferiority test:
    one point estimate on ~1,000 users cannot tell a 2% drop from noise)."""

    cosine_mean: float
    cosine_min: float
    overlap: float  # top-k neighbour overlap of the final item vectors
    overlap_raw: float | None = None  # the same on the raw LLM vectors (cosine), when they differ from final
    recall: float | None = None  # mean hit@k of the variant over the examples
    recall_reference: float | None = None  # the same of fp32
    recall_interval: dict[str, Any] | None = None  # paired bootstrap of variant - fp32 hits, same examples
    k: int = GATE_K
    min_overlap: float = GATE_MIN_OVERLAP
    max_recall_drop: float = GATE_MAX_RECALL_DROP
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def recall_drop(self) -> float | None:
        """The point estimate of the relative drop."""
        if self.recall is None or not self.recall_reference:
            return None
        return 1.0 - self.recall / self.recall_reference

    @property
    def recall_drop_bound(self) -> float | None:
        """The relative drop at the interval's worst end: what the gate holds against `max_recall_drop`."""
        if self.recall_interval is None or not self.recall_reference:
            return None
        return -self.recall_interval["low"] / self.recall_reference

    @property
    def passed(self) -> bool:
        bound = self.recall_drop_bound
        return self.overlap >= self.min_overlap and (self.recall is None or (
            bound is not None and bound <= self.max_recall_drop + 1e-12))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recall_drop": self.recall_drop, "recall_drop_bound": self.recall_drop_bound,
                "passed": self.passed}


def gate(reference: np.ndarray, candidate: np.ndarray, k: int = GATE_K,
         final: Callable[[np.ndarray], np.ndarray] | None = None,
         hits: Callable[[np.ndarray], np.ndarray] | None = None, hits_reference: np.ndarray | None = None,
         min_overlap: float = GATE_MIN_OVERLAP, max_recall_drop: float = GATE_MAX_RECALL_DROP) -> GateResult:
    """Compare a variant's item vectors with fp32's (rows = the same items).

    `final` maps graph outputs to the vectors the index holds (e.g. the SRS adapter; default: the outputs
    themselves); overlap is measured there with inner product. `hits` maps item vectors to the downstream
    per-example hit@k (e.g. `srs_hits`: validation + test users); `hits_reference` is fp32's (computed from
    `reference` if None). The two are compared paired, on the same examples."""
    from train.eval import paired_bootstrap

    if reference.shape != candidate.shape:
        raise ValueError(f"reference {reference.shape} and candidate {candidate.shape} differ in shape")
    cos = cosine(reference, candidate)
    result = GateResult(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()), overlap=0.0, k=k,
                        min_overlap=min_overlap, max_recall_drop=max_recall_drop)
    if final is not None:
        result.overlap = neighbour_overlap(final(reference), final(candidate), k, "ip")
        result.overlap_raw = neighbour_overlap(reference, candidate, k, "cosine")
    else:
        result.overlap = neighbour_overlap(reference, candidate, k, "ip")
    if hits is not None:
        ours = np.asarray(hits(candidate), dtype=np.float64)
        theirs = np.asarray(hits_reference if hits_reference is not None else hits(reference), dtype=np.float64)
        result.recall, result.recall_reference = float(ours.mean()), float(theirs.mean())
        result.recall_interval = paired_bootstrap(ours, theirs)
    return result


# ----------------------------------------------------------------------------------------------- downstream
def load_srs(checkpoint: str | Path):
    """A trained SRS checkpoint on frozen item embeddings (train.srs), for `srs_hits` / `srs_item_space`."""
    import torch
    from safetensors.torch import load_file

    from train.srs import SequentialRecommender, SRSConfig, load_checkpoint

    try:
        model, meta = load_checkpoint(checkpoint)
    except RuntimeError:  # written before standardisation existed: no items.mean/std, i.e. the identity
        meta = json.loads((Path(checkpoint) / "config.json").read_text())
        state = load_file(str(Path(checkpoint) / "model.safetensors"))
        frozen = state["items.frozen"]
        model = SequentialRecommender(SRSConfig.from_dict(meta["srs"]), meta["num_items"], torch.zeros_like(frozen))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"items.mean", "items.std"}:
            raise
        model.eval()
    if model.text_path() is None:
        raise ValueError(f"{checkpoint}: the SRS has no frozen item embeddings to swap")
    return model, meta


def srs_item_space(model: Any, vectors: np.ndarray) -> np.ndarray:
    """The SRS item vectors (standardisation + adapter) of LLM item vectors [N, D] (rows = items 1..N)."""
    import torch

    owner = model.text_path()
    with torch.no_grad():
        x = (torch.from_numpy(vectors) - owner.mean) / owner.std
        return owner.adapter(x).numpy()


def _hits(model: Any, data: Any, k: int) -> np.ndarray:
    """hit@k of every validation then test example, the SRS as it stands."""
    import torch

    from train.srs import example_ranks

    ranks = example_ranks(model, data, model.config, torch.device("cpu"))
    return np.concatenate([ranks["valid"], ranks["test"]]) < k


def srs_hits(model: Any, data: Any, vectors: np.ndarray, k: int = GATE_K) -> np.ndarray:
    """Per-example hit@k (validation + test users, full ranking) of the trained SRS `model` with its frozen item
    table replaced by `vectors` [num_items, D] (rows = items 1..N): the same trained recommender, served from a
    variant."""
    import torch

    owner = model.text_path()
    if vectors.shape != (owner.frozen.shape[0] - 1, owner.frozen.shape[1]):
        raise ValueError(f"expected {owner.frozen.shape[0] - 1} x {owner.frozen.shape[1]} vectors, got {vectors.shape}")
    saved = owner.frozen.clone()
    try:
        owner.frozen[1:] = torch.from_numpy(vectors)
        owner.frozen[0] = 0
        return _hits(model, data, k)
    finally:
        owner.frozen.copy_(saved)


def srs_hits_of_table(model: Any, data: Any, vectors: np.ndarray, k: int = GATE_K) -> np.ndarray:
    """Per-example hit@k of the trained SRS scoring with `vectors` [num_items, H] as its item table: the SRS item
    space, i.e. what an embedder exported with the SRS adapter inside returns and what the index holds.
    For an ID + text SRS the vectors are the text path, composed with the warm items' IDs as the SRS does."""
    import torch

    if vectors.shape[0] != model.num_items:
        raise ValueError(f"expected {model.num_items} item vectors, got {vectors.shape[0]}")
    table = torch.zeros((vectors.shape[0] + 1, vectors.shape[1]))
    table[1:] = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    model.eval()
    with torch.no_grad():
        table = model.items_with_text(table)  # the ID part of warm items, where the fusion keeps IDs
    model.item_vectors = lambda: table  # shadows the method for this evaluation only
    try:
        return _hits(model, data, k)
    finally:
        del model.item_vectors


def srs_text_kind(meta: dict[str, Any]) -> tuple[str, str]:
    """The item-text recipe (kind, domain; llmrec.itemtext) the SRS's frozen embeddings were extracted with,
    read from the embeddings' manifest (train.embed); bare titles when it cannot be found."""
    from llmrec.manifests import EmbeddingsManifest

    manifest = EmbeddingsManifest.read(Path((meta.get("items") or {}).get("path") or "").parent)
    if manifest is None:
        return "title", "movie"
    return manifest.item_text["kind"], manifest.item_text["domain"]


def gate_variant(export_dir: str | Path, variant: str | Path, srs_checkpoint: str | Path, dataset: str,
                 cache_dir: str | Path | None = None, threads: int = 2) -> GateResult:
    """The gate of a variant of an embedder exported *with the SRS adapter inside* (`export.onnx all`): every
    catalogue item's text through fp32 and through the variant; neighbour overlap on those (SRS-space)
    vectors, and the trained SRS's Recall@10 on validation + test users when the whole item table comes from the
    variant, paired with fp32's."""
    from train.data import DataConfig, load_dataset
    from train.embed import item_texts

    from .artifact import TOKENIZER_DIR, ExportInputError, read_manifest
    from .validate import load_tokenizer, token_ids

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir, "embedder")
    if not manifest.get("adapter"):
        raise ExportInputError(f"{export_dir}: exported without the SRS adapter; the gate compares SRS-space "
                               "vectors (bench/export_speed.py gates raw exports)")
    model, meta = load_srs(srs_checkpoint)
    data = load_dataset(dataset, DataConfig(), cache_dir=cache_dir)
    if data.num_items != model.num_items:
        raise ExportInputError(f"--dataset {dataset} has {data.num_items} items, the SRS {srs_checkpoint} "
                               f"{model.num_items}: not the data it was trained on")
    kind, domain = srs_text_kind(meta)
    texts = item_texts(data, kind, domain)[1:]
    ids = token_ids(load_tokenizer(export_dir / TOKENIZER_DIR), texts, manifest)
    pad = int(manifest["pad_token_id"])
    reference = encode_ids(session(export_dir / "model.onnx", threads), ids, pad)
    candidate = encode_ids(session(variant, threads), ids, pad)
    result = gate(reference, candidate, hits=lambda v: srs_hits_of_table(model, data, v))
    result.extra.update({"items": len(texts), "texts": kind, "variant": str(variant)})
    return result


def print_gate(name: str, result: GateResult) -> None:
    drop, bound = result.recall_drop, result.recall_drop_bound
    print(f"| variant | cosine (mean) | top-{result.k} overlap | R@10 | R@10 fp32 | drop | drop at the 95% bound | "
          f"gate |\n|---|---|---|---|---|---|---|---|\n"
          f"| {name} | {result.cosine_mean:.4f} | {result.overlap:.3f} (>= {result.min_overlap}) | "
          f"{result.recall:.4f} | {result.recall_reference:.4f} | "
          f"{'-' if drop is None else f'{100 * drop:+.1f}%'} | "
          f"{'-' if bound is None else f'{100 * bound:+.1f}%'} (<= {100 * result.max_recall_drop:.0f}%) | "
          f"{'pass' if result.passed else 'FAIL'} |")


def temporary_dir(prefix: str = "llmrec-quant-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# ----------------------------------------------------------------------------------------------- CLI
def run_cli(args: Any) -> int:
    """`python -m export.onnx quantize`: one variant of an exported graph."""
    from .artifact import ExportInputError

    src = Path(args.model)
    src = src / "model.onnx" if src.is_dir() else src
    if not src.is_file():
        raise ExportInputError(f"--model {args.model!r}: no model.onnx there")
    out = Path(args.out)
    if args.fp16:
        to_fp16(src, out)
    elif args.optimize:
        optimize(src, out)
    else:
        if args.int8 not in RECIPES:
            raise ExportInputError(f"--int8 must be one of {sorted(RECIPES)}, got {args.int8!r}")
        quantize_int8(src, out, args.int8)
    print(f"{src} -> {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


def add_parser(sub: Any) -> None:
    """Register the `quantize` subcommand on an argparse subparsers object."""
    from llmrec.cli import HelpFormatter

    p = sub.add_parser("quantize", formatter_class=HelpFormatter,
                       help="int8 / fp16 / optimised variant of an exported graph",
                       description="Write a variant of an exported ONNX graph (same inputs and outputs). "
                                   "`export.onnx all --int8 RECIPE` gates the variant it writes (gate.json); "
                                   "bench/export_speed.py gates raw exports and measures speed.")
    p.add_argument("--model", required=True, help="export folder (its model.onnx) or an .onnx file")
    p.add_argument("--out", required=True, help="output .onnx file")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--int8", metavar="RECIPE", help=f"int8 recipe: {', '.join(RECIPES)}")
    kind.add_argument("--fp16", action="store_true", help="float16 for GPUs (float32 inputs/outputs kept)")
    kind.add_argument("--optimize", action="store_true", help="ONNX Runtime graph optimisation, saved")
    p.add_argument("--quiet", action="store_true", default=False, help="log warnings only")
    p.set_defaults(func=run_cli)
