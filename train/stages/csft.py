"""LLM2Rec stage 1, collaborative supervised fine-tuning (CSFT): learn to write the next item's text.

As LLM2Rec's `llm2rec/run_csft.py` and `llm2rec/dataset.py` (PurePromptDataset) do:
  prompt = the texts of the last `history` items, joined by ", " (no BOS: the reference strips it)
  target = the next item's text + "\\n", then EOS
An item's text is the item-text recipe's (`item_text`; LLM2Rec writes titles: `title`).
Prompt and target are tokenised separately, without special tokens, and concatenated; the
labels are -100 on the prompt (and padding) and the token ids on the target, and the loss
is plain causal-LM cross-entropy on the target tokens (token i predicted from position i-1).
Too long a sample keeps its last `max_length` tokens (the reference's `tokens[-max_len:]`).

Samples are the *training* examples of the dataset (`data.train`: a training position as the
target, the items before it in the same sequence as its history), shuffled; the validation
examples (`data.valid`, up to `eval_samples` of them, a seeded subset) are the held-out set
whose loss is evaluated every `eval_every` steps: training stops after `patience` evaluations
without a lower loss and the best weights are kept (the reference's EarlyStoppingCallback(5),
eval every 2,000 steps, load_best_model_at_end).

Attention is causal during the stage, and the checkpoint is saved causal: a CSFT embedder is
extracted the way it was trained (the MNTP stage that follows switches to bidirectional
attention itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.dataset import Examples, SequenceData
from ..embedder import ItemEmbedder
from .common import IGNORE, StageError, held_out_loss, shifted_token_loss
from .config import TextStageConfig


@dataclass
class CSFTConfig(TextStageConfig):
    """LLM2Rec (run_LLM2Rec_CSFT.sh, run_csft.py): full fine-tuning, lr 3e-4, effective batch 128 (micro-batch 4
    on 2 GPUs with accumulation), at most 10,000 steps (max_steps; the schedule spans them), 200 warm-up steps,
    linear decay, validation loss on 2,000 validation examples every 2,000 steps, patience 5, the best kept,
    cutoff 1,024 tokens."""

    steps: int = 10_000
    batch_size: int = 4
    grad_accum: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    eval_every: int = 2000
    eval_samples: int = 2000
    patience: int = 5
    save_every: int = 2000
    history: int = 10  # items in the prompt (the reference's CSV histories hold the last 10)
    max_length: int = 1024  # tokens of prompt + target (cutoff_len)

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # the attribute sentence reads better than a bare title for a 135M model (bench/results/screen_embeddings.md)
        "project": {"item_text": "attributes"},
    }
    BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        # SmolLM2-135M, 2-core CPU, fp32, LoRA r16, batch 16 of ~100 tokens: ~10 s per step
        "cpu-small": {"steps": 100, "warmup_steps": 2, "batch_size": 16, "grad_accum": 1, "lora": True,
                      "lora_r": 16, "eval_every": 25, "eval_samples": 128, "save_every": 25, "log_every": 5},
        # batch 8: ~1.5-3 s per step
        "demo": {"steps": 40, "warmup_steps": 1, "batch_size": 8, "grad_accum": 1, "lora": True, "lora_r": 16,
                 "eval_every": 20, "eval_samples": 64, "save_every": 20, "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.history, int) or self.history < 1:
            raise ValueError(f"CSFTConfig.history must be an int >= 1, got {self.history!r}")
        if not isinstance(self.max_length, int) or self.max_length < 4:
            raise ValueError(f"CSFTConfig.max_length must be an int >= 4, got {self.max_length!r}")


def csft_texts(examples: Examples, history: int, texts: list[str]) -> list[tuple[str, str]]:
    """(prompt, target) texts of `examples` that have a history; `texts` holds every item's text (row 0 empty)."""
    out = []
    for i in range(len(examples)):
        items = examples.history(i, history)
        if len(items) == 0:
            continue
        target = int(examples.sequences[int(examples.seq_index[i])][int(examples.position[i])])
        out.append((", ".join(texts[int(x)] for x in items), texts[target] + "\n"))
    return out


def encode_pair(tokenizer: Any, eos_id: int, prompt: str, target: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + target + EOS (no BOS), cut to the last `max_length`, and how many are prompt."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [eos_id]
    ids = prompt_ids + target_ids
    cut = max(0, len(ids) - max_length)
    return ids[cut:], max(0, len(prompt_ids) - cut)


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
        self.held_out: list[tuple[list[int], int]] = []

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        cfg = self.config
        texts = cfg.item_texts(data)
        pairs = csft_texts(data.train, cfg.history, texts)
        if not pairs:
            raise StageError(f"dataset {data.name!r} has no training example with a history")
        valid = csft_texts(data.valid, cfg.history, texts)
        if cfg.eval_samples and len(valid) > cfg.eval_samples:  # the reference's `sample=2000`
            keep = np.sort(np.random.default_rng(cfg.seed).choice(len(valid), cfg.eval_samples, replace=False))
            valid = [valid[i] for i in keep.tolist()]
        tok, eos = embedder.tokenizer, embedder.eos_token_id
        self.rows = [encode_pair(tok, eos, p, t, cfg.max_length) for p, t in pairs]
        self.held_out = [encode_pair(tok, eos, p, t, cfg.max_length) for p, t in valid]
        self.pad_id = embedder.pad_token_id
        embedder.config.attention = "causal"

    def lengths(self) -> list[int]:
        return [len(ids) for ids, _ in self.rows]

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        return collate_labeled([self.rows[i] for i in indices], self.pad_id)

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return shifted_token_loss(embedder, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def evaluate(self, embedder: ItemEmbedder) -> float | None:
        """Mean target-token loss on the held-out validation examples (None without any)."""
        batches = [collate_labeled(self.held_out[i : i + self.config.batch_size], self.pad_id)
                   for i in range(0, len(self.held_out), self.config.batch_size)]
        return held_out_loss(embedder, batches, self.loss)

    def finish(self, embedder: ItemEmbedder) -> None:
        """Nothing to undo: the checkpoint keeps the causal attention it was trained with."""

    def describe(self) -> dict[str, Any]:
        lengths = self.lengths()
        return {"mean_tokens": round(float(np.mean(lengths)), 2) if lengths else 0, "held_out": len(self.held_out)}
