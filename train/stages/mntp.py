"""LLM2Rec stage 2a, masked next-token prediction (MNTP, the LLM2Vec recipe) on single item texts.

Attention is bidirectional (kept afterwards: it is the embedding mode). Each item's
text (the item-text recipe's, `item_text`; LLM2Rec's is the title) is tokenised as
the embedder reads it (`ItemEmbedder.token_ids`: template, BOS, truncation); among
its non-special tokens, round(`mask_ratio` x n) (at least one)
are chosen at random and replaced by the mask token. Labels hold the original id
at masked positions and -100 elsewhere; the loss predicts the token at position i
from the output at position i-1 (as the LM head was trained to), never from i itself.

The mask token: decoder tokenizers have none. LLM2Vec uses "_" for Llama models;
here `mask_token` (default "_") is used when it is a single token of the vocabulary
(SmolLM2: id 79), otherwise the tokenizer's unk token, otherwise the pad token
(recorded in stage.json). Always replacing by the mask token (no 80/10/10 split)
is a simplification of BERT's recipe that LLM2Vec's ablations found harmless.

Samples are the distinct texts of all items: item texts, not interactions, so no
validation/test information is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.dataset import SequenceData
from ..embedder import ItemEmbedder
from .common import IGNORE, StageError, shifted_token_loss
from .config import TextStageConfig


@dataclass
class MNTPConfig(TextStageConfig):
    """Paper: 1,000 steps; batch 32 and lr 5e-5 follow LLM2Vec's MNTP; full fine-tuning as in LLM2Rec."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-5
    mask_ratio: float = 0.2
    mask_token: str = "_"

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # measured on SmolLM2-135M, 2-core CPU, 2 threads, fp32: ~3.5 s per step (LoRA r16, batch 32 bare titles
        # of ~12 tokens); 150 steps ~ 9 min
        "cpu-small": {"steps": 150, "batch_size": 32, "lr": 2e-4, "lora": True, "save_every": 50, "log_every": 10},
        # measured: ~0.7 s per step (batch 16); 80 steps ~ 1 min
        "demo": {"steps": 80, "batch_size": 16, "lr": 2e-4, "lora": True, "save_every": 25, "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"MNTPConfig.mask_ratio must be in (0, 1), got {self.mask_ratio!r}")
        if not isinstance(self.mask_token, str) or not self.mask_token:
            raise ValueError(f"MNTPConfig.mask_token must be a non-empty string, got {self.mask_token!r}")


def unique_texts(texts: list[str]) -> list[str]:
    """Distinct non-empty item texts (row 0 skipped), in item order (duplicates would be false negatives in
    a batch)."""
    return list(dict.fromkeys(t for t in texts[1:] if t))


def mask_token_id(tokenizer: Any, token: str) -> int:
    """`token` when it is one vocabulary token (as is, or as the tokenizer encodes it), else unk, else pad."""
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return int(vocab[token])
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
        return int(ids[0])
    fallback = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id
    if fallback is None:
        raise StageError(f"mask token {token!r} is not one token of this tokenizer, and it has no unk/pad token")
    return int(fallback)


def mask_tokens(ids: list[list[int]], special: set[int], mask_id: int, ratio: float, rng: np.random.Generator,
                pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded masked input_ids, attention_mask and labels (original ids at masked positions, -100 elsewhere)."""
    length = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    labels = torch.full((len(ids), length), IGNORE, dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = torch.as_tensor(row)
        attention_mask[r, : len(row)] = 1
        # position 0 is never masked: the token at i is predicted from position i-1
        candidates = [i for i, t in enumerate(row) if i > 0 and t not in special]
        if not candidates:
            continue
        k = max(1, int(round(ratio * len(candidates))))
        chosen = rng.choice(candidates, size=k, replace=False)
        labels[r, chosen] = input_ids[r, chosen]
        input_ids[r, chosen] = mask_id
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MNTPStage:
    name = "mntp"

    def __init__(self, config: MNTPConfig | None = None) -> None:
        self.config = config or MNTPConfig()
        self.ids: list[list[int]] = []

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        texts = unique_texts(self.config.item_texts(data))
        if not texts:
            raise StageError(f"dataset {data.name!r} has no item text")
        embedder.config.attention = "bidirectional"
        self.ids = embedder.token_ids(texts)
        tok = embedder.tokenizer
        # control tokens (BOS, EOS, pad) are never masked; <unk> stands for text, so it may be
        self.special = ({int(i) for i in tok.all_special_ids} | {embedder.eos_token_id, embedder.pad_token_id}) - {
            tok.unk_token_id}
        self.mask_id = mask_token_id(tok, self.config.mask_token)
        self.mask_token = tok.convert_ids_to_tokens(self.mask_id)
        self.pad_id = embedder.pad_token_id

    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(seed)
        return mask_tokens([self.ids[i] for i in indices], self.special, self.mask_id, self.config.mask_ratio, rng,
                           self.pad_id)

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return shifted_token_loss(embedder, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def finish(self, embedder: ItemEmbedder) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"mask_token": self.mask_token, "mask_token_id": self.mask_id}
