"""Item-level contrastive (SimCSE): the loss by hand, dropout that makes two views differ, a loss that learns."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from train.embedder import EmbedderConfig, ItemEmbedder
from train.stages import ContrastiveConfig, make_stage, run_stage
from train.stages.common import info_nce, set_attention_dropout


def test_info_nce_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    tau = 0.2
    c = 1 / math.sqrt(2)  # cosines: a0.b0 = 1, a0.b1 = c, a1.b0 = 0, a1.b1 = c
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(c / tau)))
    row1 = -math.log(math.exp(c / tau) / (math.exp(0) + math.exp(c / tau)))
    assert math.isclose(info_nce(a, b, tau).item(), (row0 + row1) / 2, rel_tol=1e-6)
    col0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0)))
    col1 = -math.log(math.exp(c / tau) / (math.exp(c / tau) + math.exp(c / tau)))
    symmetric = ((row0 + row1) / 2 + (col0 + col1) / 2) / 2
    assert math.isclose(info_nce(a, b, tau, symmetric=True).item(), symmetric, rel_tol=1e-6)


def test_attention_dropout_makes_views_differ_and_is_restored(tiny_dir):
    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir("llama"))), device="cpu").train()
    batch = embedder.tokenize(["toy story", "toy story"])
    same = embedder(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(same[0], same[1], atol=1e-6)  # config default: no dropout at all
    old = set_attention_dropout(embedder, 0.3)
    views = embedder(batch["input_ids"], batch["attention_mask"])
    assert old == 0.0 and not torch.allclose(views[0], views[1], atol=1e-4)
    set_attention_dropout(embedder, old)
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in embedder.causal_lm.modules())


def test_contrastive_learns(tiny_dir, worded_data, tmp_path):
    for arch in ("llama", "qwen2"):
        stage = make_stage("item-contrastive", "paper", "demo", steps=15, batch_size=8, lora=False, lr=2e-3,
                           warmup_steps=0, log_every=1, dropout=0.2, epochs=0.0)
        run_stage(stage, str(tiny_dir(arch)), worded_data, tmp_path / arch, device="cpu", progress=False)
        losses = [json.loads(line)["loss"] for line in (tmp_path / arch / "log.jsonl").read_text().splitlines()]
        assert np.isfinite(losses).all() and np.mean(losses[-4:]) < np.mean(losses[:4]), losses
        saved = ItemEmbedder.load(tmp_path / arch / "embedder")
        assert saved.config.pooling == "mean" and saved.config.attention == "bidirectional"
        assert saved.causal_lm.config.attention_dropout == 0.0


def test_paper_profile():
    paper = ContrastiveConfig.profile("paper")
    assert (paper.batch_size, paper.lr, paper.temperature, paper.dropout) == (256, 2e-4, 0.1, 0.2)
    assert (paper.warmup_steps, paper.epochs, paper.steps, paper.bucket_batches, paper.symmetric) == (
        300, 5.0, 1000, 1, False)
