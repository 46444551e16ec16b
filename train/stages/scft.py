"""LLMEmb stage 1, supervised contrastive fine-tuning (SCFT) on attribute sentences.

As LLMEmb's `main_llm.py`, `llm/llama.py` and `llm/data_processor/llama.py` with its
`experiments/*/scft/avg.bash` do:
Item text (`llmrec.itemtext.attribute_sentence`, its item_prompt notebooks):
  "The <domain> item has the following attributes: \\n key is value; key is value"
Attribute-level augmentation: every sample is one item's (key, value) list; each of the two
views is an independently shuffled copy with floor(`drop_ratio` x n) (40%) of the attributes
dropped (`augment_attributes`). The views are drawn once per item (`fixed_views`, as the
reference draws them in `dataset.map` before training), seeded by the item, so resumable.
Row i of view X and row i of view Y are a positive pair, the other rows of the batch negatives.

Loss (`soft_contrastive_loss`, CLIP-like with soft targets, symmetric):
  X, Y     mean-pooled last hidden states of the two views [B, D] (raw; `normalize` L2-normalises)
  logits   X Y^T / tau
  targets  softmax(((X X^T + Y Y^T) / 2) * tau, rows)   (`targets_times_tau`; else / tau)
  loss     (CE(logits, targets) + CE(logits^T, targets^T)) / 2, CE with soft targets
tau is learnable: a log-parameterised scalar trained with the LoRA weights (no weight decay),
initialised at `temperature` (3, the reference's nn.Parameter) and clamped below at
`min_temperature` (0: no clamp, as there); the learned value goes to stage.json ("temperature").

Attention, tokens and pooling: LLMEmb fine-tunes and embeds with the causal LLM, no BOS, EOS
appended, mean pooling over the text and EOS; this stage sets the embedder to
`attention="causal"`, `pooling="mean"`, `append_eos=True` (mean pooling leaves a BOS out: see
train/embedder/pooling.py) and keeps them in the saved embedder, so `python -m train.embed
--text attributes --domain <domain>` embeds items exactly as they were trained. LoRA r 8,
alpha 32, dropout 0.1 on all attention and MLP projections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..data.dataset import SequenceData
from ..data.text import format_attributes, item_attributes
from ..embedder import ATTENTIONS, POOLINGS, ItemEmbedder
from ..srs.losses import soft_contrastive_loss
from .common import StageError
from .config import StageConfig

TEMPERATURE_MODULE = "scft_temperature"  # name of the learnable tau on the embedder while the stage trains


@dataclass
class SCFTConfig(StageConfig):
    """LLMEmb (scft/avg.bash, llm/ds.config): LoRA r 8 / alpha 32 / dropout 0.1 on all projections, lr 2e-4, batch
    64 per GPU on 4 GPUs (here 64 x 4 accumulation: the in-batch negatives stay 64, as in their per-GPU loss),
    4,000 steps, no warm-up, linear decay, weight decay 0, attribute drop ratio 0.4, cutoff 1,024 tokens."""

    steps: int = 4000
    batch_size: int = 64
    grad_accum: int = 4
    lr: float = 2e-4
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    drop_ratio: float = 0.4  # share of an item's attributes dropped in each view
    fixed_views: bool = True  # the two views of an item are drawn once (True) or anew in every batch
    temperature: float = 3.0  # initial tau (fixed tau when learn_temperature is False)
    learn_temperature: bool = True
    min_temperature: float = 0.0  # clamp of a learned tau (0: none)
    normalize: bool = False  # raw dot products (True: cosine similarities)
    targets_times_tau: bool = True  # soft targets softmax(sim * tau) as the reference; False: softmax(sim / tau)
    detach_targets: bool = False
    domain: str = "movie"  # the <domain> of the prompt
    fields: str = ""  # comma-separated item feature columns, in prompt order; "" = all, in file order
    attention: str = "causal"
    pooling: str = "mean"
    append_eos: bool = True
    max_length: int = 1024  # tokens per text, EOS included (max_source_length); 0 keeps the embedder's own

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # raw SmolLM2 states have norms in the tens: with tau 3 and raw dot products the logits saturate, so the
        # project's recipe compares cosines at CLIP's initial tau (0.07) with / tau targets and a clamp at 0.01
        "project": {"temperature": 0.07, "min_temperature": 0.01, "normalize": True, "targets_times_tau": False},
    }
    BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        # SmolLM2-135M, fp32, LoRA r8, ml-100k sentences (~31 tokens): batch 8 (16 rows) ~3 s per step on one thread
        "cpu-small": {"steps": 120, "batch_size": 16, "grad_accum": 1, "save_every": 40, "log_every": 10},
        "demo": {"steps": 30, "batch_size": 8, "grad_accum": 1, "save_every": 15, "log_every": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            ("drop_ratio", 0 <= self.drop_ratio < 1, "in [0, 1)"),
            ("temperature", self.temperature > 0, "> 0"),
            ("min_temperature", 0 <= self.min_temperature <= self.temperature, ">= 0 and <= temperature"),
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
    """A shuffled copy of `pairs` with floor(drop_ratio x n) attributes dropped (the reference's int(n x ratio))."""
    n = len(pairs)
    if n == 0:
        return []
    order = rng.permutation(n)[: n - int(math.floor(drop_ratio * n))]
    return [pairs[i] for i in order]


class LearnableTemperature(nn.Module):
    """tau = exp(log_tau), clamped below at `minimum` (the gradient stops there, as CLIP's clamp; 0: no clamp)."""

    def __init__(self, initial: float, minimum: float) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(initial), dtype=torch.float32))
        self.minimum = float(minimum)

    def forward(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(min=self.minimum)


def attribute_samples(data: SequenceData, fields: Sequence[str] | None) -> list[list[tuple[str, str]]]:
    """The attribute list of every item that has at least one (one sample per item, as the reference's
    item_str.jsonline)."""
    return [pairs for pairs in item_attributes(data, fields)[1:] if pairs]


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
        embedder.config.append_eos = cfg.append_eos
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
        """The two augmented texts of every item of a batch: drawn from the item alone with `fixed_views`, else
        from the batch's seed."""
        cfg = self.config
        batch_rng = np.random.default_rng(seed)
        x, y = [], []
        for i in indices:
            rng = np.random.default_rng([cfg.seed, int(i)]) if cfg.fixed_views else batch_rng
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
                                     self.config.detach_targets, self.config.targets_times_tau)

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
