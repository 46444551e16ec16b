"""Checkpoints: model.safetensors + config.json, nothing pickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmrec.files import write_json_atomic

from .config import SRSConfig
from .model import SequentialRecommender

FORMAT = "llmrec.srs/1"


def save_checkpoint(model: SequentialRecommender, out_dir: str | Path, meta: dict) -> Path:
    """Write weights and a config that names everything the model was made from."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.chmod(0o644)  # safetensors creates files private to the owner
    os.replace(tmp, out_dir / "model.safetensors")
    config = {"format": FORMAT, "srs": model.config.to_dict(), "num_items": model.num_items, **meta}
    write_json_atomic(out_dir / "config.json", config)
    return out_dir


def load_checkpoint(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SequentialRecommender, dict]:
    ckpt_dir = Path(ckpt_dir)
    config_path, weights_path = ckpt_dir / "config.json", ckpt_dir / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"not an SRS checkpoint: {p} is missing")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    state = load_file(str(weights_path))
    frozen = state.get("items.frozen", state.get("items.text.frozen"))
    warm = state.get("items.warm")
    model = SequentialRecommender(SRSConfig.from_dict(config["srs"]), config["num_items"],
                                  torch.zeros_like(frozen) if frozen is not None else None, warm)
    model.load_state_dict(state)
    return model.to(device).eval(), config
