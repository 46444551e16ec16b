"""LoRA adapters on the base LLM (via peft), and the merged weights for checkpoints.

Why keep adapters separate from full fine-tuning: LLMEmb trains LoRA, LLM2Rec
full weights; with LoRA a stage checkpoint can be a few MB adapter on a shared
base, while export wants one plain merged model. `merged_state_dict` produces
the merged weights without merging the live model, so a training run can
write a deployable checkpoint and keep training its adapters.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .config import LoraSettings

logger = logging.getLogger("llmrec.embedder")


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Leaf names (e.g. "q_proj") of the model's Linear layers: what LoRA can target."""
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def lora_targets(model: torch.nn.Module, settings: LoraSettings) -> list[str]:
    """The configured targets the model has; an error when none are present (wrong architecture names)."""
    present = linear_module_names(model)
    targets = [t for t in settings.target_modules if t in present]
    missing = [t for t in settings.target_modules if t not in present]
    if not targets:
        raise ValueError(
            f"none of EmbedderConfig.lora.target_modules {settings.target_modules} is a Linear layer of this model; "
            f"available: {sorted(present)}"
        )
    if missing:
        logger.info("lora_targets_missing", extra={"missing": missing, "used": targets})
    return targets


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> Any:
    """Wrap a HF causal LM in a peft LoRA model (base weights frozen, adapters trainable)."""
    from peft import LoraConfig, TaskType, get_peft_model

    peft_config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_targets(model, settings),
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, peft_config)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@torch.no_grad()
def merged_state_dict(peft_model: Any) -> dict[str, torch.Tensor]:
    """State dict of the underlying HF model with the active adapters merged in, under the plain HF key names.

    Plain LoRA layers are merged out of place (base weight + B @ A * scaling,
    peft's own `get_delta_weight`), so the live model is untouched bit for bit
    and only the adapted weights are copied. Other variants (DoRA, LoRA bias)
    fall back to peft's in-place merge followed by an unmerge, which can leave
    ~1e-6 rounding in the live weights.
    """
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    state = {
        key.replace(".base_layer.", "."): value.detach()
        for key, value in base.state_dict().items()
        if not any(part.startswith("lora_") for part in key.split("."))
    }
    for prefix, module in base.named_modules():
        if not isinstance(module, LoraLayer) or module.merged:
            continue
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                if adapter in getattr(module, "lora_embedding_A", {}):
                    return _merged_in_place(peft_model)
                continue
            if adapter in getattr(module, "lora_variant", {}) or getattr(module, "lora_bias", {}).get(adapter):
                return _merged_in_place(peft_model)
            key = f"{prefix}.weight"
            state[key] = state[key] + module.get_delta_weight(adapter).to(state[key].dtype)
    return state


def _merged_in_place(peft_model: Any) -> dict[str, torch.Tensor]:
    lora_model = peft_model.base_model
    lora_model.merge_adapter()
    try:
        return {
            key.replace(".base_layer.", "."): value.detach().clone()
            for key, value in peft_model.get_base_model().state_dict().items()
            if not any(part.startswith("lora_") for part in key.split("."))
        }
    finally:
        lora_model.unmerge_adapter()
