"""A bounded recipe search on the validation split: which frozen-embedding SRS settings to make the default.

    python bench/recipe_search.py --jobs 2

A documented grid, one seed (2024), read on validation only (the test split is never looked at here):
  A. text-only SASRec over raw SmolLM2 (bidirectional + mean) on the item text the co-consumption screen
     ranked first (bench/results/screen_embeddings.md), standard split: adapter input dropout {0, 0.2}
  B. residual ID + text fusion with A's input dropout, cold-start split (valid and cold_valid):
     ID dropout {0.25, 0.5}
  C. the residual fusion with B's ID dropout, cold-start split: frozen embedding {raw SmolLM2, the
     co-occurrence stage} x adapter {mlp, linear} x adapter input dropout {0, 0.3}: what lets the text
     path rank items it never saw (a linear map and input dropout memorise fewer items than an MLP)
  D. LLM-initialised IDs (fusion "init": the ID table starts on the text's principal components), standard
     split: frozen embedding {raw SmolLM2, the co-occurrence stage}, against ID-SASRec's random start
  E. the residual fusion with D's ID start ("residual-init") and C's other settings: cold-start split for
     both embeddings, standard split for D's embedding
(a bounded grid: one SASRec run takes 4-8 minutes on one core here; --jobs runs settings side by side)
The choice rules: A by validation NDCG@10; B by cold_valid R@10 among settings whose overall validation
R@10 is within 2% of the best; C by cold_valid R@10 among settings whose overall validation R@10 is within
2% of ID-SASRec's on the same split and seed (the cold-split bar of the quality table); D by validation NDCG@10,
kept only when above ID-SASRec's; E by C's rule on the cold split (against C's choice) and by validation
NDCG@10 on the standard split (against D's choice). Every setting trains
SASRec with bench/srs_baselines.py's profile.
Writes bench/results/recipe_search.{json,md,png}; finished runs are reused (runs/bench/search).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from bench.embeddings_quality import COLD_FRACTION, EMBEDDINGS, ensure_embeddings, ensure_stages  # noqa: E402
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
EMBEDDINGS_C = ("raw-bidir-mean", "co-occurrence")
ADAPTERS_C = ("mlp", "linear")
INPUT_DROPOUTS_C = (0.0, 0.3)
ID_BASELINE = "ID-SASRec"


def datasets() -> dict:
    standard = load_dataset("ml-100k")
    return {"standard": standard, "cold": cold_start_split(standard, COLD_FRACTION, seed=0)[0]}


def run(spec: tuple) -> dict:
    """One setting, (name, split, items or None for IDs, run folder, threads, progress, SRS fields); finished
    runs are reused. A top-level function so that --jobs can run it in another process."""
    name, split, items, out, threads, progress, srs = spec
    torch.set_num_threads(threads)
    config = SRSConfig(**PROFILE)
    if items is not None:
        config = replace(config, items=str(items), **{"adapter": "mlp", "standardize": True, **srs})
    summary = run_seeds(datasets()[split], config, [SEED], out, progress)
    valid = summary["per_seed"][0]["valid"]
    return {"name": name, "settings": srs, "valid": {k: v for k, v in valid.items() if k.endswith("@10")},
            "epochs": summary["per_seed"][0]["epochs_run"], "train_seconds": summary["train_seconds"]["mean"]}


def run_all(specs: list[tuple], jobs: int) -> list[dict]:
    if jobs == 1:
        return [run(s) for s in specs]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run, specs))


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
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads in all")
    p.add_argument("--jobs", type=int, default=1, help="settings trained side by side (threads shared out)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    setup_logging(verbose=False)
    runs, progress = Path(args.runs), not args.quiet
    threads = max(1, args.threads // args.jobs)
    data = datasets()

    def items(name: str, text: str = "attributes") -> Path:
        if name not in ("raw-bidir-mean", "minilm"):
            ensure_stages(runs, {EMBEDDINGS[name].source}, {**data}, progress)
        return ensure_embeddings(name, runs, data["standard"], progress, text=text)

    def spec(name: str, split: str, path: Path | None, out: Path, **srs) -> tuple:
        return (name, split, path, out, threads, progress and args.jobs == 1, srs)

    stage_a = run_all([spec(f"A text-only {t} input-dropout {d}", "standard", items("raw-bidir-mean", t),
                            runs / "search" / f"A text-only {t} input-dropout {d}", input_dropout=d)
                       for t in TEXTS for d in INPUT_DROPOUTS], args.jobs)
    best_a = max(stage_a, key=lambda r: r["valid"]["ndcg@10"])
    text = next(t for t in TEXTS if t in best_a["name"])
    dropout = best_a["settings"]["input_dropout"]
    names_b = [f"B residual {text} input-dropout {dropout} id-dropout {q}" for q in ID_DROPOUTS]
    stage_b = run_all([spec(n, "cold", items("raw-bidir-mean", text), runs / "search" / n, fusion="residual",
                            id_dropout=q, input_dropout=dropout) for n, q in zip(names_b, ID_DROPOUTS, strict=True)],
                      args.jobs)
    top = max(r["valid"]["recall@10"] for r in stage_b)
    best_b = max((r for r in stage_b if r["valid"]["recall@10"] >= 0.98 * top),
                 key=lambda r: r["valid"][f"{COLD_VALID}/recall@10"])
    id_dropout = best_b["settings"]["id_dropout"]
    grid_c = [(e, a, d) for e in EMBEDDINGS_C for a in ADAPTERS_C for d in INPUT_DROPOUTS_C]
    names_c = [f"C residual {e} ({text}) adapter {a} input-dropout {d} id-dropout {id_dropout}" for e, a, d in grid_c]
    same_as_b = ("raw-bidir-mean", "mlp", dropout)  # B's chosen setting: its run is reused
    ids_c, *stage_c = run_all(
        [spec(ID_BASELINE, "cold", None, runs / "cold" / "sasrec-ids")]
        + [spec(n, "cold", items(e, text), runs / "search" / (best_b["name"] if (e, a, d) == same_as_b else n),
                fusion="residual", id_dropout=id_dropout, adapter=a, input_dropout=d)
           for n, (e, a, d) in zip(names_c, grid_c, strict=True)], args.jobs)
    for r, (e, _, _) in zip(stage_c, grid_c, strict=True):
        r["settings"]["embedding"] = e
    floor = 0.98 * ids_c["valid"]["recall@10"]
    admissible = [r for r in stage_c if r["valid"]["recall@10"] >= floor]
    best_c = max(admissible, key=lambda r: r["valid"][f"{COLD_VALID}/recall@10"]) if admissible else None
    ids_d, *stage_d = run_all(
        [spec(ID_BASELINE, "standard", None, runs / "srs" / "sasrec-ids")]
        + [spec(f"D ID init from {e} ({text})", "standard", items(e, text),
                runs / "search" / f"D ID init from {e} ({text})", fusion="init") for e in EMBEDDINGS_C], args.jobs)
    for r, e in zip(stage_d, EMBEDDINGS_C, strict=True):
        r["settings"]["embedding"] = e
    best_d = max(stage_d, key=lambda r: r["valid"]["ndcg@10"])
    if best_d["valid"]["ndcg@10"] <= ids_d["valid"]["ndcg@10"]:
        best_d = None
    e_embedding = (best_d or max(stage_d, key=lambda r: r["valid"]["ndcg@10"]))["settings"]["embedding"]
    specs_e = [(f"E residual-init {e} ({text}) cold split", "cold", e) for e in EMBEDDINGS_C]
    specs_e.append((f"E residual-init {e_embedding} ({text}) standard split", "standard", e_embedding))
    stage_e = run_all([spec(n, split, items(e, text), runs / "search" / n, fusion="residual-init",
                            id_dropout=id_dropout, input_dropout=0.0) for n, split, e in specs_e], args.jobs)
    for r, (_, split, e) in zip(stage_e, specs_e, strict=True):
        r["settings"].update(embedding=e, split=split)
    cold_e = [r for r in stage_e if r["settings"]["split"] == "cold" and r["valid"]["recall@10"] >= floor]
    best_e_cold = max(cold_e, key=lambda r: r["valid"][f"{COLD_VALID}/recall@10"], default=None)
    if best_c and best_e_cold and best_e_cold["valid"][f"{COLD_VALID}/recall@10"] <= \
            best_c["valid"][f"{COLD_VALID}/recall@10"]:
        best_e_cold = None
    standard_e = stage_e[-1]
    d_top = best_d or ids_d
    best_e_standard = standard_e if standard_e["valid"]["ndcg@10"] > d_top["valid"]["ndcg@10"] else None
    rows = stage_a + stage_b + [ids_c] + stage_c + [ids_d] + stage_d + stage_e
    chosen = [r for r in (best_a, best_b, best_c, best_d, best_e_cold, best_e_standard) if r is not None]
    lines = ["| setting | valid R@10 | valid N@10 | cold_valid R@10 | cold_valid N@10 | epochs | chosen |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["valid"]
        cold_r = v.get(f"{COLD_VALID}/recall@10")
        cold_n = v.get(f"{COLD_VALID}/ndcg@10")
        lines.append(f"| {r['name']} | {v['recall@10']:.4f} | {v['ndcg@10']:.4f} | "
                     + (f"{cold_r:.4f} | {cold_n:.4f}" if cold_r is not None else "- | -")
                     + f" | {r['epochs']} | {'yes' if r in chosen else ''} |")
    table = "\n".join(lines)
    verdict = (f"C's floor: valid R@10 >= {floor:.4f} (0.98 x {ID_BASELINE}); "
               + (f"chosen: {best_c['name']}" if best_c else "no setting of C reaches it")
               + f". D: {best_d['name'] if best_d else f'no ID start from text beats the random one ({ID_BASELINE})'}"
               + f". E, cold split: {best_e_cold['name'] if best_e_cold else 'no better than C'}"
               + f"; standard split: {best_e_standard['name'] if best_e_standard else 'no better than D'}")
    print(table + "\n\n" + verdict)
    chosen_c = None if best_c is None else {k: best_c["settings"][k] for k in ("embedding", "adapter", "input_dropout")}
    write_result("recipe_search", {"seed": SEED, "profile": PROFILE, "grid": {
        "text": TEXTS, "input_dropout": INPUT_DROPOUTS, "id_dropout": ID_DROPOUTS,
        "c": {"embedding": EMBEDDINGS_C, "adapter": ADAPTERS_C, "input_dropout": INPUT_DROPOUTS_C},
        "d": {"embedding": EMBEDDINGS_C}, "e": {"embedding": EMBEDDINGS_C, "fusion": "residual-init"}},
        "rows": rows, "c_floor": floor, "chosen": {"text": text, "input_dropout": dropout, "id_dropout": id_dropout,
                                                  "c": chosen_c,
                                                  "d": best_d["settings"]["embedding"] if best_d else None,
                                                  "e_cold": best_e_cold["name"] if best_e_cold else None,
                                                  "e_standard": best_e_standard["name"] if best_e_standard else None}})
    (RESULTS / "recipe_search.md").write_text(f"Recipe search on validation (seed {SEED})\n\n{table}\n\n{verdict}\n")
    plot(rows, RESULTS / "recipe_search.png")


if __name__ == "__main__":
    main()
