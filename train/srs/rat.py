"""LLMEmb stage 2, recommendation adaptation training (RAT): frozen LLM item embeddings + an adapter, aligned with
the item embeddings of a pretrained ID-based SASRec.

  python -m train.stages rat --dataset ml-100k --embeddings runs/r/embeddings/items.safetensors \\
      --id-srs runs/r/srs/sasrec-ids/seed-2024 --out runs/r/srs/llmemb [--seeds ...]

As LLMEmb's code runs it (models/LLMEmb.py, models/Adapter.py, experiments/*/rat/llmemb.bash): a
`SequentialRecommender` under the `llmemb` downstream preset (train/srs/config.py: Kang's SASRec, BCE with one
negative per position, early stopping on sampled NDCG@10) with the frozen LLM vectors as items and LLMEmb's
adapter (Linear(D, D/2) -> Linear(D/2, hidden), no activation; the SASRec scales the history inputs by
sqrt(hidden), the candidate vectors are not), trained with
  next-item loss + alpha * alignment        (alpha 0.01)
The alignment (`AlignmentLoss`) is LLMEmb's Contrastive_Loss2, the soft-target loss of SCFT
(`soft_contrastive_loss`): X = the ID-SASRec's item rows, Y = the adapted vectors of every target position of the
batch (padding excluded, repeats kept), raw dot products, tau 2, targets softmax(sim x tau). `overrides` (the CLI's
field flags) change any SRS setting; the ID checkpoint must share the hidden size (train it with
`python -m train.srs --preset llmemb --items ids`).

PCA (`pca`): LLMEmb reduces the LLM vectors to 1,536 dimensions when they are wider ("auto"); an int k reduces to k,
0 never. Fitted with numpy's SVD on the non-padding rows (centred); the reduced table (row 0 kept at zero) is what
the SRS freezes. Components [k, D] and mean [D] go to `<seed dir>/pca.safetensors` and are named in config.json
(`items.pca`), so a new item's LLM vector is reduced the same way (`project`) before the adapter (LLMEmb does not
save its PCA). Component signs are fixed (largest-magnitude entry positive), so the fit is deterministic.

Causality: our SASRec masks future positions (tested in tests/train/srs). LLMEmb's public SASRec had its causal
mask commented out, so each position could attend to its own target; that is not repeated.

Output per seed (`<out>/seed-<s>/`): the standard SRS checkpoint (model.safetensors + config.json, loadable with
`load_checkpoint`; evaluation and export work unchanged), metrics.json (test: full ranking Recall/NDCG@K and 100
sampled negatives HR/NDCG@10, with LLMEmb's long-tail groups), log.jsonl (per epoch, "extra_loss" = alpha x
alignment), pca.safetensors when reduced; `<out>/summary.json`: mean and std over seeds. Finished seeds with the
same settings are reused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrec.files import sha256_file, write_json_atomic
from train.data.dataset import SequenceData

from .checkpoint import FORMAT
from .config import SRSConfig
from .items import load_item_embeddings
from .losses import soft_contrastive_loss
from .model import SequentialRecommender
from .runs import finished_seed, summarise
from .trainer import train_one_seed

log = logging.getLogger("llmrec.srs")

PCA_FILE = "pca.safetensors"
DEFAULT_ALPHA = 0.01  # experiments/*/rat/llmemb.bash
DEFAULT_TEMPERATURE = 2.0  # experiments/*/rat/llmemb.bash (--tau 2)
PCA_AUTO_DIM = 1536  # LLMEmb's results/convert.ipynb: PCA(n_components=1536) of the 4,096-d LLaMA vectors


def pca_dim(pca: int | str | None, dim: int) -> int:
    """The PCA size for `dim`-d LLM vectors: "auto" = 1,536 when wider (LLMEmb), an int k = k, 0 / None = none."""
    if pca == "auto":
        return PCA_AUTO_DIM if dim > PCA_AUTO_DIM else 0
    return int(pca or 0)


# ----------------------------------------------------------------------------------------------------- PCA
def fit_pca(matrix: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """PCA of the non-padding rows (1:) of `matrix` [N + 1, D]: components [dim, D] (orthonormal rows), mean [D],
    explained_variance_ratio [dim]."""
    rows = np.asarray(matrix, dtype=np.float64)[1:]
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"PCA needs a [num_items + 1, D] matrix with items, got shape {np.shape(matrix)}")
    limit = min(rows.shape)
    if not isinstance(dim, int) or not 0 < dim <= limit:
        raise ValueError(f"--pca must be an int in [1, {limit}] (min of {rows.shape[0]} items and dim "
                         f"{rows.shape[1]}), got {dim!r}")
    mean = rows.mean(axis=0)
    _, singular, vt = np.linalg.svd(rows - mean, full_matrices=False)
    components = vt[:dim]
    signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular**2
    ratio = variance[:dim] / variance.sum() if variance.sum() > 0 else np.zeros(dim)
    return {"components": components.astype(np.float32), "mean": mean.astype(np.float32),
            "explained_variance_ratio": ratio.astype(np.float32)}


def project(matrix: np.ndarray, pca: dict[str, np.ndarray], padding_row: bool = True) -> np.ndarray:
    """(matrix - mean) @ components^T; row 0 stays zero when it is the padding row."""
    reduced = (np.asarray(matrix, dtype=np.float32) - pca["mean"]) @ pca["components"].T
    if padding_row:
        reduced[0] = 0.0
    return reduced.astype(np.float32)


def save_pca(path: Path, pca: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in pca.items()}, str(path), metadata={"format": "llmrec.pca/1"})


def load_pca(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


# ----------------------------------------------------------------------------------------------------- ID table
def load_id_item_table(ckpt_dir: str | Path, data: SequenceData) -> tuple[torch.Tensor, dict[str, Any]]:
    """The item table [num_items + 1, H] of an ID-based SRS checkpoint trained on `data`; ValueError otherwise."""
    from .checkpoint import load_checkpoint

    ckpt_dir = Path(ckpt_dir)
    config_path = ckpt_dir / "config.json"
    if not config_path.is_file() or not (ckpt_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"--id-srs {ckpt_dir} is not an SRS checkpoint (needs config.json and "
                                "model.safetensors, e.g. runs/r/srs/sasrec-ids/seed-2024)")
    meta = json.loads(config_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"--id-srs {config_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("srs", {}).get("items", "ids") != "ids":
        raise ValueError(f"--id-srs {ckpt_dir} is not an ID-based SRS (its items are {meta['srs']['items']!r}); "
                         "train one with `python -m train.srs --items ids`")
    if meta.get("num_items") != data.num_items:
        raise ValueError(f"--id-srs {ckpt_dir} was trained on {meta.get('num_items')} items, dataset "
                         f"{data.name!r} has {data.num_items}: another dataset or filtering")
    key, theirs = data.manifest.get("key"), meta.get("dataset", {}).get("manifest", {}).get("key")
    if key is not None and theirs is not None and key != theirs:
        raise ValueError(f"--id-srs {ckpt_dir} was trained on dataset {meta['dataset'].get('name')!r} "
                         f"(key {theirs}), not on {data.name!r} (key {key}): item ids would not match")
    model, _ = load_checkpoint(ckpt_dir)
    table = model.items.table.weight.detach().clone()
    info = {"dir": str(ckpt_dir.resolve()), "sha256": sha256_file(ckpt_dir / "model.safetensors"),
            "backbone": meta["srs"].get("backbone"), "hidden_size": int(table.shape[1]), "dataset_key": theirs}
    return table, {"info": info, "srs": meta["srs"]}


# ----------------------------------------------------------------------------------------------------- loss
class AlignmentLoss:
    """alpha x LLMEmb's soft-target contrastive loss between the ID table's rows (X) and the adapted vectors (Y) of
    every target position of a batch (padding excluded): `train_one_seed`'s `extra_loss` hook."""

    def __init__(self, id_table: torch.Tensor, alpha: float, temperature: float) -> None:
        self.id_table = id_table.detach().float()
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def __call__(self, model: SequentialRecommender, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ids = targets.reshape(-1)
        ids = ids[ids != 0]
        if self.id_table.device != ids.device:
            self.id_table = self.id_table.to(ids.device)
        if len(ids) == 0:
            return model.items(ids).sum() * 0.0
        return self.alpha * soft_contrastive_loss(self.id_table[ids], model.items(ids), self.temperature)


# ----------------------------------------------------------------------------------------------------- runs
def rat_config(embeddings: str | Path, overrides: dict[str, Any] | None = None) -> SRSConfig:
    """The `llmemb` downstream preset with frozen items from `embeddings` and `overrides`."""
    return SRSConfig.preset("llmemb", **{**(overrides or {}), "items": str(embeddings)})


def run_rat(data: SequenceData, embeddings: str | Path, id_srs: str | Path, out: str | Path, seeds: list[int],
            alpha: float = DEFAULT_ALPHA, temperature: float = DEFAULT_TEMPERATURE, pca: int | str | None = "auto",
            overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train RAT for every seed into out/seed-<s>/ and summarise into out/summary.json."""
    if not alpha >= 0:
        raise ValueError(f"--alpha must be >= 0, got {alpha!r}")
    if not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature!r}")
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    id_table, id_meta = load_id_item_table(id_srs, data)
    config = rat_config(embeddings, overrides)
    if config.hidden_size != id_table.shape[1]:
        raise ValueError(f"SRS hidden_size {config.hidden_size} differs from the ID checkpoint's item dim "
                         f"{id_table.shape[1]}: the alignment compares vectors of one space")
    frozen, info = load_item_embeddings(embeddings, data.item_ids)
    pca = pca_dim(pca, frozen.shape[1])
    pca_fit = None
    if pca:
        pca_fit = fit_pca(frozen.numpy(), int(pca))
        frozen = torch.from_numpy(project(frozen.numpy(), pca_fit))
        info["pca"] = {"dim": int(pca), "input_dim": info["dim"], "file": PCA_FILE,
                       "explained_variance": float(pca_fit["explained_variance_ratio"].sum())}
    items_info = {"kind": "frozen", **info}
    rat = {"alpha": float(alpha), "temperature": float(temperature), "pca": int(pca) if pca else None,
           "id_srs": id_meta["info"], "loss": "srs + alpha * soft-target contrastive(id, adapter(llm)), targets"}
    meta = {"dataset": {"name": data.name, "manifest": data.manifest}, "items": items_info, "rat": rat}
    out = Path(out)
    per_seed = []
    for seed in seeds:
        seed_dir = out / f"seed-{seed}"
        previous = finished_seed(seed_dir, {"srs": config.to_dict(), "items": items_info, "rat": rat})
        if previous is not None:
            per_seed.append(previous)
            continue
        if pca_fit is not None:  # before metrics.json, which marks the seed finished
            seed_dir.mkdir(parents=True, exist_ok=True)
            save_pca(seed_dir / PCA_FILE, pca_fit)
        hook = AlignmentLoss(id_table, alpha, temperature)
        train_one_seed(data, config, seed, seed_dir, frozen, meta, progress, extra_loss=hook)
        per_seed.append(json.loads((seed_dir / "metrics.json").read_text()))
    summary = {
        "dataset": data.name, "config": config.to_dict(), "items": items_info, "rat": rat, "seeds": list(seeds),
        "test": summarise(per_seed),
        "train_seconds": {"mean": float(np.mean([m["train_seconds"] for m in per_seed])),
                          "std": float(np.std([m["train_seconds"] for m in per_seed]))},
        "per_seed": per_seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    return summary
