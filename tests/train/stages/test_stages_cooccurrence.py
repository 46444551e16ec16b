"""The co-occurrence contrastive stage: pairs from training parts only, distinct items per batch, it learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.data.dataset import Examples, SequenceData
from train.data.processing import leave_one_out
from train.embedder import ItemEmbedder
from train.stages import make_stage, run_stage
from train.stages.cooccurrence import CooccurrenceConfig, cooccurring_pairs


def test_pairs_by_hand() -> None:
    seqs = [np.array([1, 2, 3, 1, 4, 5]), np.array([2, 3, 4, 6, 7])]
    train, valid, test = leave_one_out(seqs)
    data = SequenceData("hand", 7, ["[PAD]"] + [f"i{i}" for i in range(1, 8)], ["u", "v"], seqs, train, valid, test)
    pairs, counts = cooccurring_pairs(data, window=2)
    found = {(int(a), int(b)): int(c) for (a, b), c in zip(pairs, counts, strict=True)}
    # training parts (before the validation target): [1, 2, 3, 1] and [2, 3, 4]; 5, 6, 7 never appear
    assert found == {(1, 2): 1, (2, 3): 2, (3, 1): 1, (1, 3): 1, (2, 1): 1, (2, 4): 1, (3, 4): 1}
    assert isinstance(data.valid, Examples)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="window"):
        CooccurrenceConfig(window=0)
    with pytest.raises(ValueError, match="item text kind"):
        CooccurrenceConfig(item_text="plot")


def test_stage_trains_with_distinct_items_per_batch(tiny_dir, worded_data, tmp_path) -> None:
    stage = make_stage("co-occurrence", "paper", "demo", steps=12, batch_size=8, num_samples=400, lora=False, lr=2e-3,
                       warmup_steps=0, log_every=1, item_text="title")
    result = run_stage(stage, str(tiny_dir("llama")), worded_data, tmp_path / "co", device="cpu", progress=False)
    assert result["status"] == "finished"
    losses = [json.loads(line)["loss"] for line in (tmp_path / "co" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    batch = stage.collate(np.arange(64), [0, 0])
    rows = batch["input_ids"].shape[0]
    texts = {tuple(r[m.bool()].tolist()) for r, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)}
    assert rows % 2 == 0 and len(texts) == rows  # every item once: no item is its own negative
    reloaded = ItemEmbedder.load(tmp_path / "co" / "embedder", device="cpu", dtype=torch.float32)
    assert (reloaded.config.attention, reloaded.config.pooling) == ("bidirectional", "mean")
