"""python -m train.stages {csft,mntp,item-contrastive,llm2rec,scft,co-occurrence,rat}: train the LLM item embedder
(LLM2Rec's and LLMEmb's stages, and a co-occurrence contrastive stage).

  python -m train.stages csft --dataset ml-100k --embedder smollm2 --out runs/r/embedder/csft --budget cpu-small
  python -m train.stages mntp --embedder runs/r/embedder/csft --out runs/r/embedder/mntp --budget cpu-small
  python -m train.stages llm2rec --dataset ml-100k --budget cpu-small --out runs/r/embedder
A collaborative stage within a CPU budget: items consumed close together are positives (train/stages/cooccurrence.py):
  python -m train.stages co-occurrence --dataset ml-100k --embedder smollm2 --out runs/r/embedder/co --budget cpu-small
LLMEmb: SCFT on attribute sentences, embeddings, then RAT against an ID-based SASRec of the same preset:
  python -m train.stages scft --dataset ml-100k --embedder smollm2 --out runs/r/embedder/scft --budget cpu-small
  python -m train.embed --embedder runs/r/embedder/scft --out runs/r/embeddings-scft
  python -m train.srs --preset llmemb --items ids --seeds 2024 --out runs/r/srs/llmemb-ids
  python -m train.stages rat --embeddings runs/r/embeddings-scft/items.safetensors \\
      --id-srs runs/r/srs/llmemb-ids/seed-2024 --out runs/r/srs/llmemb

Re-running a command resumes its checkpoint (same settings) or skips it (finished).
Distributed: accelerate launch --config_file train/accelerate/ddp.yaml -m train.stages csft ...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from llmrec.cli import HelpFormatter, add_config_option, add_force_option, apply_config_file
from llmrec.files import refuse_foreign_folder
from llmrec.logs import setup_logging

from ..data import DataConfig, load_dataset
from ..srs.runs import OUT_MARKERS as SEEDS_OUT_MARKERS
from .common import StageError
from .config import BUDGET_NAMES, PROFILE_NAMES
from .loop import OUT_MARKERS as STAGE_OUT_MARKERS
from .pipeline import LLM2REC_ORDER, STAGES, make_stage, run_llm2rec

EXIT_BAD_INPUT = 2


def per_profile(name: str, config_classes: list[type], tables: str) -> str:
    """`paper 1000, project 1000` (or the budgets) for one field, per stage when the stages differ."""
    names = PROFILE_NAMES if tables == "PROFILES" else BUDGET_NAMES
    per_stage: dict[str, list[str]] = {}
    for cls in config_classes:
        configs = [cls.profile(n) if tables == "PROFILES" else cls.profile("paper", n) for n in names]
        values = ", ".join(f"{n} {getattr(c, name)}" for n, c in zip(names, configs, strict=True))
        per_stage.setdefault(values, []).append(cls.__name__.removesuffix("Config"))
    if len(per_stage) == 1:
        return next(iter(per_stage))
    return "; ".join(f"{'/'.join(stages)}: {values}" for values, stages in per_stage.items())


def add_stage_options(p: argparse.ArgumentParser, config_classes: list[type]) -> None:
    """The options of a stage command: one flag per config field (the dataclass is the single source), whose help
    names its value in every profile and budget; `--config FILE.yaml` sets the same fields, flags win."""
    add_config_option(p)
    p.add_argument("--dataset", default="ml-100k", help="ml-100k, a RecBole atomic folder, or an LLM2Rec folder")
    p.add_argument("--embedder", default="smollm2",
                   help="smollm2, a local HF causal-LM folder, an embedder checkpoint or a stage's out folder")
    p.add_argument("--out", required=True, help="output folder (resumed when it holds a checkpoint)")
    add_force_option(p)
    p.add_argument("--profile", default="paper", choices=PROFILE_NAMES,
                   help="recipe: the paper's (as the authors' code runs it) or this project's own choices")
    p.add_argument("--budget", default="full", choices=BUDGET_NAMES,
                   help="step budget: the paper's, a 2-core CPU run, or minutes (steps, batch and LoRA only)")
    seen: dict[str, Any] = {}
    for cls in config_classes:
        for f in fields(cls):
            seen.setdefault(f.name, getattr(cls(), f.name))
    for name, default in sorted(seen.items()):
        flag = "--" + name.replace("_", "-")
        classes = [c for c in config_classes if name in {f.name for f in fields(c)}]
        where = f" ({', '.join(c.__name__.removesuffix('Config') for c in classes)})" if len(classes) < len(
            config_classes) else ""
        doc = (f"{name}{where}; profiles: {per_profile(name, classes, 'PROFILES')}; "
               f"budgets: {per_profile(name, classes, 'BUDGETS')}")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            p.add_argument(flag, type=type(default), default=None, help=doc)
    p.add_argument("--stop-after", type=int, default=None,
                   help="checkpoint and stop after this many steps (resume later)")
    p.add_argument("--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item")
    p.add_argument("--cache-dir", default=None, help="processed datasets and base models (default $LLMREC_CACHE)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: accelerate's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def parser(commands: dict[str, argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """The command's parser; `commands` (when given) receives each stage command's own parser (for --config)."""
    p = argparse.ArgumentParser(prog="python -m train.stages", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {} if commands is None else commands
    for name, (_, config_cls) in STAGES.items():
        commands[name] = sub.add_parser(name, help=f"the {name} stage", formatter_class=HelpFormatter)
        add_stage_options(commands[name], [config_cls])
    commands["llm2rec"] = sub.add_parser("llm2rec", help=f"all stages in order: {', '.join(LLM2REC_ORDER)}",
                                         formatter_class=HelpFormatter)
    add_stage_options(commands["llm2rec"], [STAGES[n][1] for n in LLM2REC_ORDER])
    commands["rat"] = add_rat_parser(sub)
    return p


def add_rat_parser(sub: Any) -> argparse.ArgumentParser:
    """`rat`: LLMEmb's recommendation adaptation training (train/srs/rat.py) under the `llmemb` downstream preset;
    every SRS field has its flag (or --config key)."""
    from ..srs.__main__ import add_field_flags
    from ..srs.rat import DEFAULT_ALPHA, DEFAULT_TEMPERATURE

    r = sub.add_parser("rat", help="LLMEmb's recommendation adaptation training (frozen LLM embeddings + adapter "
                                   "aligned with an ID SASRec)", formatter_class=HelpFormatter)
    add_config_option(r)
    r.add_argument("--dataset", default="ml-100k", help="ml-100k, a RecBole atomic folder, or an LLM2Rec folder")
    r.add_argument("--embeddings", required=True, help="item embeddings (.safetensors from train.embed, or .npy)")
    r.add_argument("--id-srs", required=True, help="an ID-based SASRec checkpoint folder (train.srs --items ids)")
    r.add_argument("--out", required=True, help="output folder (one sub-folder per seed, summary.json)")
    add_force_option(r)
    r.add_argument("--pca", default="auto",
                   help="reduce the LLM embeddings to this many PCA components (auto: 1,536 when wider, as LLMEmb; "
                        "0: never)")
    r.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="weight of the alignment loss")
    r.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="alignment temperature (tau)")
    r.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026], help="one model per seed")
    r.add_argument("--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item")
    r.add_argument("--cache-dir", default=None, help="processed datasets (default $LLMREC_CACHE)")
    r.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    add_field_flags(r)
    return r


def run_rat_command(args: argparse.Namespace) -> int:
    from ..srs.__main__ import given_fields
    from ..srs.rat import run_rat

    try:
        pca = args.pca if args.pca == "auto" else int(args.pca)
    except ValueError:
        print(f"error: --pca must be 'auto' or an int, got {args.pca!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        refuse_foreign_folder(args.out, SEEDS_OUT_MARKERS, args.force)
        data = load_dataset(args.dataset, DataConfig(k_core=args.k_core), cache_dir=args.cache_dir)
        summary = run_rat(data, args.embeddings, args.id_srs, args.out, args.seeds, args.alpha, args.temperature,
                          pca, given_fields(args), progress=not args.quiet)
    except (StageError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    test = summary["test"]
    headline = ("full/recall@10", "full/ndcg@10", "sampled/hr@10", "sampled/ndcg@10")
    print(f"rat: {len(args.seeds)} seed(s), test: " + "  ".join(
        f"{m}={test[m]['mean']:.4f}±{test[m]['std']:.4f}" for m in headline if m in test))
    print(f"summary: {args.out}/summary.json")
    return 0


def overrides_for(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    """The config fields of `stage` given as flags (or by --config)."""
    known = {f.name for f in fields(STAGES[stage][1])}
    return {k: v for k, v in vars(args).items() if k in known and v is not None}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands: dict[str, argparse.ArgumentParser] = {}
    p = parser(commands)
    if argv and argv[0] in commands:
        apply_config_file(commands[argv[0]], argv[1:])
    args = p.parse_args(argv)
    setup_logging(verbose=not args.quiet)
    if args.command == "rat":
        return run_rat_command(args)
    try:
        if args.stop_after is not None and args.stop_after <= 0:
            raise ValueError(f"--stop-after must be > 0, got {args.stop_after}")
        names = LLM2REC_ORDER if args.command == "llm2rec" else (args.command,)
        overrides = {name: overrides_for(name, args) for name in names}
        stages = {name: make_stage(name, args.profile, args.budget, **overrides[name]) for name in names}
        markers = tuple(LLM2REC_ORDER) if args.command == "llm2rec" else STAGE_OUT_MARKERS
        refuse_foreign_folder(args.out, markers, args.force)
        data = load_dataset(args.dataset, DataConfig(k_core=args.k_core), cache_dir=args.cache_dir)
        kwargs = {"stop_after": args.stop_after, "progress": not args.quiet, "device": args.device,
                  "cache_dir": args.cache_dir}
        if args.command == "llm2rec":
            results = run_llm2rec(args.embedder, data, args.out, args.profile, args.budget, overrides, **kwargs)
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
