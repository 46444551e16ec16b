"""Training hyper-parameters shared by every embedder stage, and profile handling.

Each stage subclasses `StageConfig` with the paper's defaults as field defaults
and declares `PROFILES`: "paper" (the defaults), "cpu-small" (a real but small
run on a 2-core CPU with SmolLM2-135M, <= 45 min for the three LLM2Rec stages)
and "demo" (<= 10 min for all three). The batch a step trains on is
`batch_size * grad_accum * processes` (the effective batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from llmrec.itemtext import DEFAULT_KIND, ItemText

from ..data.text import recipe_texts

PROFILE_NAMES = ("paper", "cpu-small", "demo")


@dataclass
class StageConfig:
    steps: int = 1000  # optimizer steps; 0 = one pass over the samples
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1  # linear warm-up over this share of the steps, then linear decay to 0
    max_grad_norm: float = 1.0  # 0 disables clipping
    lora: bool = False  # False: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 42
    log_every: int = 10
    save_every: int = 100  # checkpoint every N steps (and at the end / on stop)
    bucket_batches: int = 16  # batches per length-sorted bucket (see sampling.py)

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu-small": {}, "demo": {}}

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "lora_r", "lora_alpha", "log_every", "save_every", "bucket_batches")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be an int > 0, got {value!r}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"{type(self).__name__}.steps must be an int >= 0, got {self.steps!r}")
        checks = [
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{type(self).__name__}.{name} must be {rule}, got {getattr(self, name)!r}")

    @classmethod
    def profile(cls, name: str = "paper", **overrides: Any) -> StageConfig:
        """The named profile with `overrides` (None values ignored) applied on top."""
        if name not in cls.PROFILES:
            raise ValueError(f"unknown profile {name!r}; one of {sorted(cls.PROFILES)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}")
        values = {**cls.PROFILES[name], **{k: v for k, v in overrides.items() if v is not None}}
        return replace(cls(), **values)

    def effective_batch(self, processes: int = 1) -> int:
        return self.batch_size * self.grad_accum * processes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}")
        return cls(**d)


@dataclass
class TextStageConfig(StageConfig):
    """A stage that reads items as text: through the item-text recipe (llmrec/itemtext.py) extraction and
    serving use, so an item is read in training as it is embedded afterwards."""

    item_text: str = DEFAULT_KIND
    domain: str = "movie"

    def __post_init__(self) -> None:
        super().__post_init__()
        ItemText(self.item_text, self.domain)  # validates both

    def item_texts(self, data: Any) -> list[str]:
        """Every item's text under this recipe (row 0 empty)."""
        return recipe_texts(data, ItemText(self.item_text, self.domain))
