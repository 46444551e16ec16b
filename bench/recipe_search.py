"""A bounded recipe search on the validation split: which frozen-embedding SRS settings to make the default.

    python bench/recipe_search.py --threads 1

A documented grid, one seed (2024), read on validation only (the test split is never looked at here):
  A. text-only SASRec over raw SmolLM2 (bidirectional + mean) on the item text the co-consumption screen
     ranked first (bench/results/screen_embeddings.md), standard split: adapter input dropout {0, 0.2}
  B. residual ID + text fusion with A's input dropout, cold-start split (valid and cold_valid):
     ID dropout {0.25, 0.5}
(a bounded grid: one SASRec run takes 4-8 minutes on one core here)
The choice rule: A by validation NDCG@10; B by cold_valid R@10 among settings whose overall validation
R@10 is within 2% of the best. Every setting trains SASRec with bench/srs_baselines.py's profile.
Writes bench/results/recipe_search.{json,md,png}; finished runs are reused (runs/bench/search).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from bench.embeddings_quality import COLD_FRACTION, ensure_embeddings  # noqa: E402
from bench.srs_baselines import PROFILE  # noqa: E402
from llmrec.logs import setup_logging  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.data.cold import COLD_VALID, cold_start_split  # noqa: E402
from train.srs.config import SRSConfig  # noqa: E402
from train.srs.runs import run_seeds  # noqa: E402

SEED = 2024
TEXTS = ("attributes",)
INPUT_DROPOUTS = (0.0, 0.2)
ID_DROPOUTS = (0.25, 0.5)


def run(name: str, data, items: Path, runs: Path, progress: bool, **srs) -> dict:
    config = replace(SRSConfig(**PROFILE), items=str(items), adapter="mlp", standardize=True, **srs)
    summary = run_seeds(data, config, [SEED], runs / name, progress)
    valid = summary["per_seed"][0]["valid"]
    return {"name": name, "settings": srs, "valid": {k: v for k, v in valid.items() if k.endswith("@10")},
            "epochs": summary["per_seed"][0]["epochs_run"], "train_seconds": summary["train_seconds"]["mean"]}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["valid"]["recall@10"] for r in rows], 0.4, label="valid R@10")
    ax.barh(y + 0.2, [r["valid"].get(f"{COLD_VALID}/recall@10", 0.0) for r in rows], 0.4,
            label="cold_valid R@10")
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/bench", help="embeddings (shared with the other benches) and runs")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(verbose=False)
    runs, progress = Path(args.runs), not args.quiet
    standard = load_dataset("ml-100k")
    cold, _ = cold_start_split(standard, COLD_FRACTION, seed=0)

    def items(text: str) -> Path:
        return ensure_embeddings("raw-bidir-mean", runs, standard, progress, text=text)

    stage_a = [run(f"A text-only {t} input-dropout {d}", standard, items(t), runs / "search", progress,
                   input_dropout=d) for t in TEXTS for d in INPUT_DROPOUTS]
    best_a = max(stage_a, key=lambda r: r["valid"]["ndcg@10"])
    text = next(t for t in TEXTS if t in best_a["name"])
    dropout = best_a["settings"]["input_dropout"]
    stage_b = [run(f"B residual {text} input-dropout {dropout} id-dropout {p}", cold, items(text),
                   runs / "search", progress, fusion="residual", id_dropout=p, input_dropout=dropout)
               for p in ID_DROPOUTS]
    top = max(r["valid"]["recall@10"] for r in stage_b)
    best_b = max((r for r in stage_b if r["valid"]["recall@10"] >= 0.98 * top),
                 key=lambda r: r["valid"][f"{COLD_VALID}/recall@10"])
    rows = stage_a + stage_b
    lines = ["| setting | valid R@10 | valid N@10 | cold_valid R@10 | cold_valid N@10 | epochs | chosen |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["valid"]
        cold_r = v.get(f"{COLD_VALID}/recall@10")
        cold_n = v.get(f"{COLD_VALID}/ndcg@10")
        lines.append(f"| {r['name']} | {v['recall@10']:.4f} | {v['ndcg@10']:.4f} | "
                     + (f"{cold_r:.4f} | {cold_n:.4f}" if cold_r is not None else "- | -")
                     + f" | {r['epochs']} | {'yes' if r in (best_a, best_b) else ''} |")
    table = "\n".join(lines)
    print(table)
    write_result("recipe_search", {"seed": SEED, "profile": PROFILE, "grid": {
        "text": TEXTS, "input_dropout": INPUT_DROPOUTS, "id_dropout": ID_DROPOUTS},
        "rows": rows, "chosen": {"text": text, "input_dropout": dropout,
                                 "id_dropout": best_b["settings"]["id_dropout"]}})
    (RESULTS / "recipe_search.md").write_text(f"Recipe search on validation (seed {SEED})\n\n{table}\n")
    plot(rows, RESULTS / "recipe_search.png")


if __name__ == "__main__":
    main()
