"""Command line: `python -m train.data {stats,prepare,sample-histories} SOURCE [options]`.

`prepare` builds (or finds) the processed dataset in the cache and prints its
folder, so scripts can warm the cache before training; `stats` prints the
numbers usually reported in a paper's dataset table; `sample-histories` writes
the test-time histories of a few random users as JSON, the requests a live
demo sends to the serving gateway (which never loads the dataset itself).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmrec.cli import HelpFormatter

from .cache import default_cache_dir
from .dataset import SequenceData
from .load import load_dataset_with_folder
from .processing import DataConfig
from .stats import dataset_stats

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.data",
        description="Prepare and inspect sequential-recommendation datasets.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "source",
        help="built-in name (ml-100k), a RecBole atomic folder / .inter file, or an LLM2Rec folder",
    )
    common.add_argument(
        "--k-core", type=int, default=DataConfig.k_core, help="min interactions per user and item"
    )
    common.add_argument("--min-rating", type=float, default=None, help="drop interactions rated below this")
    common.add_argument(
        "--allow-file-order",
        action="store_true",
        help="accept a .inter without timestamp, taking the file order as time",
    )
    common.add_argument(
        "--cache-dir", default=None, help=f"cache root (default: $LLMREC_CACHE or {default_cache_dir()})"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log cache hits and builds")
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", parents=[common], help="print dataset statistics", formatter_class=HelpFormatter)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("prepare", parents=[common], help="build or reuse the cached dataset and print its folder",
                   formatter_class=HelpFormatter)
    sample = sub.add_parser("sample-histories", parents=[common], formatter_class=HelpFormatter,
                            help="write the test-time histories of random users as JSON")
    sample.add_argument("--users", type=int, default=3, help="how many users")
    sample.add_argument("--seed", type=int, default=0, help="seed of the user draw")
    sample.add_argument("--out", required=True, help='JSON file: [{"user": raw user id, "history": [item ids]}]')
    return parser


def sample_histories(data: SequenceData, users: int, seed: int) -> list[dict]:
    """`users` distinct random users (same seed, same users) with the history their test example sees.

    Histories are the dataset's raw item ids (the catalogue ids the gateway speaks), oldest first, without the
    held-out test item: what a recommender is asked at test time.
    """
    if not 1 <= users <= len(data.test):
        raise ValueError(f"--users must be between 1 and {len(data.test)} (users with a test example), got {users}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.test), size=users, replace=False)
    return [{"user": data.user_ids[int(data.test.seq_index[i])],
             "history": [str(data.item_ids[int(x)]) for x in data.test.history(int(i))]} for i in chosen]


def format_table(stats: dict) -> str:
    seq = stats["sequence_length"]
    ex = stats["examples"]
    rows = [
        ("dataset", stats["name"]),
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("density", f"{stats['density']:.4%}"),
        ("examples (train/valid/test)", f"{ex['train']:,} / {ex['valid']:,} / {ex['test']:,}"),
        ("sequence length", ""),
    ]
    rows += [(f"  {k}", f"{v:.1f}" if isinstance(v, float) else str(v)) for k, v in seq.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    try:
        config = DataConfig(
            k_core=args.k_core, min_rating=args.min_rating, allow_file_order=args.allow_file_order
        )
        data, folder = load_dataset_with_folder(args.source, config, cache_dir=args.cache_dir)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "prepare":
        print(folder)
        return 0
    if args.command == "sample-histories":
        try:
            samples = sample_histories(data, args.users, args.seed)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed: make never sees half a file
        tmp.write_text("[\n" + ",\n".join(json.dumps(s) for s in samples) + "\n]\n")  # one user a line
        tmp.replace(out)
        print(f"{len(samples)} users' test-time histories -> {out}")
        return 0
    stats = dataset_stats(data)
    print(json.dumps(stats, indent=2) if args.json else format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
