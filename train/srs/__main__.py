"""python -m train.srs: train and evaluate SASRec / GRU4Rec on a dataset."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from llmrec.cli import HelpFormatter, add_config_option, add_force_option, apply_config_file
from llmrec.files import refuse_foreign_folder
from llmrec.logs import setup_logging
from train.data import DataConfig, load_dataset

from .config import FIELD_HELP, SRSConfig
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
    defaults = SRSConfig()
    for f in fields(SRSConfig):
        if f.name in ("items", "ks"):
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        doc = FIELD_HELP.get(f.name, f"SRSConfig.{f.name}")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=doc)
        else:
            p.add_argument(flag, type=type(value), default=value, help=doc)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    apply_config_file(p, argv if argv is not None else sys.argv[1:])
    args = p.parse_args(argv)
    setup_logging(verbose=not args.quiet)
    try:
        config = SRSConfig(**{f.name: getattr(args, f.name) for f in fields(SRSConfig) if f.name != "ks"})
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
