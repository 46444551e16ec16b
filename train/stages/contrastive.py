"""LLM2Rec stage 2b, item-level contrastive learning (unsupervised SimCSE) on item texts.

Bidirectional attention and mean pooling (both kept afterwards: LLM2Rec's
embedding mode). A batch of B item texts drawn at random (one row per item, as the
reference's item_titles.txt; the item-text recipe's, `item_text`; LLM2Rec's is the
title) is encoded twice in one forward pass of 2B
rows; dropout makes the two views differ. The positive of view i is the other
view of the same item, the other B-1 items are negatives; logits are
cosine similarities / tau and the loss InfoNCE (`symmetric` averages both directions).

Dropout: Llama/Qwen2 configs ship attention_dropout 0.0 and have no other dropout,
so the two views would be identical (and the loss trivial) in full fine-tuning. The
stage sets the attention-probability dropout of every layer to `dropout` (default
0.2, LLM2Rec's published value) while training, and restores the model's own value
before saving, so the saved config is unchanged. LoRA dropout adds no noise at the
start (B = 0), so this is the source of the two views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.dataset import SequenceData
from ..embedder import ItemEmbedder
from .common import StageError, info_nce, set_attention_dropout
from .config import TextStageConfig
from .mntp import item_rows


@dataclass
class ContrastiveConfig(TextStageConfig):
    """LLM2Rec (train_simcse_config.json, run_unsupervised_SimCSE.py): batch 256 at random, lr 2e-4, 300 warm-up
    steps, linear decay over 5 epochs (num_train_epochs), stopped after 1,000 steps, full fine-tuning, loss scale
    10 (tau 0.1), SimCSE dropout 0.2 (attention dropout: with LoRA B = 0 at the start, the only source of two
    different views), one direction (llm2vec's HardNegativeNLLLoss)."""

    steps: int = 1000
    epochs: float = 5.0
    batch_size: int = 256
    lr: float = 2e-4
    warmup_steps: int = 300
    temperature: float = 0.1
    dropout: float = 0.2
    symmetric: bool = False
    max_length: int = 512  # tokens per text (max_seq_length; llm2vec_config.json's max_length); kept

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "project": {"item_text": "attributes"},
    }
    BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        # SmolLM2-135M, 2-core CPU, fp32, LoRA r16, batch 32 titles (64 rows of ~12 tokens): ~2.5 s per step
        "cpu-small": {"steps": 200, "warmup_steps": 60, "batch_size": 32, "lora": True, "save_every": 40,
                      "log_every": 10},
        # batch 16: ~1.1 s per step
        "demo": {"steps": 40, "warmup_steps": 12, "batch_size": 16, "lora": True, "save_every": 20, "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"ContrastiveConfig.temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ContrastiveConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.batch_size < 2:
            raise ValueError("ContrastiveConfig.batch_size must be >= 2 (in-batch negatives)")


class ContrastiveStage:
    name = "item-contrastive"

    def __init__(self, config: ContrastiveConfig | None = None) -> None:
        self.config = config or ContrastiveConfig()
        self.ids: list[list[int]] = []
        self.old_dropout = 0.0

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        texts = item_rows(self.config.item_texts(data))
        if len(texts) < 2:
            raise StageError(f"dataset {data.name!r} has fewer than 2 distinct item texts")
        embedder.config.attention = "bidirectional"
        embedder.config.pooling = "mean"
        embedder.config.max_length = self.config.max_length
        self.ids = embedder.token_ids(texts)
        self.collate_fn = embedder.collate
        self.old_dropout = set_attention_dropout(embedder, self.config.dropout)

    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.ids[i] for i in indices]
        return self.collate_fn(rows + rows)  # two views of every item, dropout differs per row

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = embedder(batch["input_ids"], batch["attention_mask"])
        a, b = vectors.chunk(2)
        return info_nce(a, b, self.config.temperature, self.config.symmetric)

    def finish(self, embedder: ItemEmbedder) -> None:
        set_attention_dropout(embedder, self.old_dropout)

    def describe(self) -> dict[str, Any]:
        return {"dropout": self.config.dropout, "temperature": self.config.temperature}
