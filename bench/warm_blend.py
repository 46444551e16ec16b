"""Could the text help the warm items a trained LLM-initialised-ID SASRec rarely saw? A screen that takes minutes.

    python bench/warm_blend.py

It reads the standard-split rows of LLM-initialised IDs that bench/embeddings_quality.py trained
(runs/bench/srs/id-init/seed-*) and, on validation only, shrinks each warm item's trained ID row towards where its
text alone would put it, the less the more often the item was a training target (empirical Bayes):
v = (1 - a) ID + a map(text), a = k / (k + n_i), n_i the item's training count. The text map is the ridge map of
the cold split's recipe (lambda 100, or 30), optionally calibrated by ranking (train/srs/coldmap.py). k = 0 is the
trained model. Reports validation R@10, N@10 and tail-item R@10 (items outside the 20% most popular), mean of the
seeds. Writes bench/results/warm_blend.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.eval.ranking import full_ranking, head_tail_groups  # noqa: E402
from train.srs.checkpoint import load_checkpoint  # noqa: E402
from train.srs.coldmap import fit_ranked_cold_map  # noqa: E402

MAPS = ((100.0, 0), (100.0, 6), (30.0, 0))  # ridge lambda, epochs of calibration by ranking
SHRINK = (0.0, 0.3, 1.0, 3.0, 10.0)


def valid_metrics(model, table: torch.Tensor, data, tail: np.ndarray) -> dict[str, float]:
    config = model.config

    def scores(idx: np.ndarray) -> torch.Tensor:
        hist, _, _ = data.valid.batch(idx, config.max_len, config.padding)
        with torch.no_grad():
            return model.user_vectors(torch.from_numpy(hist), table) @ table.T

    ranking = full_ranking(scores, data.valid, data.num_items, (10,), config.exclude_history, 1024)
    return {**ranking.metrics, "tail recall@10": float((ranking.ranks < 10)[tail[data.valid.targets]].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/bench", help="where bench/embeddings_quality.py keeps its runs")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k")
    counts = torch.from_numpy(data.train_item_counts()).to(torch.float32)
    tail = ~head_tail_groups(data.train_item_counts())
    seeds = sorted(s for s in (Path(args.runs) / "srs" / "id-init").glob("seed-*") if (s / "metrics.json").is_file())
    if not seeds:
        raise SystemExit(f"no trained seeds under {args.runs}/srs/id-init: run bench/embeddings_quality.py "
                         "--rows id-init first")
    per: dict[str, list[dict[str, float]]] = {}
    for seed_dir in seeds:
        trained, _ = load_checkpoint(seed_dir)
        ids = trained.items.ids.all_items().detach()
        for ridge, epochs in MAPS:
            mapped = copy.deepcopy(trained)
            mapped.items.fit_cold_map(ridge)
            if epochs:
                fit_ranked_cold_map(mapped, data, epochs)
            text = mapped.items.text.all_items().detach()
            for k in SHRINK:
                share = (k / (k + counts)).unsqueeze(-1)
                table = (1 - share) * ids + share * text
                table[0] = 0
                name = f"ridge lambda={ridge:g}{f', ranked {epochs} epochs' if epochs else ''}, k={k:g}"
                per.setdefault(name, []).append(valid_metrics(trained, table, data, tail))
    results = {name: {m: float(np.mean([r[m] for r in rs])) for m in rs[0]} for name, rs in per.items()}
    lines = [f"Warm items shrunk towards their text (standard split, validation, mean of {len(seeds)} seeds; "
             "k = 0: the trained model)\n", "| text map, k | R@10 | N@10 | tail R@10 |", "|---|---|---|---|"]
    lines += [f"| {name} | {v['recall@10']:.4f} | {v['ndcg@10']:.4f} | {v['tail recall@10']:.4f} |"
              for name, v in results.items()]
    table = "\n".join(lines)
    print(table)
    write_result("warm_blend", {"rows": results, "maps": MAPS, "shrink": SHRINK, "seeds": len(seeds)})
    (RESULTS / "warm_blend.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
