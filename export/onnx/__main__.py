"""python -m export.onnx: export checkpoints to validated ONNX folders.

  python -m export.onnx embedder --checkpoint runs/r/embedder/item-contrastive --out runs/r/onnx/item_embedder \\
      [--adapter runs/r/srs/sasrec-llm2rec-std/seed-2024] [--normalize]
  python -m export.onnx user-encoder --checkpoint runs/r/srs/sasrec-llm2rec-std/seed-2024 --out runs/r/onnx/user_encoder
  python -m export.onnx all --embedder runs/r/embedder/item-contrastive --srs runs/r/srs/sasrec-llm2rec/seed-2024 \
      --out runs/r/onnx --repository model_repository [--index runs/r/index]    (all of it, steps skipped when
      their inputs are unchanged)

Exit codes: 0 exported and validated, 1 validation failed (nothing written),
2 bad input (the message names the flag or field).
Each subcommand is one `add_<name>(subparsers)` function that sets `func`;
add new subcommands the same way and list them in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from export.triton.repository import add_parser as add_repository
from llmrec.cli import HelpFormatter

from .artifact import EXIT_BAD_INPUT, EXIT_VALIDATION, ExportInputError, ExportValidationError
from .deploy import add_parser as add_all
from .quantize import add_parser as add_quantize
from .validate import DEFAULT_MIN_COSINE


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help="fail the export when the minimum cosine between onnx and torch outputs is below this")
    p.add_argument("--quiet", action="store_true", default=False, help="log warnings only")
    p.add_argument("--force", action="store_true", default=False,
                   help="replace --out even when it is a non-empty folder no export wrote")


def run_embedder(args: argparse.Namespace) -> int:
    from .embedder import export_embedder

    manifest = export_embedder(args.checkpoint, args.out, adapter=args.adapter, normalize=args.normalize,
                               min_cosine=args.min_cosine, cache_dir=args.cache_dir, force=args.force)
    print(f"item embedder -> {args.out} (dim {manifest['dim']}, {manifest['attention']}, {manifest['pooling']} "
          f"pooling, min cosine {manifest['validation']['min_cosine']:.7f})")
    return 0


def add_embedder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embedder", formatter_class=HelpFormatter, help="item embedder: token ids -> item vector",
                       description="Export an embedder checkpoint (Optimum, feature extraction) with pooling, "
                                   "optional SRS adapter and L2 normalisation inside one graph.")
    p.add_argument("--checkpoint", required=True,
                   help="embedder checkpoint (ItemEmbedder.save folder) or a stage's out folder")
    p.add_argument("--out", required=True, help="export folder (model.onnx, tokenizer/, export.json)")
    p.add_argument("--adapter", default=None,
                   help="SRS checkpoint trained on this embedder's vectors: output in the SRS item space")
    p.add_argument("--normalize", action="store_true", default=False, help="L2-normalise the output vectors")
    p.add_argument("--cache-dir", default=None, help="llmrec cache (base models for unmerged LoRA checkpoints); "
                                                     "default $LLMREC_CACHE or ~/.cache/llmrec")
    _common(p)
    p.set_defaults(func=run_embedder)


def run_user_encoder(args: argparse.Namespace) -> int:
    from .user_encoder import export_user_encoder

    manifest = export_user_encoder(args.checkpoint, args.out, min_cosine=args.min_cosine, cache_dir=args.cache_dir,
                                   seed=args.seed, force=args.force)
    print(f"user encoder -> {args.out} ({manifest['backbone']}, hidden {manifest['hidden_size']}, max_len "
          f"{manifest['max_len']}, {manifest['items']['rows']} item rows, min cosine "
          f"{manifest['validation']['min_cosine']:.7f})")
    return 0


def add_user_encoder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user-encoder", formatter_class=HelpFormatter,
                       help="SRS user encoder: history item vectors -> user vector",
                       description="Export an SRS checkpoint's sequence encoder and its item table.")
    p.add_argument("--checkpoint", required=True, help="SRS seed folder (model.safetensors + config.json)")
    p.add_argument("--out", required=True, help="export folder (model.onnx, item_vectors.safetensors, export.json)")
    p.add_argument("--cache-dir", default=None, help="llmrec cache holding the processed dataset (for item ids); "
                                                     "default $LLMREC_CACHE or ~/.cache/llmrec")
    p.add_argument("--seed", type=int, default=0, help="seed of the random validation histories")
    _common(p)
    p.set_defaults(func=run_user_encoder)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_all, add_embedder, add_user_encoder,
                                                                   add_repository, add_quantize]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from llmrec.logs import setup_logging

    setup_logging(verbose=not args.quiet)
    try:
        return args.func(args)
    except ExportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_VALIDATION


if __name__ == "__main__":
    sys.exit(main())
