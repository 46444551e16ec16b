"""Fixtures of the export tests: tiny random Llama/Qwen2 embedder checkpoints, tiny SRS checkpoints, and a
session cache of exports (each distinct export is built once)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("_embedder_fixtures", Path(__file__).parents[1] / "train" /
                                               "embedder" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
build_tiny_tokenizer, build_tiny_model, tiny_words = (_fixtures.build_tiny_tokenizer, _fixtures.build_tiny_model,
                                                      _fixtures.tiny_words)
EOS_ID = _fixtures.EOS_ID


@pytest.fixture(scope="session")
def tiny_embedder(tiny_dir):
    """Factory: tiny_embedder(arch, **EmbedderConfig fields) -> fresh fp32 CPU ItemEmbedder."""
    from train.embedder import EmbedderConfig, ItemEmbedder

    def make(arch: str = "llama", **fields):
        config = EmbedderConfig(base=str(tiny_dir(arch)), **fields)
        return ItemEmbedder.from_base(config, device="cpu", dtype=torch.float32)

    return make


@pytest.fixture(scope="session")
def embedder_checkpoint(tiny_embedder, tmp_path_factory):
    """Factory: embedder_checkpoint(arch, **fields) -> (saved checkpoint folder, the embedder), cached."""
    root = tmp_path_factory.mktemp("embedder_ckpts")
    built: dict[str, tuple[Path, object]] = {}

    def make(arch: str = "llama", **fields):
        key = json.dumps([arch, fields], sort_keys=True)
        if key not in built:
            embedder = tiny_embedder(arch, **fields)
            folder = embedder.save(root / f"ckpt-{len(built)}")
            built[key] = (folder, embedder)
        return built[key]

    return make


@pytest.fixture(scope="session")
def exported(embedder_checkpoint, tmp_path_factory):
    """Factory: exported(arch, normalize=False, **fields) -> (export folder, manifest, embedder), cached."""
    from export.onnx.embedder import export_embedder

    root = tmp_path_factory.mktemp("embedder_exports")
    built: dict[str, tuple[Path, dict, object]] = {}

    def make(arch: str = "llama", normalize: bool = False, **fields):
        key = json.dumps([arch, normalize, fields], sort_keys=True)
        if key not in built:
            checkpoint, embedder = embedder_checkpoint(arch, **fields)
            out = root / f"export-{len(built)}"
            manifest = export_embedder(checkpoint, out, normalize=normalize)
            built[key] = (out, manifest, embedder)
        return built[key]

    return make


@pytest.fixture(scope="session")
def srs_checkpoint():
    """Factory: srs_checkpoint(folder, backbone=..., frozen=..., **SRSConfig fields) -> the saved SRS model."""
    return save_srs


def save_srs(folder: Path, backbone: str = "sasrec", num_items: int = 30, hidden: int = 16, max_len: int = 8,
             frozen: torch.Tensor | None = None, seed: int = 0, dataset: dict | None = None,
             warm: torch.Tensor | None = None, **config_fields):
    """A randomly initialised SRS checkpoint (ID items, or frozen vectors + adapter) in `folder`; returns the
    model (eval mode) as saved."""
    from train.srs.checkpoint import save_checkpoint
    from train.srs.config import SRSConfig
    from train.srs.model import SequentialRecommender

    torch.manual_seed(seed)
    items = "ids" if frozen is None else "embeddings.safetensors"
    config = SRSConfig(backbone=backbone, hidden_size=hidden, max_len=max_len, ffn_size=hidden, num_heads=2,
                       items=items, **config_fields)
    model = SequentialRecommender(config, num_items if frozen is None else frozen.shape[0] - 1, frozen, warm)
    with torch.no_grad():  # trained-looking adapter and positions (not the near-zero initialisation)
        for name, param in model.named_parameters():
            if "ln" not in name:
                param.add_(torch.randn_like(param) * 0.1)
        if frozen is None:
            model.items.table.weight[0].zero_()
    meta = {"items": {"kind": "ids" if frozen is None else "frozen"}, "dataset": dataset or {}}
    save_checkpoint(model, folder, meta)
    return model.eval()
