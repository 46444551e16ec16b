"""python -m train.srs: train and evaluate SASRec / GRU4Rec on a dataset.

  python -m train.srs --preset llm2rec --items runs/r/embeddings/items.safetensors --out runs/r/srs/llm2rec

--preset picks a downstream setting (project: this project's; llm2rec, llmemb: the papers', train/srs/config.py);
every other flag (or --config YAML key) overrides one field of it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from llmrec.cli import HelpFormatter, add_config_option, add_force_option, apply_config_file
from llmrec.files import refuse_foreign_folder
from llmrec.logs import setup_logging
from train.data import DataConfig, load_dataset

from .config import FIELD_HELP, PRESETS, SRSConfig
from .runs import OUT_MARKERS, run_seeds

HEADLINE = ("full/recall@10", "full/ndcg@10", "full/recall@20", "full/ndcg@20", "sampled/hr@10", "sampled/ndcg@10")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.srs", description=__doc__, formatter_class=HelpFormatter)
    add_config_option(p)
    p.add_argument("--dataset", default="ml-100k", help="ml-100k, a RecBole atomic folder, or an LLM2Rec folder")
    p.add_argument("--items", default="ids", help="'ids' for an ID table, or a .safetensors/.npy embedding file")
    p.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026], help="one model per seed")
    p.add_argument("--out", default="runs/default/srs", help="output folder (one sub-folder per seed)")
    add_force_option(p)
    p.add_argument("--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item")
    p.add_argument("--cache-dir", default=None, help="processed datasets (default $LLMREC_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--preset", default="project", choices=list(PRESETS),
                   help="downstream setting: this project's, or LLM2Rec's / LLMEmb's as their code runs it")
    add_field_flags(p)
    return p


def add_field_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ("items", "ks")) -> None:
    """One flag per SRSConfig field, default None (the preset's value); --help names each preset's value."""
    presets = {name: SRSConfig.preset(name) for name in PRESETS}
    for f in fields(SRSConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(presets["project"], f.name)
        doc = (f"{FIELD_HELP.get(f.name, f'SRSConfig.{f.name}')} (presets: "
               + ", ".join(f"{name} {getattr(config, f.name)}" for name, config in presets.items()) + ")")
        doc = doc.replace("%", "%%")  # argparse formats help with %
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            p.add_argument(flag, type=type(value), default=None, help=doc)


def given_fields(args: argparse.Namespace, skip: tuple[str, ...] = ("ks",)) -> dict:
    """The SRSConfig fields set by a flag or the --config file."""
    return {f.name: getattr(args, f.name) for f in fields(SRSConfig)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    apply_config_file(p, argv if argv is not None else sys.argv[1:])
    args = p.parse_args(argv)
    setup_logging(verbose=not args.quiet)
    try:
        config = SRSConfig.preset(args.preset, **given_fields(args))
        refuse_foreign_folder(args.out, OUT_MARKERS, args.force)
        data = load_dataset(args.dataset, DataConfig(k_core=args.k_core), cache_dir=args.cache_dir)
        summary = run_seeds(data, config, args.seeds, args.out, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    test = summary["test"]
    print(f"\n{config.backbone} on {data.name} ({args.items}), {len(args.seeds)} seed(s), test, full ranking:")
    print("  ".join(f"{m}={test[m]['mean']:.4f}±{test[m]['std']:.4f}" for m in HEADLINE))
    print(f"summary: {args.out}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
