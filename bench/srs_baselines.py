"""ID-based SASRec and GRU4Rec on MovieLens-100k: the baselines every item embedding is compared with.

    python bench/srs_baselines.py [--seeds 2024 2025 2026] [--backbones sasrec gru4rec]

Full ranking over all items (Recall/NDCG @10/@20, mean ± std over seeds),
sampled ranking with 100 negatives (HR@10/NDCG@10, as LLMEmb reports),
head/tail items, and training time. Writes bench/results/srs_baselines.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from llmrec.logs import setup_logging  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.eval import evaluate  # noqa: E402
from train.srs.config import SRSConfig  # noqa: E402
from train.srs.runs import run_seeds, summarise  # noqa: E402

# The MovieLens-100k setting the embedding benchmarks share: longer histories than LLM2Rec's 10 (ml-100k
# users have 105 interactions on average), history items excluded from the ranking (no movie is rated twice).
PROFILE = dict(hidden_size=64, ffn_size=64, max_len=50, exclude_history=True)

COLUMNS = [
    ("R@10", "full/recall@10"), ("N@10", "full/ndcg@10"), ("R@20", "full/recall@20"), ("N@20", "full/ndcg@20"),
    ("HR@10 (100 neg)", "sampled/hr@10"), ("N@10 (100 neg)", "sampled/ndcg@10"),
    ("R@10 head", "breakdown/head_items/recall@10"), ("R@10 tail", "breakdown/tail_items/recall@10"),
]


def markdown(rows: list[dict]) -> str:
    head = "| model | " + " | ".join(c for c, _ in COLUMNS) + " | epochs | train time (s) |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        cells = [f"{r['test'][k]['mean']:.4f} ± {r['test'][k]['std']:.4f}" for _, k in COLUMNS]
        lines.append(f"| {r['model']} | " + " | ".join(cells)
                     + f" | {r['epochs']:.0f} | {r['train_seconds']['mean']:.0f} ± {r['train_seconds']['std']:.0f} |")
    return "\n".join(lines)


def count_baselines(data) -> list[dict]:
    """Non-learned references on the same split: training popularity, and a first-order
    item-to-item Markov chain (next-item counts after the last history item, popularity to break ties)."""
    pop = torch.tensor(data.train_item_counts(), dtype=torch.float32)
    transitions = torch.zeros(data.num_items + 1, data.num_items + 1)
    for s, p in zip(data.train.seq_index, data.train.position, strict=True):
        seq = data.train.sequences[s]
        transitions[seq[p - 1], seq[p]] += 1

    def popularity(idx):
        return pop.expand(len(idx), -1).clone()

    def markov(idx):
        last = torch.tensor([int(data.test.history(int(i))[-1]) for i in idx])
        return transitions[last] + pop / (pop.max() + 1)

    rows = []
    for name, fn in (("popularity", popularity), ("markov (1st order)", markov)):
        test = evaluate(fn, data.test, data.num_items, data.train_item_counts(), exclude_history=True, sampled=True)
        rows.append({"model": name, "test": summarise([{"test": test}]), "epochs": 0,
                     "train_seconds": {"mean": 0.0, "std": 0.0}})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    p.add_argument("--backbones", nargs="+", default=["sasrec", "gru4rec"])
    p.add_argument("--max-epochs", type=int, default=SRSConfig.max_epochs)
    p.add_argument("--runs", default="runs/bench/srs", help="where checkpoints go (finished seeds are reused)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(verbose=False)
    data = load_dataset("ml-100k")
    rows = count_baselines(data)
    for backbone in args.backbones:
        config = SRSConfig(backbone=backbone, max_epochs=args.max_epochs, **PROFILE)
        summary = run_seeds(data, config, args.seeds, Path(args.runs) / f"{backbone}-ids")
        rows.append({
            "model": f"{backbone} (ID)", "config": config.to_dict(), "test": summary["test"],
            "train_seconds": summary["train_seconds"],
            "epochs": sum(s["epochs_run"] for s in summary["per_seed"]) / len(summary["per_seed"]),
            "per_seed": [{k: s[k] for k in ("seed", "best_epoch", "epochs_run", "train_seconds")}
                         | {"test_full": s["test"]["full"]} for s in summary["per_seed"]],
        })
    table = markdown(rows)
    print(table)
    dataset = {"name": data.name, "users": data.num_users, "items": data.num_items,
               "k_core": data.manifest.get("parameters", {}).get("k_core"), "test_examples": len(data.test)}
    path = write_result("srs_baselines", {"dataset": dataset, "seeds": args.seeds, "profile": PROFILE,
                                          "torch_threads": args.threads, "rows": rows})
    (RESULTS / "srs_baselines.md").write_text(table + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
