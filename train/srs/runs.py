"""Several seeds of one configuration, resumable, summarised as mean and std."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from llmrec.files import write_json_atomic
from train.data.dataset import SequenceData

from .config import SRSConfig, without_retired
from .items import load_item_embeddings
from .trainer import train_one_seed

log = logging.getLogger("llmrec.srs")


OUT_MARKERS = ("summary.json", "seed-*")  # what an out folder of run_seeds holds

def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, int | float):
            out[key] = float(v)
    return out


def summarise(per_seed: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (population) std of every numeric test metric across seeds."""
    flat = [flatten(m["test"]) for m in per_seed]
    keys = sorted(set.intersection(*(set(f) for f in flat))) if flat else []
    return {k: {"mean": float(np.mean([f[k] for f in flat])), "std": float(np.std([f[k] for f in flat]))}
            for k in keys}


def finished_seed(seed_dir: Path, expected: dict) -> dict | None:
    """The metrics of a seed already trained with exactly `expected` (config.json keys -> values), else None."""
    done, config_path = seed_dir / "metrics.json", seed_dir / "config.json"
    if not (done.is_file() and config_path.is_file()):
        return None
    previous = json.loads(config_path.read_text())
    if "srs" in previous and "srs" in expected:  # a field added since that run, at its default: what that run did
        try:  # a field removed since, at the value that changed nothing: the same
            previous["srs"] = without_retired(previous["srs"])
        except ValueError:
            return None
        defaults = SRSConfig().to_dict()
        previous["srs"] = {**{k: v for k, v in defaults.items() if k in expected["srs"]}, **previous["srs"]}
    if any(previous.get(k) != json.loads(json.dumps(v)) for k, v in expected.items()):
        return None
    log.info("seed_reused", extra={"seed_dir": str(seed_dir)})
    return json.loads(done.read_text())


def run_seeds(data: SequenceData, config: SRSConfig, seeds: list[int], out_dir: str | Path,
              progress: bool = True) -> dict:
    """Train every seed into out_dir/seed-<s>/; seeds already finished are reused, not retrained."""
    out_dir = Path(out_dir)
    frozen, items_info = None, {"kind": "ids"}
    if config.items != "ids":
        frozen, info = load_item_embeddings(config.items, data.item_ids)
        items_info = {"kind": "frozen", **info}
    meta = {"dataset": {"name": data.name, "manifest": data.manifest}, "items": items_info}
    per_seed = []
    for seed in seeds:
        seed_dir = out_dir / f"seed-{seed}"
        previous = finished_seed(seed_dir, {"srs": config.to_dict(), "items": items_info})
        if previous is not None:
            per_seed.append(previous)
            continue
        result = train_one_seed(data, config, seed, seed_dir, frozen, meta, progress)
        per_seed.append(json.loads((result.out_dir / "metrics.json").read_text()))
    summary = {
        "dataset": data.name, "config": config.to_dict(), "items": items_info, "seeds": seeds,
        "test": summarise(per_seed),
        "train_seconds": {"mean": float(np.mean([m["train_seconds"] for m in per_seed])),
                          "std": float(np.std([m["train_seconds"] for m in per_seed]))},
        "per_seed": per_seed,
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return summary
