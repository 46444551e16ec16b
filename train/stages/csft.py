"""LLM2Rec stage 1, collaborative supervised fine-tuning (CSFT): learn to write the next item's text.

A sample is one *training* example of the dataset (`data.train`: the target is a
training position, its history the items before it in the same sequence, so no
validation or test target is ever seen):
  prompt = the texts of the last `history` items, joined by ", ", followed by ","
  target = " " + the next item's text, then EOS
An item's text is the item-text recipe's (`item_text`; LLM2Rec writes titles: `title`).
Prompt and target are tokenised separately (prompt with the tokenizer's special
tokens, i.e. BOS; target without) and concatenated, so the boundary is exact;
the labels are -100 on the prompt (and padding) and the token ids on the target,
and the loss is plain causal-LM cross-entropy on the target tokens (token i
predicted from position i-1). The separator "," ends the prompt and the target
starts with a space so the target tokens are those the text has inside a list.
Too long a sample drops prompt tokens from the left (after BOS), keeping the most
recent items; the target is cut to at most `max_length - 2` tokens.

Attention is causal during the stage, and the checkpoint is saved causal: a
CSFT embedder is extracted the way it was trained (the MNTP stage that follows
switches to bidirectional attention itself).
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
class CSFTConfig(TextStageConfig):
    """Paper: full fine-tuning, lr 3e-4, effective batch 128 (here 32 x 4 accumulation on one GPU), one pass
    over all training examples (steps 0)."""

    steps: int = 0
    batch_size: int = 32
    grad_accum: int = 4
    lr: float = 3e-4
    warmup_ratio: float = 0.03
    history: int = 10  # items in the prompt
    max_length: int = 256  # tokens of prompt + target
    num_samples: int = 0  # 0: every training example; else a seeded random subset of that size

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # measured on SmolLM2-135M, 2-core CPU, 2 threads, fp32: ~10 s per step (LoRA r16, batch 16 of ~100 tokens,
        # bare titles);
        # 100 steps ~ 17 min
        "cpu-small": {"steps": 100, "batch_size": 16, "grad_accum": 1, "lr": 5e-4, "lora": True, "lora_r": 16,
                      "num_samples": 4096, "max_length": 128, "warmup_ratio": 0.05, "save_every": 20,
                      "log_every": 5},
        # measured: ~1.5 s per step (LoRA r16, batch 8, history 5, ~50 tokens); 60 steps ~ 1.5 min
        "demo": {"steps": 60, "batch_size": 8, "grad_accum": 1, "lr": 5e-4, "lora": True, "lora_r": 16,
                 "history": 5, "num_samples": 512, "max_length": 96, "warmup_ratio": 0.05, "save_every": 20,
                 "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.history, int) or self.history < 1:
            raise ValueError(f"CSFTConfig.history must be an int >= 1, got {self.history!r}")
        if not isinstance(self.max_length, int) or self.max_length < 4:
            raise ValueError(f"CSFTConfig.max_length must be an int >= 4, got {self.max_length!r}")
        if not isinstance(self.num_samples, int) or self.num_samples < 0:
            raise ValueError(f"CSFTConfig.num_samples must be an int >= 0, got {self.num_samples!r}")


def csft_texts(data: SequenceData, history: int, texts: list[str], num_samples: int = 0,
               seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, target) texts from the training examples only (a seeded subset when num_samples > 0);
    `texts` holds every item's text (row 0 empty)."""
    train = data.train
    chosen = np.arange(len(train))
    if num_samples and num_samples < len(train):
        chosen = np.sort(np.random.default_rng(seed).choice(len(train), size=num_samples, replace=False))
    out = []
    for i in chosen.tolist():
        items = train.history(i, history)
        if len(items) == 0:
            continue
        target = int(train.sequences[int(train.seq_index[i])][int(train.position[i])])
        out.append((", ".join(texts[int(x)] for x in items) + ",", " " + texts[target]))
    return out


def encode_pair(tokenizer: Any, eos_id: int, prompt: str, target: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + target + EOS, and how many of them are prompt (labels -100)."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])[: max_length - 3] + [eos_id]
    room = max_length - len(target_ids)
    if len(prompt_ids) > room:
        head = 1 if prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else 0  # keep BOS, drop oldest tokens
        prompt_ids = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (room - head):]
    return prompt_ids + target_ids, len(prompt_ids)


def collate_labeled(rows: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (-100 on the first `n_prompt` tokens and padding)."""
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.as_tensor(ids)
        attention_mask[r, : len(ids)] = 1
        labels[r, n_prompt : len(ids)] = torch.as_tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class CSFTStage:
    name = "csft"

    def __init__(self, config: CSFTConfig | None = None) -> None:
        self.config = config or CSFTConfig()
        self.rows: list[tuple[list[int], int]] = []

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        cfg = self.config
        pairs = csft_texts(data, cfg.history, cfg.item_texts(data), cfg.num_samples, cfg.seed)
        if not pairs:
            raise StageError(f"dataset {data.name!r} has no training example with a history")
        tok = embedder.tokenizer
        self.rows = [encode_pair(tok, embedder.eos_token_id, p, t, cfg.max_length) for p, t in pairs]
        self.pad_id = embedder.pad_token_id
        embedder.config.attention = "causal"

    def lengths(self) -> list[int]:
        return [len(ids) for ids, _ in self.rows]

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        return collate_labeled([self.rows[i] for i in indices], self.pad_id)

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return shifted_token_loss(embedder, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def finish(self, embedder: ItemEmbedder) -> None:
        """Nothing to undo: the checkpoint keeps the causal attention it was trained with."""

    def describe(self) -> dict[str, Any]:
        lengths = self.lengths()
        return {"mean_tokens": round(float(np.mean(lengths)), 2) if lengths else 0}
