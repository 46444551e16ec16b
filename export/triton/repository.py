"""Write the Triton model repository from an embedder export and a user-encoder export.

    python -m export.onnx repository --embedder runs/r/onnx/item_embedder --user-encoder runs/r/onnx/user_encoder \
        --out model_repository/ [--flavour python|native] [--tensorrt]

Layout (standard Triton: `<model>/config.pbtxt` + `<model>/<version>/...`):

    item_encoder/   ensemble: text -> tokenizer -> item_embedder -> item_vector
    tokenizer/      Python backend (numpy + tokenizers): text -> input_ids, attention_mask
    item_embedder/  the embedder graph: input_ids, attention_mask -> item_vector
    user_encoder/   the SRS graph: item_vectors, attention_mask -> user_vector
    llmrec.json     what the repository was made from: sources, flavour, sha256 of every file
    README.md, .gitignore   the only foreign files tolerated in --out; kept as they are (KEPT_FILES)

Two flavours of the ONNX models, the rest is shared:
- `python` (runs on this CPU machine with the Triton bundled in nvidia-pytriton):
  a Python-backend `model.py` runs `model.onnx` with onnxruntime, KIND_CPU.
- `native` (GPU deployments, e.g. the NGC Triton container): `platform:
  "onnxruntime_onnx"`, KIND_GPU, optionally the TensorRT execution accelerator
  (`--tensorrt`: FP16, workspace, engine cache; parameter names from the
  onnxruntime backend README); or, with `--tensorrt-plan`, TensorRT engines
  built now by trtexec (`platform: "tensorrt_plan"`, export/triton/tensorrt.py).
The item_encoder is an ensemble rather than one Python model so that the same
pipeline also runs when item_embedder is a native model.

Tensor names, types and dims in config.pbtxt are read from the ONNX graphs
(checked against each export's export.json), never typed by hand. Model files
are copied, not linked: Triton (and a container mount) needs them inside the
repository; each copy is hashed on the way and checked against export.json.
The repository is built in a temporary sibling folder and moved into place,
so a failed write leaves the previous repository intact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.onnx.artifact import (
    DATA_FILE,
    EXPORT_FILE,
    ITEM_VECTORS_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    ExportInputError,
    read_manifest,
    sha256_file,
)
from llmrec.cli import HelpFormatter
from llmrec.manifests import (
    REPOSITORY_KEPT_FILES,
    REPOSITORY_MANIFEST,
    EmbedderSource,
    RepositoryManifest,
    UserEncoderSource,
)
from llmrec.names import (
    ATTENTION_MASK,
    INPUT_IDS,
    ITEM_EMBEDDER,
    ITEM_ENCODER,
    ITEM_VECTOR,
    ITEM_VECTORS,
    TEXT,
    TOKENIZER,
    USER_ENCODER,
    USER_VECTOR,
)

from .config import (
    Serving,
    TensorSpec,
    WarmupInput,
    add_ensemble_step,
    add_parameters,
    add_tensorrt,
    add_warmup,
    model_config,
    to_text,
)
from .tensorrt import PLAN_FILE, Shapes, build_plan, shape_list

logger = logging.getLogger("llmrec.export")

MANIFEST_FILE = REPOSITORY_MANIFEST
FLAVOURS = ("python", "native")
# the Python models that run inside Triton (copied into the repository as <model>/<version>/model.py)
TEMPLATES = Path(__file__).resolve().parents[2] / "serving" / "triton" / "models"
KEPT_FILES = REPOSITORY_KEPT_FILES  # checked-in files of a repository folder, kept when it is rewritten
WARMUP_LENGTH = 8  # tokens / history items in the warm-up requests

_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32", 9: "TYPE_BOOL"}


@dataclass
class RepositoryOptions:
    """How the repository serves the models (batching, instances, flavour, TensorRT)."""

    flavour: str = "python"
    version: int = 1
    max_batch_size: int = 32
    preferred_batch_sizes: list[int] = field(default_factory=lambda: [8, 16])
    # 0: Triton's batcher still joins requests already waiting but holds none back. The gateway forms the batches
    # (its queue waits only while calls arrive); a 2,000 us window here added 2.2 ms in Triton's queue to every
    # Recommend while joining almost nothing (1.0-1.06 requests per execution up to 64 callers,
    # bench/results/serving_load.md of 2026-12-07 before this default)
    max_queue_delay_us: int = 0
    instances: int = 1
    tokenizer_instances: int = 1
    threads: int = 0  # onnxruntime intra-op threads per instance; 0 = onnxruntime's choice
    tensorrt: bool = False  # onnxruntime's TensorRT execution provider on the ONNX graphs (engine built at load)
    tensorrt_plan: bool = False  # TensorRT engines built now with trtexec (`platform: "tensorrt_plan"`)
    trt_precision: str = "FP16"
    trt_workspace_bytes: int = 1 << 30
    trt_cache_path: str = "/tmp/llmrec-trt-cache"

    def __post_init__(self) -> None:
        checks = [
            ("flavour", self.flavour in FLAVOURS, f"one of {FLAVOURS}"),
            ("version", self.version >= 1, ">= 1"),
            ("max_batch_size", self.max_batch_size >= 1, ">= 1"),
            ("preferred_batch_sizes", all(1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes),
             "sizes between 1 and max_batch_size"),
            ("max_queue_delay_us", self.max_queue_delay_us >= 0, ">= 0"),
            ("instances", self.instances >= 1, ">= 1"),
            ("tokenizer_instances", self.tokenizer_instances >= 1, ">= 1"),
            ("threads", self.threads >= 0, ">= 0"),
            ("tensorrt", not self.tensorrt or self.flavour == "native",
             "used with --flavour native only (the python flavour runs onnxruntime on the CPU)"),
            ("tensorrt_plan", not self.tensorrt_plan or (self.flavour == "native" and not self.tensorrt),
             "used with --flavour native only, instead of --tensorrt (a plan is already a TensorRT engine)"),
            ("trt_precision", self.trt_precision in ("FP32", "FP16"), "FP32 or FP16"),
            ("trt_workspace_bytes", self.trt_workspace_bytes > 0, "> 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ExportInputError(f"repository option {name} must be {rule}, got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------------------------- graphs
def _load_structure(path: Path) -> Any:
    """The graph without its external weights; ExportInputError when the file is missing or not ONNX."""
    import onnx

    if not path.is_file():
        raise ExportInputError(f"{path} not found: not an llmrec ONNX export folder")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf DecodeError and friends: a damaged or foreign file
        raise ExportInputError(
            f"{path} is not a readable ONNX graph ({type(error).__name__}): export it again") from None


def graph_io(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph as Triton tensors (batch axis dropped, symbolic axes -1).

    Only the graph structure is read (external weight files are not loaded).
    """
    model = _load_structure(model_path)
    initializers = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _ONNX_TO_TRITON:
            raise ExportInputError(f"{model_path}: tensor {value.name} has ONNX type {tensor.elem_type}, "
                                   f"not one of {sorted(_ONNX_TO_TRITON)}")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if not dims:
            raise ExportInputError(f"{model_path}: tensor {value.name} has no batch axis")
        return TensorSpec(value.name, _ONNX_TO_TRITON[tensor.elem_type], dims[1:])

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs


def check_graph(folder: Path, manifest: dict[str, Any], inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """The graph's tensor names must be the ones export.json promises (else the export is stale or edited)."""
    for role, declared, actual in (("inputs", manifest.get("inputs", []), inputs),
                                   ("outputs", manifest.get("outputs", []), outputs)):
        names = [t["name"] for t in declared]
        if names != [t.name for t in actual]:
            raise ExportInputError(f"{folder}: {EXPORT_FILE} names {role} {names} but {MODEL_FILE} has "
                                   f"{[t.name for t in actual]}")


def _tensor(manifest_path: Path, specs: list[TensorSpec], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise ExportInputError(f"{manifest_path}: the graph has no tensor {name!r} (has {[s.name for s in specs]})")


# ---------------------------------------------------------------------------------------------- config.pbtxt
def _serving(options: RepositoryOptions, kind: str, instances: int | None = None) -> Serving:
    return Serving(options.max_batch_size, list(options.preferred_batch_sizes), options.max_queue_delay_us,
                   options.instances if instances is None else instances, kind)


def _onnx_model_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], options: RepositoryOptions,
                       warmup: dict[str, WarmupInput], trt_shapes: dict[str, str] | None) -> str:
    """config.pbtxt of an exported model: python flavour, native ONNX, or a native TensorRT plan."""
    if options.flavour == "python":
        config = model_config(name, inputs, outputs, _serving(options, "KIND_CPU"), backend="python")
    else:
        platform = "tensorrt_plan" if options.tensorrt_plan else "onnxruntime_onnx"
        config = model_config(name, inputs, outputs, _serving(options, "KIND_GPU"), platform=platform)
    if not options.tensorrt_plan:
        add_parameters(config, {"intra_op_thread_count": str(options.threads)})
    if options.flavour == "native" and options.tensorrt:
        add_tensorrt(config, {"precision_mode": options.trt_precision,
                              "max_workspace_size_bytes": str(options.trt_workspace_bytes),
                              "trt_engine_cache_enable": "1",
                              "trt_engine_cache_path": f"{options.trt_cache_path.rstrip('/')}/{name}",
                              **(trt_shapes or {})})
    add_warmup(config, warmup)
    return to_text(config)


def _trt_profile(shapes: Shapes) -> dict[str, str]:
    """TensorRT optimisation profile (min/opt/max shape per input) so engines are not rebuilt per shape."""
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: shape_list(shapes, index) for index, key in enumerate(keys)}


def _write_graph(folder: Path, manifest: dict[str, Any], version_dir: Path, shapes: Shapes,
                 options: RepositoryOptions) -> None:
    """The model file(s) of a version folder: the ONNX graph (+ external data), or a TensorRT plan of it."""
    if options.tensorrt_plan:
        build_plan(folder / MODEL_FILE, version_dir / PLAN_FILE, shapes, options.trt_precision,
                   options.trt_workspace_bytes)
    else:
        _copy_graph(folder, manifest, version_dir)


def tokenizer_config(options: RepositoryOptions) -> str:
    tokens = [TensorSpec(INPUT_IDS, "TYPE_INT64", [-1]), TensorSpec(ATTENTION_MASK, "TYPE_INT64", [-1])]
    config = model_config(TOKENIZER, [TensorSpec(TEXT, "TYPE_STRING", [1])], tokens,
                          _serving(options, "KIND_CPU", options.tokenizer_instances), backend="python")
    add_warmup(config, {TEXT: WarmupInput("TYPE_STRING", [1])})
    return to_text(config)


def item_encoder_config(vector: TensorSpec, options: RepositoryOptions) -> str:
    """The ensemble: text -> tokenizer -> item_embedder; intermediate tensors are internal names."""
    config = model_config(ITEM_ENCODER, [TensorSpec(TEXT, "TYPE_STRING", [1])], [vector],
                          _serving(options, "KIND_CPU"), platform="ensemble")
    add_ensemble_step(config, TOKENIZER, {TEXT: TEXT},
                      {INPUT_IDS: "token_ids", ATTENTION_MASK: "token_mask"})
    add_ensemble_step(config, ITEM_EMBEDDER, {INPUT_IDS: "token_ids", ATTENTION_MASK: "token_mask"},
                      {vector.name: vector.name})
    return to_text(config)


# ---------------------------------------------------------------------------------------------- files
def copy_hashed(src: Path, dst: Path, expected: str | None = None) -> str:
    """Copy `src` to `dst` while hashing it; ExportInputError if the bytes differ from `expected` (export.json)."""
    digest = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        for chunk in iter(lambda: fin.read(1 << 22), b""):
            digest.update(chunk)
            fout.write(chunk)
    shutil.copystat(src, dst)
    value = digest.hexdigest()
    if expected is not None and value != expected:
        raise ExportInputError(f"{src}: sha256 {value} differs from export.json ({expected}): the export changed "
                               "after it was written; export it again")
    return value


def plain_file_name(location: str) -> bool:
    """True for a file name that stays in its folder: no directory part, not absolute, not '.' or '..'."""
    return bool(location) and location not in (".", "..") and "/" not in location and "\\" not in location \
        and Path(location).name == location and "\x00" not in location


def _graph_files(folder: Path) -> list[str]:
    """model.onnx and its external-data files (names as the graph refers to them). A location must be a plain
    file name inside the model folder: '../x' would be read from outside it, and an absolute path would make
    the copy's source and destination the same file."""
    model = _load_structure(folder / MODEL_FILE)
    names = {MODEL_FILE}
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                if not plain_file_name(entry.value):
                    raise ExportInputError(f"{folder / MODEL_FILE}: initializer {tensor.name!r} keeps its weights "
                                           f"at {entry.value!r}; an external-data location must be a plain file "
                                           "name inside the model folder")
                names.add(entry.value)
    if (folder / DATA_FILE).is_file():
        names.add(DATA_FILE)
    return sorted(names)


def _copy_graph(folder: Path, manifest: dict[str, Any], version_dir: Path) -> None:
    """The graph files of `folder`, each checked against the sha256 `manifest["files"]` records for it."""
    for name in _graph_files(folder):
        if not (folder / name).is_file():
            raise ExportInputError(f"{folder}: {name} (weights of {MODEL_FILE}) is missing")
        copy_hashed(folder / name, version_dir / name, manifest.get("files", {}).get(name))


@dataclass(frozen=True)
class ServedVariant:
    """An int8 variant of the embedder graph to serve instead of fp32: its folder (model.onnx + external data)
    and its gate.json (export/onnx/deploy.py), which must say it passed and name this graph by sha256."""

    folder: Path
    gate: dict[str, Any]

    def graph_record(self) -> dict[str, Any]:
        sha = sha256_file(self.folder / MODEL_FILE)
        if not self.gate.get("passed"):
            raise ExportInputError(f"{self.folder}: the int8 variant did not pass its quality gate; serve fp32")
        if self.gate.get("variant_sha256") != sha:
            raise ExportInputError(f"{self.folder / MODEL_FILE}: not the graph its gate.json was measured on")
        keep = ("overlap", "recall", "recall_reference", "recall_drop", "recall_drop_bound", "max_recall_drop")
        return {"variant": "int8", "recipe": self.gate.get("recipe"), "sha256": sha,
                "gate": {k: self.gate.get(k) for k in keep}}


def tokenization_settings(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the tokenizer model needs to reproduce the embedder's tokenisation, from export.json."""
    needed = ["template", "max_length", "pooling", "eos_token_id", "pad_token_id"]
    missing = [k for k in needed if manifest.get(k) is None]
    if missing:
        raise ExportInputError(f"{folder / EXPORT_FILE} lacks {missing}: the tokenizer step cannot reproduce the "
                               "embedder's tokenisation; export the embedder again")
    config_path = folder / TOKENIZER_DIR / "tokenizer_config.json"
    tokenizer_config_json = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return {
        "template": manifest["template"],
        "max_length": int(manifest["max_length"]),
        "append_eos": bool(manifest["append_eos"]),
        "eos_token_id": int(manifest["eos_token_id"]),
        "pad_token_id": int(manifest["pad_token_id"]),
        "padding_side": manifest.get("padding_side") or "right",
        "truncation_side": tokenizer_config_json.get("truncation_side") or "right",
    }


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _ones_int64(path: Path, count: int) -> None:
    """A warm-up data file: `count` int64 ones, raw little-endian (Triton reads <model>/warmup/<file>)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((1).to_bytes(8, "little", signed=True) for _ in range(count)))


def _hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_FILE}


# ---------------------------------------------------------------------------------------------- writer
def _write_onnx_model(model_dir: Path, folder: Path, manifest: dict[str, Any], inputs: list[TensorSpec],
                      output: TensorSpec, shapes: Shapes, sample: tuple[TensorSpec, list[int]],
                      options: RepositoryOptions) -> None:
    """One exported graph as a Triton model: config.pbtxt, a warm-up request (zeros of `sample`'s tensor and
    dims, an all-ones attention mask of the same length), the version folder's graph (+ model.py for the python
    flavour). `folder` holds the graph files, `manifest["files"]` their sha256."""
    tensor, dims = sample
    length = dims[0]
    warmup = {tensor.name: WarmupInput(tensor.data_type, dims),
              ATTENTION_MASK: WarmupInput("TYPE_INT64", [length], ATTENTION_MASK)}
    config = _onnx_model_config(model_dir.name, inputs, [output], options, warmup, _trt_profile(shapes))
    _write_text(model_dir / "config.pbtxt", config)
    _ones_int64(model_dir / "warmup" / ATTENTION_MASK, length)
    version_dir = model_dir / str(options.version)
    _write_graph(folder, manifest, version_dir, shapes, options)
    if options.flavour == "python":
        shutil.copy2(TEMPLATES / "onnx_model.py", version_dir / "model.py")


def _write_embedder_models(root: Path, folder: Path, options: RepositoryOptions,
                           variant: ServedVariant | None = None) -> EmbedderSource:
    manifest = read_manifest(folder, kind="embedder")
    graph = {"variant": "fp32"} if variant is None else variant.graph_record()
    inputs, outputs = graph_io(folder / MODEL_FILE)
    check_graph(folder, manifest, inputs, outputs)
    ids = _tensor(folder, inputs, INPUT_IDS)
    _tensor(folder, inputs, ATTENTION_MASK)
    vector = _tensor(folder, outputs, ITEM_VECTOR)
    if not (folder / TOKENIZER_DIR / "tokenizer.json").is_file():
        raise ExportInputError(f"{folder}: {TOKENIZER_DIR}/tokenizer.json is missing (the tokenizer model needs it)")
    version = str(options.version)
    length = min(WARMUP_LENGTH, int(manifest.get("max_length") or WARMUP_LENGTH))

    # item_embedder
    model_dir = root / ITEM_EMBEDDER
    max_length = int(manifest.get("max_length") or 512)
    token_shapes = ([1, 1], [options.preferred_batch_sizes[-1], max_length // 2 or 1],
                    [options.max_batch_size, max_length])
    shapes = {ids.name: token_shapes, ATTENTION_MASK: token_shapes}
    if variant is None:
        _write_onnx_model(model_dir, folder, manifest, inputs, vector, shapes, (ids, [length]), options)
    else:  # the same interface (checked), the variant's weights
        v_inputs, v_outputs = graph_io(variant.folder / MODEL_FILE)
        if (v_inputs, v_outputs) != (inputs, outputs):
            raise ExportInputError(f"{variant.folder / MODEL_FILE}: its inputs/outputs differ from {folder}'s graph")
        _write_onnx_model(model_dir, variant.folder, {"files": {MODEL_FILE: graph["sha256"]}}, inputs, vector,
                          shapes, (ids, [length]), options)

    # tokenizer
    tok_dir = root / TOKENIZER
    _write_text(tok_dir / "config.pbtxt", tokenizer_config(options))
    (tok_dir / version).mkdir(parents=True, exist_ok=True)
    shutil.copy2(TEMPLATES / "tokenizer_model.py", tok_dir / version / "model.py")
    for path in sorted((folder / TOKENIZER_DIR).iterdir()):
        if path.is_file():
            rel = f"{TOKENIZER_DIR}/{path.name}"
            copy_hashed(path, tok_dir / version / rel, manifest.get("files", {}).get(rel))
    settings = tokenization_settings(folder, manifest)
    _write_text(tok_dir / version / "tokenization.json", json.dumps(settings, indent=2) + "\n")

    # item_encoder (ensemble; its version folder stays empty, as Triton expects)
    (root / ITEM_ENCODER / version).mkdir(parents=True, exist_ok=True)
    _write_text(root / ITEM_ENCODER / "config.pbtxt", item_encoder_config(vector, options))
    return EmbedderSource(path=str(folder.resolve()), export_sha256=sha256_file(folder / EXPORT_FILE),
                          dim=manifest.get("dim"), tokenization=settings, item_text=manifest.get("item_text"),
                          source=manifest.get("source") or manifest.get("checkpoint"), graph=graph)


def _write_user_encoder_model(root: Path, folder: Path, options: RepositoryOptions) -> UserEncoderSource:
    manifest = read_manifest(folder, kind=USER_ENCODER)
    inputs, outputs = graph_io(folder / MODEL_FILE)
    check_graph(folder, manifest, inputs, outputs)
    items = _tensor(folder, inputs, ITEM_VECTORS)
    _tensor(folder, inputs, ATTENTION_MASK)
    user = _tensor(folder, outputs, USER_VECTOR)
    hidden = items.dims[-1]
    if hidden < 1:
        raise ExportInputError(f"{folder}: item_vectors has no fixed hidden size (dims {items.dims})")
    max_len = int(manifest.get("max_len") or 50)
    length = min(WARMUP_LENGTH, max_len)
    model_dir = root / USER_ENCODER
    shapes = {
        items.name: ([1, 1, hidden], [options.preferred_batch_sizes[-1], max_len, hidden],
                     [options.max_batch_size, max_len, hidden]),
        ATTENTION_MASK: ([1, 1], [options.preferred_batch_sizes[-1], max_len], [options.max_batch_size, max_len]),
    }
    _write_onnx_model(model_dir, folder, manifest, inputs, user, shapes, (items, [length, hidden]), options)
    vectors = folder / ITEM_VECTORS_FILE
    return UserEncoderSource(
        path=str(folder.resolve()), export_sha256=sha256_file(folder / EXPORT_FILE), hidden_size=hidden,
        max_len=max_len,
        # the item table the user encoder reads stays in the export (the gateway's item store loads it)
        item_vectors={"path": str(vectors.resolve()), "sha256": manifest.get("files", {}).get(ITEM_VECTORS_FILE)}
        if vectors.is_file() else None,
        source=manifest.get("source") or manifest.get("checkpoint"))


def _replace(tmp: Path, out: Path, force: bool = False) -> None:
    """Move the finished repository into place; an existing `out` must be empty or one we wrote (or `force`).

    `KEPT_FILES` (the checked-in README and .gitignore of the project's model_repository/) are the only
    foreign files allowed in `out`; they are carried into the new repository (Triton ignores files at the
    repository root) and are not listed in llmrec.json, which describes what export wrote."""
    if out.exists():
        if not out.is_dir():
            raise ExportInputError(f"--out {out} exists and is not a folder")
        if not force and any(p.name not in KEPT_FILES for p in out.iterdir()) and not (out / MANIFEST_FILE).is_file():
            raise ExportInputError(f"--out {out} is a non-empty folder without {MANIFEST_FILE}: not overwriting "
                                   "something this tool did not write (pass --force to replace it anyway)")
        for name in KEPT_FILES:
            if (out / name).is_file():
                shutil.copy2(out / name, tmp / name)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_repository(embedder: str | Path | None, user_encoder: str | Path | None, out: str | Path,
                     options: RepositoryOptions | None = None, force: bool = False,
                     variant: ServedVariant | None = None) -> dict[str, Any]:
    """Write the Triton repository at `out` (replacing one written before, or any folder with `force`); returns
    its manifest (llmrec.json). `variant`: serve that int8 graph (it passed its gate) instead of fp32."""
    options = options or RepositoryOptions()
    if embedder is None and user_encoder is None:
        raise ExportInputError("give --embedder and/or --user-encoder")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        embedder_source = None if embedder is None else _write_embedder_models(tmp, Path(embedder), options,
                                                                                variant)
        user_source = None if user_encoder is None else _write_user_encoder_model(tmp, Path(user_encoder), options)
        models = sorted(p.name for p in tmp.iterdir() if (p / "config.pbtxt").is_file())
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest = RepositoryManifest(flavour=options.flavour, created=created, options=asdict(options),
                                      models=models, files=_hash_tree(tmp), embedder=embedder_source,
                                      user_encoder=user_source)
        manifest.write(tmp)
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp is private (0700); Triton may run as another user
            path.chmod(0o755 if path.is_dir() else 0o644)
        _replace(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("repository_written", extra={"out": str(out), "flavour": options.flavour, "models": models,
                                             "seconds": round(time.perf_counter() - t0, 3)})
    return manifest.to_dict()


# ---------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `repository` on the `python -m export.onnx` parser (sets `func`, as the other subcommands)."""
    parser = subparsers.add_parser("repository", help="write the Triton model repository",
                                   description=__doc__, formatter_class=HelpFormatter)
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    defaults = RepositoryOptions()
    parser.add_argument("--embedder", help="embedder export folder (model.onnx, tokenizer/, export.json)")
    parser.add_argument("--user-encoder", help="user-encoder export folder (model.onnx, export.json)")
    parser.add_argument("--out", required=True, help="repository folder to write (replaced if written by this tool)")
    parser.add_argument("--force", action="store_true", help="replace --out even when this tool did not write it")
    parser.add_argument("--flavour", choices=FLAVOURS, default=defaults.flavour,
                        help="python: Python backend + onnxruntime on CPU (runs here); native: onnxruntime_onnx on GPU")
    parser.add_argument("--version", type=int, default=defaults.version, help="model version folder")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help="largest batch Triton's dynamic batcher forms (max_batch_size)")
    parser.add_argument("--preferred-batch-size", type=int, nargs="+", default=defaults.preferred_batch_sizes,
                        dest="preferred_batch_sizes", help="batch sizes the dynamic batcher aims for")
    parser.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us,
                        help="how long the dynamic batcher waits to fill a batch (microseconds)")
    parser.add_argument("--instances", type=int, default=defaults.instances, help="instances per ONNX model")
    parser.add_argument("--tokenizer-instances", type=int, default=defaults.tokenizer_instances,
                        help="instances of the Python tokenizer model")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="onnxruntime intra-op threads per instance (0: onnxruntime decides)")
    parser.add_argument("--tensorrt", action="store_true",
                        help="native flavour: onnxruntime's TensorRT execution accelerator (engine built at load)")
    parser.add_argument("--tensorrt-plan", action="store_true",
                        help="native flavour: build TensorRT plans now with trtexec (on the serving GPU host)")
    parser.add_argument("--trt-precision", choices=("FP16", "FP32"), default=defaults.trt_precision,
                        help="TensorRT precision (accelerator and plans)")
    parser.add_argument("--trt-workspace-bytes", type=int, default=defaults.trt_workspace_bytes,
                        help="TensorRT builder workspace")
    parser.add_argument("--trt-cache-path", default=defaults.trt_cache_path,
                        help="TensorRT engine cache folder on the serving machine (one sub-folder per model)")
    parser.add_argument("--quiet", action="store_true", default=False, help="log warnings only")
    parser.set_defaults(func=run)
    return parser


def options_from_args(args: argparse.Namespace) -> RepositoryOptions:
    return RepositoryOptions(
        flavour=args.flavour, version=args.version, max_batch_size=args.max_batch_size,
        preferred_batch_sizes=list(args.preferred_batch_sizes), max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances, tokenizer_instances=args.tokenizer_instances, threads=args.threads,
        tensorrt=args.tensorrt, tensorrt_plan=args.tensorrt_plan, trt_precision=args.trt_precision,
        trt_workspace_bytes=args.trt_workspace_bytes,
        trt_cache_path=args.trt_cache_path)


def run(args: argparse.Namespace) -> int:
    """Handler of `repository`: bad input is one line on stderr and exit code 2."""
    try:
        manifest = write_repository(args.embedder, args.user_encoder, args.out, options_from_args(args),
                                    force=args.force)
    except ExportInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "flavour": manifest["flavour"], "models": manifest["models"]}))
    return 0


def main_repository(argv: list[str] | None = None) -> int:
    """`python -m export.onnx repository ...` without the package's dispatcher (also `python -m
    export.onnx.repository`)."""
    parser = configure_parser(argparse.ArgumentParser(prog="python -m export.onnx repository", description=__doc__,
                                                      formatter_class=HelpFormatter))
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main_repository())
