"""A collaborative stage that fits a CPU budget: item co-occurrence contrastive learning.

CSFT teaches collaborative signal by generating the next title from ten previous
ones; at the paper's scale (~1.3M samples) it is out of a CPU's reach. This stage
feeds the same signal to the encoder directly: a positive pair is two items that a
user consumed close together (b within `window` steps after a in the training part
of a sequence: positions before the validation target, so no validation or test
target is seen, and on a cold-start split no cold item either); the other items of
the batch are negatives (InfoNCE on cosine similarities / tau, both directions).
Each item is read through the item-text recipe (llmrec/itemtext.py) that extraction
and serving use, with bidirectional attention and mean pooling, kept afterwards.

Pairs are drawn in proportion to how often they co-occur (a popular pair is seen
more often, as in item2vec); a batch holds distinct items on each side, so an item
is not its own negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.dataset import SequenceData
from ..embedder import ItemEmbedder
from .common import StageError, info_nce
from .config import TextStageConfig


@dataclass
class CooccurrenceConfig(TextStageConfig):
    """No paper default (this stage is ours): sized like the item-contrastive stage it complements."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    temperature: float = 0.1
    window: int = 3
    num_samples: int = 50_000  # pairs drawn (with replacement, by co-occurrence count) per run

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "project": {"item_text": "attributes"}}
    BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "cpu-small": {"steps": 200, "batch_size": 32, "lora": True, "save_every": 40, "log_every": 10},
        "demo": {"steps": 80, "batch_size": 16, "lora": True, "save_every": 20, "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [("temperature", self.temperature > 0, "> 0"), ("window", self.window >= 1, ">= 1"),
                  ("num_samples", self.num_samples >= 2, ">= 2"), ("batch_size", self.batch_size >= 2,
                                                                   ">= 2 (in-batch negatives)")]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"CooccurrenceConfig.{name} must be {rule}, got {getattr(self, name)!r}")


def cooccurring_pairs(data: SequenceData, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs, a != b, b within `window` steps after a in training parts, and their counts."""
    keys = []
    for s, p in zip(data.valid.seq_index, data.valid.position, strict=True):
        seq = data.sequences[int(s)][: int(p)]  # the training part: everything before the validation target
        for d in range(1, window + 1):
            a, b = seq[:-d], seq[d:]
            keep = a != b
            keys.append(a[keep].astype(np.int64) * (data.num_items + 1) + b[keep])
    if not keys:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    unique, counts = np.unique(np.concatenate(keys), return_counts=True)
    return np.stack([unique // (data.num_items + 1), unique % (data.num_items + 1)], axis=1), counts


class CooccurrenceStage:
    name = "co-occurrence"

    def __init__(self, config: CooccurrenceConfig | None = None) -> None:
        self.config = config or CooccurrenceConfig()
        self.samples = np.zeros((0, 2), np.int64)
        self.ids: list[list[int]] = []

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        cfg = self.config
        pairs, counts = cooccurring_pairs(data, cfg.window)
        if len(pairs) < 2:
            raise StageError(f"dataset {data.name!r} has fewer than 2 co-occurring item pairs")
        rng = np.random.default_rng(cfg.seed)
        self.samples = pairs[rng.choice(len(pairs), size=cfg.num_samples, p=counts / counts.sum())]
        embedder.config.attention = "bidirectional"
        embedder.config.pooling = "mean"
        texts = cfg.item_texts(data)
        self.ids = [[]] + embedder.token_ids(texts[1:])
        self.collate_fn = embedder.collate

    def lengths(self) -> list[int]:
        return [len(self.ids[a]) + len(self.ids[b]) for a, b in self.samples]

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        # distinct items on each side: a repeated item would be a false negative of itself
        seen_a: set[int] = set()
        seen_b: set[int] = set()
        rows = []
        for a, b in self.samples[indices]:
            if int(a) not in seen_a and int(b) not in seen_b and int(a) not in seen_b and int(b) not in seen_a:
                seen_a.add(int(a))
                seen_b.add(int(b))
                rows.append((int(a), int(b)))
        if len(rows) < 2:
            rows = [(int(a), int(b)) for a, b in self.samples[indices[:2]]]
        return self.collate_fn([self.ids[a] for a, _ in rows] + [self.ids[b] for _, b in rows])

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = embedder(batch["input_ids"], batch["attention_mask"])
        a, b = vectors.chunk(2)
        return info_nce(a, b, self.config.temperature, True)

    def finish(self, embedder: ItemEmbedder) -> None:
        """Nothing to undo: bidirectional + mean is the embedding mode it trained."""

    def describe(self) -> dict[str, Any]:
        return {"temperature": self.config.temperature, "window": self.config.window,
                "item_text": self.config.item_text, "distinct_pairs_drawn": int(len({tuple(p) for p in self.samples}))}
