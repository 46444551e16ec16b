"""python -m train select --run RUN: the model `make demo` serves, the best on validation, and why.

    python -m train select --run runs/demo [--metric recall@20]

The candidates are the demo's SRS runs whose items come from an LLM embedder (RUN/srs/<row>/summary.json for
the rows in `CANDIDATES`): only those can place an item the catalogue gains after training, which the live demo
does; the ID-SASRec rows are reported beside them but cannot be served. The winner is the candidate with the
highest mean validation metric over its seeds (full ranking; the metric every row reports, whatever its preset
early-stops on), and of it the seed with the best validation. Writes RUN/served.json:
  row, label, srs (the seed folder to export), embedder (the checkpoint its embeddings were made with),
  metric, value, candidates {row: value}, not_served {row: reason}, why (one sentence)
and prints the sentence. Exit 2 when no candidate has finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmrec.cli import HelpFormatter
from llmrec.files import write_json_atomic

# (row = folder under RUN/srs, label); the order breaks ties
CANDIDATES = (
    ("llm2rec-base", "SmolLM2 as it is (bidirectional, mean pooling), LLM2Rec's downstream"),
    ("llm2rec", "LLM2Rec (CSFT -> MNTP -> item contrastive), LLM2Rec's downstream"),
    ("llmemb", "LLMEmb (SCFT -> RAT), LLMEmb's downstream"),
)
ID_ROWS = ("llm2rec-ids", "llmemb-ids")
SERVED_FILE = "served.json"


def validation(summary: dict[str, Any], metric: str) -> tuple[float, int] | None:
    """(mean validation `metric` over the seeds, the best seed) of an SRS summary; None without it."""
    per_seed = [(s["valid"][metric], s["seed"]) for s in summary.get("per_seed", [])
                if isinstance(s.get("valid"), dict) and isinstance(s["valid"].get(metric), int | float)]
    if not per_seed:
        return None
    return sum(v for v, _ in per_seed) / len(per_seed), max(per_seed)[1]


def embedder_of(summary: dict[str, Any]) -> str:
    """The embedder checkpoint the SRS's frozen embeddings were made with (their manifest's source)."""
    items = Path(summary["config"]["items"])
    manifest = json.loads((items.parent / "manifest.json").read_text())
    return str(manifest["embedder"]["source"])


def select(run: str | Path, metric: str = "recall@20") -> dict[str, Any]:
    run = Path(run)
    scores: dict[str, tuple[float, int]] = {}
    summaries = {}
    for row, _ in CANDIDATES:
        path = run / "srs" / row / "summary.json"
        if path.is_file():
            summaries[row] = json.loads(path.read_text())
            found = validation(summaries[row], metric)
            if found is not None:
                scores[row] = found
    if not scores:
        raise ValueError(f"no finished candidate under {run / 'srs'} (looked for {[r for r, _ in CANDIDATES]})")
    labels = dict(CANDIDATES)
    row = max(scores, key=lambda r: (scores[r][0], -[c for c, _ in CANDIDATES].index(r)))
    value, seed = scores[row]
    others = ", ".join(f"{r} {scores[r][0]:.4f}" for r in scores if r != row)
    served = {
        "row": row, "label": labels[row], "srs": str(run / "srs" / row / f"seed-{seed}"),
        "embedder": embedder_of(summaries[row]), "metric": f"valid/{metric}", "value": value,
        "candidates": {r: v for r, (v, _) in scores.items()},
        "not_served": {r: "item IDs only: no vector for an item added after training" for r in ID_ROWS},
        "why": f"{labels[row]}: the best validation {metric} of the models that can embed a new item "
               f"({value:.4f}{'; ' + others if others else ''}); the ID-SASRec rows cannot place a new item",
    }
    write_json_atomic(run / SERVED_FILE, served)
    return served


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train select", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", default="runs/demo", help="the run folder (make demo's RUN)")
    p.add_argument("--metric", default="recall@20", help="validation metric (full ranking) that decides")
    args = p.parse_args(argv)
    try:
        served = select(args.run, args.metric)
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"served: {served['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
