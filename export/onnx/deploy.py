"""`python -m export.onnx all`: everything a deployment needs from two trained checkpoints, in one command.

    python -m export.onnx all --embedder runs/demo/embedder/item-contrastive \\
        --srs runs/demo/srs/sasrec-llm2rec/seed-2024 --out runs/demo/onnx \\
        --repository model_repository [--index runs/demo/index --dataset ml-100k] [--int8 nbits8]

Steps (each the same function its own subcommand runs):
  embedder      OUT/item_embedder: the embedder with the SRS's item adapter inside, so a new item's text
                lands in the item space the user encoder scores (`export.onnx embedder --adapter SRS`)
  user-encoder  OUT/user_encoder: the SRS sequence encoder + its item table (`export.onnx user-encoder`)
  int8          OUT/item_embedder_int8/model.onnx, only with --int8, and its quality gate against fp32
                on the --dataset catalogue (top-10 neighbour overlap, the SRS's Recall@10 drop) in
                gate.json beside it; with --serve-int8 the repository serves the int8 graph when it passed,
                fp32 otherwise (llmrec.json's sources.embedder.graph says which)
  repository    the Triton model repository (`export.onnx repository`)
  index         the FAISS snapshot over the user encoder's item table, only with --index (`export.index`)

A step is skipped when its output exists and the content hash of its inputs (checkpoint files, upstream
export manifests, options) equals the one recorded when it last ran, in OUT/deploy.json; so a second run
costs only the hashing. --force redoes every step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrec.cli import HelpFormatter
from llmrec.files import sha256_file
from llmrec.names import ITEM_EMBEDDER, USER_ENCODER

from .artifact import EXPORT_FILE, ExportInputError
from .validate import DEFAULT_MIN_COSINE

logger = logging.getLogger("llmrec.export")

RECORD_FILE = "deploy.json"
GATE_FILE = "gate.json"  # beside the int8 variant: its quality gate against fp32


def tree_sha256(folder: Path) -> str:
    """One sha256 over the relative names and bytes of every file under `folder` (its content identity)."""
    if not folder.is_dir():
        raise ExportInputError(f"{folder}: no such folder")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StepRecord:
    """OUT/deploy.json: the input fingerprint of every step's last successful run and the sha256 of the output it
    wrote (written after each step). A step is up to date when both still hold: an output that another run
    rewrote since (two runs sharing one model_repository/) is written again, not trusted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: dict[str, Any] = json.loads(path.read_text()).get("steps", {}) if path.is_file() else {}

    def up_to_date(self, step: str, key: str, output: Path) -> bool:
        done = self.steps.get(step, {})
        return (output.is_file() and done.get("fingerprint") == key
                and done.get("output_sha256") == sha256_file(output))

    def done(self, step: str, key: str, output: Path, seconds: float) -> None:
        self.steps[step] = {"fingerprint": key, "output": str(output), "output_sha256": sha256_file(output),
                            "seconds": round(seconds, 1),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"steps": self.steps}, indent=2) + "\n")
        os.replace(tmp, self.path)


def run_step(record: StepRecord, step: str, key: str, output: Path, work: Callable[[], Any], force: bool) -> bool:
    """Run `work` unless `output` is up to date for `key`; True when it ran."""
    if not force and record.up_to_date(step, key, output):
        logger.info("step_skipped", extra={"step": step, "reason": "inputs unchanged", "output": str(output)})
        print(f"[{step}] up to date: {output}")
        return False
    print(f"[{step}] -> {output}")
    t0 = time.perf_counter()
    work()
    record.done(step, key, output, time.perf_counter() - t0)
    return True


def manifest_sha(folder: Path) -> str:
    return sha256_file(folder / EXPORT_FILE)


def write_gate(embedder_dir: Path, variant: Path, variant_sha256: str, recipe: str, srs: Path, dataset: str,
               cache_dir: str | None, out: Path) -> None:
    """The int8 variant against fp32 on the whole catalogue (export.onnx.quantize.gate_variant), as JSON."""
    from .quantize import gate_variant, print_gate

    result = gate_variant(embedder_dir, variant, srs, dataset, cache_dir=cache_dir)
    print_gate(f"int8 {recipe}", result)
    report = {"recipe": recipe, "variant_sha256": variant_sha256, "fp32_export_sha256": manifest_sha(
        embedder_dir), "srs": str(srs), "dataset": dataset, **result.to_dict()}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)


def deploy_all(args: argparse.Namespace) -> dict[str, bool]:
    """Run the steps in order; returns {step: ran}."""
    from export.triton.repository import RepositoryOptions, ServedVariant, write_repository

    from .embedder import export_embedder
    from .quantize import RECIPES, quantize_int8
    from .user_encoder import export_user_encoder

    embedder_ckpt, srs_ckpt, out = Path(args.embedder), Path(args.srs), Path(args.out)
    if args.int8 is not None and args.int8 not in RECIPES:
        raise ExportInputError(f"--int8 must be one of {sorted(RECIPES)}, got {args.int8!r}")
    if args.index is not None and not args.dataset:
        raise ExportInputError("--index needs --dataset (the titles and attributes of the items)")
    record = StepRecord(out / RECORD_FILE)
    embedder_dir, user_dir = out / ITEM_EMBEDDER, out / USER_ENCODER
    srs_sha = tree_sha256(srs_ckpt)
    ran: dict[str, bool] = {}

    key = fingerprint(embedder=tree_sha256(embedder_ckpt), srs=srs_sha, min_cosine=args.min_cosine)
    ran["embedder"] = run_step(record, "embedder", key, embedder_dir / EXPORT_FILE, lambda: export_embedder(
        embedder_ckpt, embedder_dir, adapter=srs_ckpt, min_cosine=args.min_cosine, cache_dir=args.cache_dir),
        args.force)

    key = fingerprint(srs=srs_sha, min_cosine=args.min_cosine)
    ran["user-encoder"] = run_step(record, "user-encoder", key, user_dir / EXPORT_FILE, lambda: export_user_encoder(
        srs_ckpt, user_dir, min_cosine=args.min_cosine, cache_dir=args.cache_dir), args.force)

    variant = None
    if args.int8 is not None:
        int8 = out / "item_embedder_int8" / "model.onnx"
        key = fingerprint(embedder=manifest_sha(embedder_dir), recipe=RECIPES[args.int8].to_dict())
        ran["int8"] = run_step(record, "int8", key, int8, lambda: quantize_int8(
            embedder_dir / "model.onnx", int8, args.int8), args.force)
        if args.dataset:
            gate_file = int8.parent / GATE_FILE
            int8_sha = sha256_file(int8)
            key = fingerprint(embedder=manifest_sha(embedder_dir), int8=int8_sha, srs=srs_sha, dataset=args.dataset)
            ran["int8-gate"] = run_step(record, "int8-gate", key, gate_file, lambda: write_gate(
                embedder_dir, int8, int8_sha, args.int8, srs_ckpt, args.dataset, args.cache_dir, gate_file),
                args.force)
            report = json.loads(gate_file.read_text())
            variant = ServedVariant(int8.parent, report) if report["passed"] and args.serve_int8 else None
            print(f"int8 {args.int8}: " + ("passes" if report["passed"] else "fails") + " the quality gate "
                  f"(top-10 overlap {report['overlap']:.3f}, R@10 drop {100 * (report['recall_drop'] or 0):+.1f}%, "
                  f"{100 * (report['recall_drop_bound'] or 0):+.1f}% at the 95% bound); "
                  f"the repository serves the {'int8' if variant else 'fp32'} graph")

    options = RepositoryOptions(flavour=args.flavour, tensorrt=args.tensorrt)
    repository = Path(args.repository)
    key = fingerprint(embedder=manifest_sha(embedder_dir), user=manifest_sha(user_dir), options=options.__dict__,
                      embedder_dir=str(embedder_dir.resolve()), user_dir=str(user_dir.resolve()),
                      variant=None if variant is None else sha256_file(variant.folder / "model.onnx"))
    ran["repository"] = run_step(record, "repository", key, repository / "llmrec.json", lambda: write_repository(
        embedder_dir, user_dir, repository, options, variant=variant), args.force)

    if args.index is not None:
        from export.index import IndexBuildError, build_index

        index = Path(args.index)

        def build() -> None:
            try:
                build_index(user_dir, args.dataset, index, factory=args.factory, cache_dir=args.cache_dir)
            except IndexBuildError as exc:
                raise ExportInputError(str(exc)) from exc

        key = fingerprint(user=manifest_sha(user_dir), dataset=args.dataset, factory=args.factory)
        ran["index"] = run_step(record, "index", key, index / "manifest.json", build, args.force)
    return ran


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    ran = deploy_all(args)
    done = [step for step, did in ran.items() if did]
    print(f"deployment ready in {time.perf_counter() - t0:.1f} s: repository {args.repository}"
          + (f", index {args.index}" if args.index else "")
          + f" ({', '.join(done) if done else 'nothing'} rebuilt)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `all` on the `python -m export.onnx` parser."""
    from export.triton.repository import FLAVOURS, RepositoryOptions

    p = sub.add_parser("all", formatter_class=HelpFormatter,
                       help="embedder + user encoder + Triton repository (+ index) in one command",
                       description=__doc__)
    p.add_argument("--embedder", required=True, help="embedder checkpoint or a stage's out folder")
    p.add_argument("--srs", required=True, help="SRS seed folder trained on that embedder's item vectors")
    p.add_argument("--out", required=True, help="folder of the ONNX exports (item_embedder/, user_encoder/)")
    p.add_argument("--repository", default="model_repository", help="Triton model repository to write")
    p.add_argument("--flavour", choices=FLAVOURS, default=RepositoryOptions.flavour,
                   help="python: Python backend + onnxruntime (CPU); native: onnxruntime_onnx (GPU)")
    p.add_argument("--tensorrt", action="store_true", help="native flavour: TensorRT execution accelerator")
    p.add_argument("--int8", metavar="RECIPE", default=None, help="also write this int8 variant of the embedder")
    p.add_argument("--serve-int8", action="store_true",
                   help="serve the int8 variant when it passes its quality gate (default: gate it, serve fp32; a "
                        "variant can pass and still be slower than fp32 on a CPU: bench/export_speed.py says)")
    p.add_argument("--index", default=None, help="also build the FAISS index snapshot here")
    p.add_argument("--dataset", default="ml-100k", help="the dataset of the index's titles and attributes")
    p.add_argument("--factory", default="Flat", help="FAISS index_factory string of the index")
    p.add_argument("--cache-dir", default=None, help="llmrec cache (base models, processed datasets); "
                                                     "default $LLMREC_CACHE or ~/.cache/llmrec")
    p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help="fail an export whose minimum cosine to torch is below this")
    p.add_argument("--force", action="store_true", help="redo every step even when its inputs are unchanged")
    p.add_argument("--quiet", action="store_true", default=False, help="log warnings only")
    p.set_defaults(func=run)
