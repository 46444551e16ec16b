"""The LLM item embedder: a decoder LLM (SmolLM2 by default, any local Llama/Qwen2/Mistral folder) that reads an
item's text and returns a vector, with bidirectional or causal attention, mean/last/EOS pooling and optional LoRA.

The LLM2Rec and LLMEmb training stages build on `ItemEmbedder` (`forward` for contrastive losses,
`forward_logits` for CSFT and MNTP); export reads its checkpoints (`ItemEmbedder.save` layout).
"""

from .attention import attention_mask_4d, model_inputs, position_ids_from_mask
from .base import (
    SMOLLM2,
    SMOLLM2_INSTALL,
    convert_gguf,
    load_causal_lm,
    load_tokenizer,
    pick_device_dtype,
    resolve_base,
    smollm2_gguf_path,
)
from .config import ATTENTIONS, DEFAULT_LORA_TARGETS, POOLINGS, EmbedderConfig, LoraSettings
from .lora import add_lora, lora_targets, merged_state_dict
from .model import FORMAT, ItemEmbedder
from .pooling import last_valid_index, pool
from .tokens import align_special_tokens, choose_eos_id

__all__ = [
    "ATTENTIONS",
    "DEFAULT_LORA_TARGETS",
    "FORMAT",
    "POOLINGS",
    "SMOLLM2",
    "SMOLLM2_INSTALL",
    "EmbedderConfig",
    "ItemEmbedder",
    "LoraSettings",
    "add_lora",
    "align_special_tokens",
    "attention_mask_4d",
    "choose_eos_id",
    "convert_gguf",
    "last_valid_index",
    "load_causal_lm",
    "load_tokenizer",
    "lora_targets",
    "merged_state_dict",
    "model_inputs",
    "pick_device_dtype",
    "pool",
    "position_ids_from_mask",
    "resolve_base",
    "smollm2_gguf_path",
]
