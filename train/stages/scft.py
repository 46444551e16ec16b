"""LLMEmb stage 1, supervised contrastive fine-tuning (SCFT) on attribute sentences.

Item text (LLMEmb's prompt, `train.data.text.format_attributes`):
  "The <domain> item has the following attributes: key is value; key is value; ..."
Attribute-level augmentation: every sample is one item's (key, value) list; a batch of
B items is turned into two views, each an independently shuffled copy of the list with
`drop_ratio` (40%) of its attributes dropped: round(drop_ratio x n) of n, but at least one
kept (`augment_attributes`; seeded by the loop's per-batch seed, so resumable). Row i of
view X and row i of view Y are a positive pair, the other rows of the batch negatives.

Loss (`soft_contrastive_loss`, CLIP-like with soft targets):
  X, Y     pooled last hidden states of the two views [B, D], L2-normalised (`normalize`)
  logits   X Y^T / tau
  targets  softmax(((X X^T + Y Y^T) / 2) / tau, rows)
  loss     (CE(logits, targets) + CE(logits^T, targets^T)) / 2, CE with soft targets
tau is learnable: a log-parameterised scalar trained with the LoRA weights (no weight decay),
initialised at `temperature` (0.07, CLIP's initial value) and clamped at `min_temperature`
(0.01, CLIP's logit-scale cap of 100); the learned value goes to stage.json ("temperature").

Differences from the public LLMEmb code (liuqidong07/LLMEmb, llm/llama.py), on purpose:
  - it uses raw dot products of un-normalised states with tau initialised at 3; with raw
    SmolLM2 states (norms in the tens) the logits saturate, so vectors are normalised here;
  - its targets are softmax(avg self-similarity * tau) (a multiplication); here / tau, as the
    formula above and the paper state;
  - targets are not detached (as there); `detach_targets=True` treats them as fixed labels.

Attention and pooling: LLMEmb fine-tunes and embeds with the causal LLM (LLaMA-7B) and mean
pooling, so this stage sets the embedder to `attention="causal"`, `pooling="mean"` (both
configurable) and keeps them in the saved embedder, so `python -m train.embed --text attributes
--domain <domain>` embeds items exactly as they were trained. LoRA r 8, alpha 32, dropout 0.1
on all attention and MLP projections (LLMEmb's scripts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import SequenceData
from ..data.text import format_attributes, item_attributes
from ..embedder import ATTENTIONS, POOLINGS, ItemEmbedder
from .common import StageError
from .config import StageConfig

TEMPERATURE_MODULE = "scft_temperature"  # name of the learnable tau on the embedder while the stage trains


@dataclass
class SCFTConfig(StageConfig):
    """Paper (LLMEmb's public scripts): LoRA r 8 / alpha 32 / dropout 0.1 on all projections, lr 2e-4, batch 64
    per GPU on 4 GPUs (here 64 x 4 accumulation: the in-batch negatives stay 64, as in their per-GPU loss),
    4,000 steps, no warm-up, attribute drop ratio 0.4."""

    steps: int = 4000
    batch_size: int = 64
    grad_accum: int = 4
    lr: float = 2e-4
    warmup_ratio: float = 0.0
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    drop_ratio: float = 0.4  # share of an item's attributes dropped in each view
    temperature: float = 0.07  # initial tau (fixed tau when learn_temperature is False)
    learn_temperature: bool = True
    min_temperature: float = 0.01
    normalize: bool = True  # cosine similarities (False: raw dot products, as LLMEmb's code)
    detach_targets: bool = False
    domain: str = "movie"  # the <domain> of the prompt
    fields: str = ""  # comma-separated item feature columns, in prompt order; "" = all, in file order
    attention: str = "causal"
    pooling: str = "mean"
    max_length: int = 0  # tokens per text; 0 keeps the embedder's own setting

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # measured on SmolLM2-135M, fp32, LoRA r8, ml-100k sentences (~31 tokens): batch 8 (16 rows) ~3 s per step
        # on ONE thread while another job held the second core (2 threads on a shared core were 15x slower:
        # OpenMP oversubscription; use torch.set_num_threads / OMP_NUM_THREADS=1 when sharing). Batch 16 on an
        # idle 2-core CPU: ~3 s per step estimated from that, 120 steps ~ 6 min (not measured idle)
        "cpu-small": {"steps": 120, "batch_size": 16, "grad_accum": 1, "lr": 5e-4, "warmup_ratio": 0.05,
                      "save_every": 40, "log_every": 10},
        # batch 8: ~1.5-3 s per step; 60 steps ~ 1.5-3 min
        "demo": {"steps": 60, "batch_size": 8, "grad_accum": 1, "lr": 5e-4, "warmup_ratio": 0.05, "save_every": 20,
                 "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            ("drop_ratio", 0 <= self.drop_ratio < 1, "in [0, 1)"),
            ("temperature", self.temperature > 0, "> 0"),
            ("min_temperature", 0 < self.min_temperature <= self.temperature, "> 0 and <= temperature"),
            ("domain", isinstance(self.domain, str) and self.domain.strip() != "", "a non-empty string"),
            ("attention", self.attention in ATTENTIONS, f"one of {ATTENTIONS}"),
            ("pooling", self.pooling in POOLINGS, f"one of {POOLINGS}"),
            ("max_length", isinstance(self.max_length, int) and (self.max_length == 0 or self.max_length >= 2),
             "0 or an int >= 2"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"SCFTConfig.{name} must be {rule}, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError("SCFTConfig.batch_size must be >= 2 (in-batch negatives)")

    def field_list(self) -> list[str] | None:
        names = [f.strip() for f in self.fields.split(",") if f.strip()]
        return names or None


def augment_attributes(pairs: Sequence[tuple[str, str]], drop_ratio: float,
                       rng: np.random.Generator) -> list[tuple[str, str]]:
    """A shuffled copy of `pairs` with round(drop_ratio x n) attributes dropped, at least one kept."""
    n = len(pairs)
    if n == 0:
        return []
    drop = min(n - 1, int(math.floor(drop_ratio * n + 0.5)))
    order = rng.permutation(n)[: n - drop]
    return [pairs[i] for i in order]


def soft_contrastive_loss(x: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float, normalize: bool = True,
                          detach_targets: bool = False) -> torch.Tensor:
    """Symmetric soft-target contrastive loss of two views [B, D] (row i of x and y are a positive pair).

    logits = x y^T / tau, targets = softmax(((x x^T + y y^T) / 2) / tau) per row,
    loss = (CE(logits, targets) + CE(logits^T, targets^T)) / 2 with soft-target cross-entropy.
    """
    x, y = x.float(), y.float()
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = x @ y.T / temperature
    targets = F.softmax((x @ x.T + y @ y.T) / 2 / temperature, dim=-1)
    if detach_targets:
        targets = targets.detach()
    loss_x = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    loss_y = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(-1).mean()
    return (loss_x + loss_y) / 2


class LearnableTemperature(nn.Module):
    """tau = exp(log_tau), clamped below at `minimum` (the gradient stops there, as CLIP's clamp)."""

    def __init__(self, initial: float, minimum: float) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(initial), dtype=torch.float32))
        self.minimum = float(minimum)

    def forward(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(min=self.minimum)


def attribute_samples(data: SequenceData, fields: Sequence[str] | None) -> list[list[tuple[str, str]]]:
    """The attribute lists of all items that have at least one, without duplicates (a duplicate in a batch would
    be a false negative)."""
    seen: dict[tuple[tuple[str, str], ...], None] = {}
    for pairs in item_attributes(data, fields)[1:]:
        if pairs:
            seen.setdefault(tuple(pairs), None)
    return [list(p) for p in seen]


class SCFTStage:
    name = "scft"

    def __init__(self, config: SCFTConfig | None = None) -> None:
        self.config = config or SCFTConfig()
        self.samples: list[list[tuple[str, str]]] = []
        self.sizes: list[int] = []
        self.learned_temperature = self.config.temperature

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        cfg = self.config
        try:
            self.samples = attribute_samples(data, cfg.field_list())
        except ValueError as exc:
            raise StageError(str(exc)) from None
        if len(self.samples) < 2:
            raise StageError(f"dataset {data.name!r} has fewer than 2 items with distinct attributes")
        embedder.config.attention = cfg.attention
        embedder.config.pooling = cfg.pooling
        if cfg.max_length:
            embedder.config.max_length = cfg.max_length
        full = [format_attributes(cfg.domain, pairs) for pairs in self.samples]
        self.sizes = [len(row) for row in embedder.token_ids(full)]
        self.token_ids = embedder.token_ids
        self.collate_fn = embedder.collate
        if cfg.learn_temperature:
            temperature = LearnableTemperature(cfg.temperature, cfg.min_temperature).to(embedder.device)
            setattr(embedder, TEMPERATURE_MODULE, temperature)

    def lengths(self) -> list[int]:
        return self.sizes

    def views(self, indices: np.ndarray, seed: list[int]) -> tuple[list[str], list[str]]:
        """The two augmented texts of every item of a batch."""
        rng = np.random.default_rng(seed)
        cfg = self.config
        x, y = [], []
        for i in indices:
            x.append(format_attributes(cfg.domain, augment_attributes(self.samples[i], cfg.drop_ratio, rng)))
            y.append(format_attributes(cfg.domain, augment_attributes(self.samples[i], cfg.drop_ratio, rng)))
        return x, y

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        x, y = self.views(indices, seed)
        return self.collate_fn(self.token_ids(x + y))

    def temperature(self, embedder: ItemEmbedder) -> torch.Tensor | float:
        module = getattr(embedder, TEMPERATURE_MODULE, None)
        return module() if module is not None else self.config.temperature

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = embedder(batch["input_ids"], batch["attention_mask"])
        x, y = vectors.chunk(2)
        return soft_contrastive_loss(x, y, self.temperature(embedder), self.config.normalize,
                                     self.config.detach_targets)

    def finish(self, embedder: ItemEmbedder) -> None:
        """Record the learned tau and take it off the embedder (it is not part of the saved model)."""
        module = getattr(embedder, TEMPERATURE_MODULE, None)
        if module is not None:
            with torch.no_grad():
                self.learned_temperature = float(module())
            delattr(embedder, TEMPERATURE_MODULE)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {"temperature": self.learned_temperature, "initial_temperature": cfg.temperature,
                "learned_temperature": cfg.learn_temperature, "text": f"attributes:{cfg.domain}",
                "fields": cfg.field_list(), "attention": cfg.attention, "pooling": cfg.pooling,
                "mean_tokens": round(float(np.mean(self.sizes)), 2) if self.sizes else 0}
