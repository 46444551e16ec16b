"""Post-hoc cold-item vectors: could a trained residual hybrid rank new items better without retraining?

    python bench/cold_vectors.py

A screen that takes seconds. It reads the cold-split residual rows that bench/embeddings_quality.py trained
(runs/bench/cold/<row>/seed-*) and, on validation only, swaps what a cold item's vector is:
  - as trained: the text path alone, text(x);
  - scaled: s * text(x). A cold vector is shorter than a warm one (text + ID), and the scale tests whether
    that shortfall, rather than what the text says, keeps cold items out of the top 10;
  - ID transfer: text(x) + the softmax(cos / tau)-weighted mean of the ID parts of its k nearest warm items,
    by cosine of the standardised frozen embedding or of the adapted text vector (a text -> ID mapping).
For the LLM-initialised ID rows (fusion init: a cold item keeps its untrained start) it tries instead a
text -> trained ID map fitted on the warm items (ridge regression of the ID rows on the standardised frozen
embedding, lambda in RIDGE), the ID transfer from the nearest warm items, and the ridge map calibrated by ranking
with the trained model frozen (train/srs/coldmap.py: a scale and a shared offset, a [D, D] matrix, or the whole
map, or the scale with an offset weighted by the text, fitted while a share of the warm items pretends to be new;
RANKED).
For each it reports validation R@10 over all targets and over cold targets (cold_valid), mean of the seeds.
Writes bench/results/cold_vectors.{json,md}; with --rows, the other rows are kept from the current result file.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from bench.embeddings_quality import COLD_FRACTION  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.data.cold import COLD_VALID, cold_start_split  # noqa: E402
from train.eval.ranking import full_ranking  # noqa: E402
from train.srs.checkpoint import load_checkpoint  # noqa: E402
from train.srs.coldmap import fit_ranked_cold_map  # noqa: E402
from train.srs.items import load_item_embeddings  # noqa: E402

ROWS = ("hybrid", "hybrid-co-occurrence", "id-init", "id-init-co-occurrence")
RIDGE = (10.0, 30.0, 100.0, 300.0, 1000.0)
SCALES = (1.05, 1.1, 1.2, 1.3)
NEIGHBOURS = ((10, 0.05), (10, 0.2), (50, 0.2))
# ridge lambda, what is fitted, share pretending to be new, epochs, learning rate (the full map moves 37k weights
# over a 576-d input: 1e-3 diverged in the first screen)
RANKED = ((100.0, "scale", 0.2, 6, 1e-3), (100.0, "scale", 0.1, 6, 1e-3), (100.0, "scale", 0.4, 6, 1e-3),
          (30.0, "scale", 0.2, 6, 1e-3), (300.0, "scale", 0.2, 6, 1e-3), (1000.0, "scale", 0.2, 6, 1e-3),
          (100.0, "affine", 0.2, 6, 1e-3), (30.0, "affine", 0.2, 6, 1e-3),
          (100.0, "full", 0.2, 5, 3e-5), (100.0, "full", 0.2, 20, 3e-5),
          (100.0, "scale-pop", 0.4, 3, 3e-4), (100.0, "scale-pop", 0.4, 6, 3e-4), (100.0, "scale-pop", 0.4, 6, 1e-3),
          (100.0, "scale-pop", 0.4, 6, 1e-4))


def recall10(model, table: torch.Tensor, examples, num_items: int) -> float:
    config = model.config

    def scores(idx: np.ndarray) -> torch.Tensor:
        hist, _, _ = examples.batch(idx, config.max_len, config.padding)
        return model.user_vectors(torch.from_numpy(hist), table) @ table.T

    return float(full_ranking(scores, examples, num_items, (10,), config.exclude_history, 1024).metrics["recall@10"])


def transferred(feats: torch.Tensor, warm: torch.Tensor, rows: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """Per item, the softmax(cos / tau)-weighted mean of `rows` of its k nearest warm items by cosine of `feats`."""
    unit = torch.nn.functional.normalize(feats, dim=1)
    top = (unit @ unit[warm].T).topk(k, dim=1)
    return (torch.softmax(top.values / tau, dim=1)[..., None] * rows[warm][top.indices]).sum(1)


def ranked_variants(model, data) -> dict[str, torch.Tensor]:
    """The ridge map calibrated by ranking (train/srs/coldmap.py), each setting of RANKED on a copy of `model`."""
    out = {}
    for ridge, params, pretend, epochs, lr in RANKED:
        calibrated = copy.deepcopy(model)
        calibrated.items.fit_cold_map(ridge)
        fit_ranked_cold_map(calibrated, data, epochs, pretend, lr=lr, params=params)
        out[f"ridge lambda={ridge:g} ranked: {params}, pretend {pretend:g}, {epochs} epochs, lr {lr:g}"] = \
            calibrated.item_vectors().detach()
    return out


@torch.no_grad()
def init_variants(model, cold: torch.Tensor, frozen: torch.Tensor) -> dict[str, torch.Tensor]:
    table = model.item_vectors()
    warm = ~cold
    warm[0] = False
    x = frozen.to(torch.float64)
    mean, std = x[warm].mean(0), x[warm].std(0).clamp_min(1e-6)
    z = (x - mean) / std
    target = table.to(torch.float64)
    out = {"as trained (the untrained start)": table}
    centre = target[warm].mean(0)
    for lam in RIDGE:
        gram = z[warm].T @ z[warm] + lam * torch.eye(z.shape[1], dtype=torch.float64)
        for intercept in (False, True):
            offset = centre if intercept else torch.zeros_like(centre)
            mapped = (z @ torch.linalg.solve(gram, z[warm].T @ (target[warm] - offset)) + offset).to(torch.float32)
            name = f"ridge text -> ID, lambda={lam:g}{' + intercept' if intercept else ''}"
            out[name] = torch.where(cold[:, None], mapped, table)
    for k, tau in NEIGHBOURS:
        moved = transferred(z.to(torch.float32), warm, table, k, tau)
        out[f"ID transfer, frozen k={k} tau={tau}"] = torch.where(cold[:, None], moved, table)
    for t in out.values():
        t[0] = 0
    return out


@torch.no_grad()
def variants(model, cold: torch.Tensor) -> dict[str, torch.Tensor]:
    items = model.items
    text, ids, table, warm = items.text.all_items(), items.ids.all_items(), model.item_vectors(), items.warm
    out = {"as trained (text path)": table}
    out.update({f"scaled x{s}": torch.where(cold[:, None], table * s, table) for s in SCALES})
    frozen = (items.text.frozen - items.text.mean) / items.text.std
    for space, feats in (("frozen", frozen), ("adapted", text)):
        for k, tau in NEIGHBOURS:
            moved = transferred(feats, warm, ids, k, tau)
            out[f"ID transfer, {space} k={k} tau={tau}"] = torch.where(cold[:, None], text + moved, table)
    for t in out.values():
        t[0] = 0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/bench", help="where bench/embeddings_quality.py keeps its runs")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows to screen (default all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data, cold_mask = cold_start_split(load_dataset("ml-100k"), COLD_FRACTION, seed=0)
    cold = torch.from_numpy(cold_mask)
    sets = {"valid": data.valid, COLD_VALID: data.extra_eval[COLD_VALID]}
    previous = RESULTS / "cold_vectors.json"
    earlier = json.loads(previous.read_text()) if previous.is_file() else {"rows": {}}
    results: dict[str, dict] = {}
    for row in ROWS:
        if row not in args.rows:
            if row in earlier["rows"]:
                results[row] = earlier["rows"][row]
            continue
        seeds = sorted(p for p in (Path(args.runs) / "cold" / row).glob("seed-*") if (p / "metrics.json").is_file())
        if not seeds:
            raise SystemExit(f"no trained seeds of {row!r} under {args.runs}/cold: run bench/embeddings_quality.py "
                             f"--rows cold-{row} first")
        per: dict[str, list[dict[str, float]]] = {}
        for seed_dir in seeds:
            model, meta = load_checkpoint(seed_dir)
            if model.config.fusion == "init":
                frozen, _ = load_item_embeddings(meta["items"]["path"], data.item_ids)
                tables = init_variants(model, cold, frozen) | ranked_variants(model, data)
            else:
                tables = variants(model, cold)
            for name, table in tables.items():
                per.setdefault(name, []).append({s: recall10(model, table, ex, data.num_items)
                                                 for s, ex in sets.items()})
        results[row] = {name: {s: float(np.mean([r[s] for r in rs])) for s in sets} for name, rs in per.items()}
        results[row]["seeds"] = len(seeds)
    lines = ["Cold-item vectors swapped after training (cold split, validation, R@10, mean of the seeds)\n",
             "| row | cold vector | valid R@10 | cold_valid R@10 |", "|---|---|---|---|"]
    for row, rs in results.items():
        lines += [f"| {row} | {name} | {v['valid']:.4f} | {v[COLD_VALID]:.4f} |" for name, v in rs.items()
                  if name != "seeds"]
    if set(results) - set(args.rows):
        stamp = earlier["environment"]
        lines.append(f"\nRows {', '.join(sorted(set(results) - set(args.rows)))} are kept from the run of "
                     f"{stamp['date'][:10]} (commit {stamp['git_commit']}); the others are this run's.")
    table = "\n".join(lines)
    print(table)
    write_result("cold_vectors", {"rows": results, "scales": SCALES, "neighbours": NEIGHBOURS, "ranked": RANKED})
    (RESULTS / "cold_vectors.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
