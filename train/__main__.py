"""python -m train COMMAND ...: the training tool box, one entry point.

  data     dataset statistics and processed caches        (python -m train.data)
  srs      train and evaluate SASRec / GRU4Rec             (python -m train.srs)
  stages   LLM embedder stages: csft, mntp, item-contrastive, llm2rec, ...  (python -m train.stages)
  embed    extract item embeddings with an embedder        (python -m train.embed)
  report   summary tables + plots of a `make demo` run      (python -m train.report)
  select   the validation-best servable model of a `make demo` run  (python -m train.select)
  settings the papers' settings beside every profile (docs/settings.md)  (python -m train.settings)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"data": "train.data.__main__", "srs": "train.srs.__main__", "stages": "train.stages.__main__",
            "embed": "train.embed", "report": "train.report", "select": "train.select",
            "settings": "train.settings"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
