"""Training hyper-parameters shared by every embedder stage: recipe profiles and step budgets.

Each stage subclasses `StageConfig` with its paper's settings as field defaults (what the authors'
code does, file by file: docs/settings.md) and declares two tables:
  PROFILES  recipes: "paper" (the defaults, nothing changed) and "project" (this project's own choices,
            e.g. the attribute sentence instead of the bare title for LLM2Rec's stages);
  BUDGETS   "full" (the paper's step counts), "cpu-small" (a real but small run on a 2-core CPU with
            SmolLM2-135M) and "demo" (minutes). A budget changes only what BUDGET_KEYS names: step counts
            (steps, warm-up, evaluation interval and size, checkpointing, logging), batch and LoRA; never the
            recipe (text, masking, loss, learning rate).
The batch a step trains on is `batch_size * grad_accum * processes` (the effective batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from llmrec.itemtext import ItemText

from ..data.text import recipe_texts

PROFILE_NAMES = ("paper", "project")
BUDGET_NAMES = ("full", "cpu-small", "demo")
BUDGET_KEYS = frozenset({"steps", "warmup_steps", "batch_size", "grad_accum", "lora", "lora_r", "lora_alpha",
                         "eval_every", "eval_samples", "save_every", "log_every"})


@dataclass
class StageConfig:
    steps: int = 1000  # optimizer steps at most (the reference's max_steps / stop_after_n_steps)
    epochs: float = 0.0  # > 0: the schedule spans this many passes over the samples and training ends there if
    #                      sooner than `steps` (the HF Trainer's num_train_epochs); 0: the schedule spans `steps`
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up over this many steps, then linear decay to 0 (the HF Trainer's default)
    max_grad_norm: float = 1.0  # 0 disables clipping
    lora: bool = False  # False: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 42
    eval_every: int = 0  # evaluate the held-out loss every N steps (0: never)
    eval_samples: int = 0  # held-out samples evaluated (0: all)
    patience: int = 0  # > 0: stop after this many evaluations without a lower held-out loss and keep the best
    log_every: int = 10
    save_every: int = 100  # checkpoint every N steps (and at the end / on stop)
    bucket_batches: int = 1  # 1: random batches (the references); k > 1: length-sorted buckets of k batches

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "project": {}}
    BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {"full": {}, "cpu-small": {}, "demo": {}}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A budget that changes the recipe is a programming error, caught when the class is defined."""
        super().__init_subclass__(**kwargs)
        for budget, values in cls.BUDGETS.items():
            if set(values) - BUDGET_KEYS:
                raise TypeError(f"{cls.__name__}.BUDGETS[{budget!r}] changes {sorted(set(values) - BUDGET_KEYS)}: "
                                f"a budget may change only {sorted(BUDGET_KEYS)}")

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "lora_r", "lora_alpha", "log_every", "save_every", "bucket_batches")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be an int > 0, got {value!r}")
        for name in ("steps", "warmup_steps", "eval_every", "eval_samples", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{type(self).__name__}.{name} must be an int >= 0, got {value!r}")
        checks = [
            ("steps", self.steps > 0 or self.epochs > 0, "> 0 when epochs is 0"),
            ("epochs", self.epochs >= 0, ">= 0"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("patience", self.patience == 0 or self.eval_every > 0, "0 unless eval_every > 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{type(self).__name__}.{name} must be {rule}, got {getattr(self, name)!r}")

    @classmethod
    def profile(cls, name: str = "paper", budget: str = "full", **overrides: Any) -> StageConfig:
        """The named recipe at the named budget, with `overrides` (None values ignored) applied on top."""
        if name not in cls.PROFILES:
            raise ValueError(f"unknown profile {name!r}; one of {list(cls.PROFILES)}")
        if budget not in cls.BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; one of {list(cls.BUDGETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}")
        values = {**cls.PROFILES[name], **cls.BUDGETS[budget], **{k: v for k, v in overrides.items() if v is not None}}
        return replace(cls(), **values)

    def effective_batch(self, processes: int = 1) -> int:
        return self.batch_size * self.grad_accum * processes

    def schedule(self, samples: int, processes: int = 1) -> tuple[int, int]:
        """(optimizer steps of the LR schedule, steps trained): with `epochs`, the schedule spans that many passes
        over `samples` (incomplete batches dropped) and training stops at `steps` if that comes first."""
        if self.epochs <= 0:
            return self.steps, self.steps
        per_epoch = max(1, samples // self.effective_batch(processes))
        total = max(1, int(self.epochs * per_epoch))
        return total, min(total, self.steps) if self.steps else total

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
    serving use, so an item is read in training as it is embedded afterwards. LLM2Rec reads bare titles."""

    item_text: str = "title"
    domain: str = "movie"

    def __post_init__(self) -> None:
        super().__post_init__()
        ItemText(self.item_text, self.domain)  # validates both

    def item_texts(self, data: Any) -> list[str]:
        """Every item's text under this recipe (row 0 empty)."""
        return recipe_texts(data, ItemText(self.item_text, self.domain))
