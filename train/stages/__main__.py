"""python -m train.stages {csft,mntp,item-contrastive,llm2rec,scft,co-occurrence,rat}: train the LLM item embedder
(LLM2Rec's and LLMEmb's stages, and a co-occurrence contrastive stage).

  python -m train.stages csft --dataset ml-100k --embedder smollm2 --out runs/r/embedder/csft --profile cpu-small
  python -m train.stages mntp --embedder runs/r/embedder/csft --out runs/r/embedder/mntp --profile cpu-small
  python -m train.stages llm2rec --dataset ml-100k --profile cpu-small --out runs/r/embedder
A collaborative stage within a CPU budget: items consumed close together are positives (train/stages/cooccurrence.py):
  python -m train.stages co-occurrence --dataset ml-100k --embedder smollm2 --out runs/r/embedder/co --profile cpu-small
LLMEmb: SCFT on attribute sentences, embeddings, then RAT against an ID-based SASRec:
  python -m train.stages scft --dataset ml-100k --embedder smollm2 --out runs/r/embedder/scft --profile cpu-small
  python -m train.embed --embedder runs/r/embedder/scft --text attributes --out runs/r/embeddings-scft
  python -m train.srs --items ids --seeds 2024 --out runs/r/srs/sasrec-ids
  python -m train.stages rat --embeddings runs/r/embeddings-scft/items.safetensors \\
      --id-srs runs/r/srs/sasrec-ids/seed-2024 --out runs/r/srs/llmemb --pca 128 --alpha 0.01

Re-running a command resumes its checkpoint (same settings) or skips it (finished).
Distributed: accelerate launch --config_file train/accelerate/ddp.yaml -m train.stages csft ...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from llmrec.cli import HelpFormatter, add_force_option, read_config_file
from llmrec.files import refuse_foreign_folder
from llmrec.logs import setup_logging

from ..data import DataConfig, load_dataset
from ..srs.runs import OUT_MARKERS as SEEDS_OUT_MARKERS
from .common import StageError
from .config import PROFILE_NAMES
from .loop import OUT_MARKERS as STAGE_OUT_MARKERS
from .pipeline import LLM2REC_ORDER, STAGES, make_stage, run_llm2rec

EXIT_BAD_INPUT = 2
COMMON_FLAGS = {"steps": int, "batch_size": int, "grad_accum": int, "lr": float, "seed": int, "lora_r": int}


def profile_defaults(name: str, config_classes: list[type]) -> str:
    """`paper 1000, cpu-small 100, demo 20` for one field, per stage when the stages differ."""
    per_stage = {}
    for cls in config_classes:
        values = ", ".join(f"{profile} {getattr(cls.profile(profile), name)}" for profile in PROFILE_NAMES)
        per_stage.setdefault(values, []).append(cls.__name__.removesuffix("Config"))
    if len(per_stage) == 1:
        return next(iter(per_stage))
    return "; ".join(f"{'/'.join(stages)}: {values}" for values, stages in per_stage.items())


def add_stage_options(p: argparse.ArgumentParser, config_classes: list[type]) -> None:
    """The options of a stage command; the help of each tunable flag lists its value in every profile."""
    p.add_argument("--dataset", default="ml-100k", help="ml-100k, a RecBole atomic folder, or an LLM2Rec folder")
    p.add_argument("--embedder", default="smollm2",
                   help="smollm2, a local HF causal-LM folder, an embedder checkpoint or a stage's out folder")
    p.add_argument("--out", required=True, help="output folder (resumed when it holds a checkpoint)")
    add_force_option(p)
    p.add_argument("--profile", default="paper", choices=PROFILE_NAMES,
                   help="hyper-parameter set: the papers' values, a 2-core CPU budget, or a smoke run")
    for name, kind in COMMON_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"override {name} (default: the profile's: {profile_defaults(name, config_classes)})")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None,
                   help="train LoRA adapters (--no-lora: full fine-tuning; default: the profile's: "
                        f"{profile_defaults('lora', config_classes)})")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="stage config fields from a YAML mapping (the same keys as --set); --set wins over it")
    fields_list = sorted({f.name for cls in config_classes for f in fields(cls)})
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override any config field, e.g. --set temperature=0.1; fields: {', '.join(fields_list)}")
    p.add_argument("--stop-after", type=int, default=None,
                   help="checkpoint and stop after this many steps (resume later)")
    p.add_argument("--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item")
    p.add_argument("--cache-dir", default=None, help="processed datasets and base models (default $LLMREC_CACHE)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: accelerate's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.stages", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_, config_cls) in STAGES.items():
        add_stage_options(sub.add_parser(name, help=f"the {name} stage", formatter_class=HelpFormatter),
                          [config_cls])
    add_stage_options(sub.add_parser("llm2rec", help=f"all stages in order: {', '.join(LLM2REC_ORDER)}",
                                     formatter_class=HelpFormatter), [STAGES[n][1] for n in LLM2REC_ORDER])
    add_rat_parser(sub)
    return p


def add_rat_parser(sub: Any) -> None:
    """`rat`: LLMEmb's recommendation adaptation training (train/srs/rat.py); SRS settings via --set."""
    from ..srs.rat import DEFAULT_ALPHA, DEFAULT_TEMPERATURE

    r = sub.add_parser("rat", help="LLMEmb's recommendation adaptation training (frozen LLM embeddings + adapter "
                                   "aligned with an ID SASRec)", formatter_class=HelpFormatter)
    r.add_argument("--dataset", default="ml-100k", help="ml-100k, a RecBole atomic folder, or an LLM2Rec folder")
    r.add_argument("--embeddings", required=True, help="item embeddings (.safetensors from train.embed, or .npy)")
    r.add_argument("--id-srs", required=True, help="an ID-based SASRec checkpoint folder (train.srs --items ids)")
    r.add_argument("--out", required=True, help="output folder (one sub-folder per seed, summary.json)")
    add_force_option(r)
    r.add_argument("--pca", type=int, default=None, help="reduce the LLM embeddings to this many PCA components")
    r.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="weight of the alignment loss")
    r.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="alignment InfoNCE temperature")
    r.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026], help="one model per seed")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an SRS setting (default: the ID checkpoint's), e.g. --set max_epochs=50")
    r.add_argument("--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item")
    r.add_argument("--cache-dir", default=None, help="processed datasets (default $LLMREC_CACHE)")
    r.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def srs_overrides(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs for SRSConfig fields, typed like the field's default."""
    from ..srs.config import SRSConfig

    known = {f.name: getattr(SRSConfig(), f.name) for f in fields(SRSConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        settable = sorted(set(known) - {"items", "ks"})
        if key not in settable:
            raise ValueError(f"--set {key}: rat has no such SRS setting (known: {settable})")
        out[key] = _parse_value(raw.strip(), known[key], key)
    return out


def run_rat_command(args: argparse.Namespace) -> int:
    from ..srs.rat import run_rat

    try:
        overrides = srs_overrides(args.set)
        refuse_foreign_folder(args.out, SEEDS_OUT_MARKERS, args.force)
        data = load_dataset(args.dataset, DataConfig(k_core=args.k_core), cache_dir=args.cache_dir)
        summary = run_rat(data, args.embeddings, args.id_srs, args.out, args.seeds, args.alpha, args.temperature,
                          args.pca, overrides, progress=not args.quiet)
    except (StageError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    test = summary["test"]
    headline = ("full/recall@10", "full/ndcg@10", "sampled/hr@10", "sampled/ndcg@10")
    print(f"rat: {len(args.seeds)} seed(s), test: " + "  ".join(
        f"{m}={test[m]['mean']:.4f}±{test[m]['std']:.4f}" for m in headline if m in test))
    print(f"summary: {args.out}/summary.json")
    return 0


def _parse_value(raw: str, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--set {key}: expected true/false, got {raw!r}")
    try:
        return type(default)(raw)
    except ValueError:
        raise ValueError(f"--set {key}: expected {type(default).__name__}, got {raw!r}") from None


def overrides_for(stage: str, args: argparse.Namespace, strict: bool) -> dict[str, Any]:
    """Config overrides for `stage` from the flags; --set keys the stage lacks are errors when `strict`."""
    config_cls = STAGES[stage][1]
    known = {f.name: f.default for f in fields(config_cls)}
    values: dict[str, Any] = {name: getattr(args, name) for name in COMMON_FLAGS}
    values["lora"] = args.lora
    for item in args.set:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in known:
            if strict:
                raise ValueError(f"--set {key}: {stage} has no such setting (known: {sorted(known)})")
            continue
        values[key] = _parse_value(raw.strip(), known[key], key)
    return {k: v for k, v in values.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(verbose=not args.quiet)
    if args.command == "rat":
        return run_rat_command(args)
    try:
        if args.config is not None:  # the file's fields first: a --set of the same key comes later and wins
            args.set = [f"{key}={value}" for key, value in read_config_file(args.config).items()] + args.set
        if args.stop_after is not None and args.stop_after <= 0:
            raise ValueError(f"--stop-after must be > 0, got {args.stop_after}")
        names = LLM2REC_ORDER if args.command == "llm2rec" else (args.command,)
        overrides = {name: overrides_for(name, args, strict=args.command != "llm2rec") for name in names}
        if args.command == "llm2rec":
            for item in args.set:  # a key no stage knows is still a typo
                key = item.partition("=")[0].strip().replace("-", "_")
                if not any(key in {f.name for f in fields(STAGES[n][1])} for n in names):
                    raise ValueError(f"--set {key}: no stage has such a setting")
        stages = {name: make_stage(name, args.profile, **overrides[name]) for name in names}  # validate first
        markers = tuple(LLM2REC_ORDER) if args.command == "llm2rec" else STAGE_OUT_MARKERS
        refuse_foreign_folder(args.out, markers, args.force)
        data = load_dataset(args.dataset, DataConfig(k_core=args.k_core), cache_dir=args.cache_dir)
        kwargs = {"stop_after": args.stop_after, "progress": not args.quiet, "device": args.device,
                  "cache_dir": args.cache_dir}
        if args.command == "llm2rec":
            results = run_llm2rec(args.embedder, data, args.out, args.profile, overrides, **kwargs)
        else:
            from .loop import run_stage

            results = [run_stage(stages[args.command], args.embedder, data, args.out, **kwargs)]
    except (StageError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for result in results:
        loss = result.get("final_loss")
        print(f"{result['stage']}: {result['status']} after {result['steps']} steps, "
              f"final loss {loss:.4f}" if isinstance(loss, float) else f"{result['stage']}: {result['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
