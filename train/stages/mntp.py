"""LLM2Rec stage 2a, masked next-token prediction (MNTP, the LLM2Vec recipe) on single item texts.

As LLM2Rec's `llm2rec/run_mntp.py` with `train_mntp_config.json` does (Hugging Face's
DataCollatorForLanguageModeling, `data_collator_type: default`): attention is bidirectional
(kept afterwards: it is the embedding mode). Each item's text (the item-text recipe's,
`item_text`; LLM2Rec's is the title) is tokenised as the embedder reads it
(`ItemEmbedder.token_ids`: template, the tokenizer's special tokens, truncation). Every token
that is not a special token is selected independently with probability `mask_ratio` (0.2);
a selected token is replaced by the mask token with probability `mask_replace` (0.8), by a
random vocabulary token with probability `random_replace` (0.1) and kept otherwise (BERT's
80/10/10). Labels hold the original id at selected positions and -100 elsewhere; the loss
predicts the token at position i from the output at position i-1 (as the LM head was trained
to), never from i itself, so a selected first token has no loss.

The mask token: decoder tokenizers have none. LLM2Vec uses "_" (`mask_token_type: blank`);
here `mask_token` (default "_") is used when it is a single token of the vocabulary
(SmolLM2: id 79), otherwise the tokenizer's unk token, otherwise the pad token (recorded in
stage.json).

Samples are the texts of all items (item texts, not interactions, so no validation or test
information is involved); `holdout` (10%, as the reference's train_test_split) of them are held
out and their loss evaluated every `eval_every` steps, for the log only (no early stopping there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.dataset import SequenceData
from ..embedder import ItemEmbedder
from .common import IGNORE, StageError, held_out_loss, shifted_token_loss
from .config import TextStageConfig


@dataclass
class MNTPConfig(TextStageConfig):
    """LLM2Rec (train_mntp_config.json): batch 32, full fine-tuning, lr 5e-5 and no warm-up (the HF Trainer's
    defaults: the config sets neither), linear decay over 3 epochs (num_train_epochs' default), stopped after
    1,000 steps (stop_after_n_steps), mlm_probability 0.2, mask token "_", 10% of the titles held out and
    evaluated every 100 steps."""

    steps: int = 1000
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 5e-5
    eval_every: int = 100
    save_every: int = 100
    mask_ratio: float = 0.2
    mask_replace: float = 0.8  # of the selected tokens: replaced by the mask token
    random_replace: float = 0.1  # of the selected tokens: replaced by a random token (the rest stay)
    mask_token: str = "_"
    holdout: float = 0.1  # share of the texts held out for the evaluation loss
    max_length: int = 512  # tokens per text (max_seq_length); set on the embedder and kept

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "project": {"item_text": "attributes"},
    }
    BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        # SmolLM2-135M, 2-core CPU, fp32, LoRA r16, batch 32 titles of ~12 tokens: ~3.5 s per step
        "cpu-small": {"steps": 150, "lora": True, "eval_every": 50, "save_every": 50, "log_every": 10},
        # batch 16: ~0.7 s per step
        "demo": {"steps": 40, "batch_size": 16, "lora": True, "eval_every": 20, "save_every": 20, "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            ("mask_ratio", 0 < self.mask_ratio < 1, "in (0, 1)"),
            ("mask_replace", 0 <= self.mask_replace <= 1, "in [0, 1]"),
            ("random_replace", 0 <= self.random_replace <= 1 - self.mask_replace, "in [0, 1 - mask_replace]"),
            ("mask_token", isinstance(self.mask_token, str) and bool(self.mask_token), "a non-empty string"),
            ("holdout", 0 <= self.holdout < 1, "in [0, 1)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"MNTPConfig.{name} must be {rule}, got {getattr(self, name)!r}")


def item_rows(texts: list[str]) -> list[str]:
    """The non-empty item texts (row 0 skipped), one per item, in item order: the references read one line per
    item (item_titles.txt), duplicates included."""
    return [t for t in texts[1:] if t]


def split_holdout(texts: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): a seeded random `share` held out (none when share is 0)."""
    n_out = int(round(share * len(texts)))
    if n_out == 0:
        return list(texts), []
    order = np.random.default_rng(seed).permutation(len(texts))
    held = set(order[:n_out].tolist())
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]


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


def mask_tokens(ids: list[list[int]], special: set[int], mask_id: int, config: MNTPConfig, vocab_size: int,
                rng: np.random.Generator, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded masked input_ids, attention_mask and labels (original ids at selected positions, -100
    elsewhere): each non-special token selected with probability `mask_ratio`, then 80/10/10."""
    length = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = torch.as_tensor(row)
        attention_mask[r, : len(row)] = 1
    original = input_ids.clone()
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.as_tensor(sorted(special), dtype=torch.long))
    draw = torch.from_numpy(rng.random((3, *input_ids.shape)))
    selected = maskable & (draw[0] < config.mask_ratio)
    to_mask = selected & (draw[1] < config.mask_replace)
    # of the rest, random_replace / (1 - mask_replace) become random tokens (HF: 0.5 of the remaining 20%)
    rest = 1.0 - config.mask_replace
    to_random = selected & ~to_mask & (draw[2] < (config.random_replace / rest if rest > 0 else 0.0))
    input_ids[to_mask] = mask_id
    random_ids = torch.from_numpy(rng.integers(0, vocab_size, size=input_ids.shape))
    input_ids[to_random] = random_ids[to_random]
    labels = torch.where(selected, original, torch.full_like(original, IGNORE))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MNTPStage:
    name = "mntp"

    def __init__(self, config: MNTPConfig | None = None) -> None:
        self.config = config or MNTPConfig()
        self.ids: list[list[int]] = []
        self.held_out: list[list[int]] = []

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        texts = item_rows(self.config.item_texts(data))
        if not texts:
            raise StageError(f"dataset {data.name!r} has no item text")
        train, held_out = split_holdout(texts, self.config.holdout, self.config.seed)
        embedder.config.attention = "bidirectional"
        embedder.config.max_length = self.config.max_length
        self.ids = embedder.token_ids(train)
        self.held_out = embedder.token_ids(held_out) if held_out else []
        tok = embedder.tokenizer
        # control tokens (BOS, EOS, pad) are never selected; <unk> stands for text, so it may be
        self.special = ({int(i) for i in tok.all_special_ids} | {embedder.eos_token_id, embedder.pad_token_id}) - {
            tok.unk_token_id}
        self.mask_id = mask_token_id(tok, self.config.mask_token)
        self.mask_token = tok.convert_ids_to_tokens(self.mask_id)
        self.pad_id = embedder.pad_token_id
        self.vocab_size = len(tok)

    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]

    def _masked(self, rows: list[list[int]], seed: list[int]) -> dict[str, torch.Tensor]:
        return mask_tokens(rows, self.special, self.mask_id, self.config, self.vocab_size,
                           np.random.default_rng(seed), self.pad_id)

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        return self._masked([self.ids[i] for i in indices], seed)

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return shifted_token_loss(embedder, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def evaluate(self, embedder: ItemEmbedder) -> float | None:
        """Loss on the held-out texts, masked the same way every time (seed fixed)."""
        size = self.config.batch_size
        batches = [self._masked(self.held_out[i : i + size], [self.config.seed, 2**31, i])
                   for i in range(0, len(self.held_out), size)]
        return held_out_loss(embedder, batches, self.loss)

    def finish(self, embedder: ItemEmbedder) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"mask_token": self.mask_token, "mask_token_id": self.mask_id, "held_out": len(self.held_out)}
