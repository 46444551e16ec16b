"""One deliberate EOS (and a pad token) shared by the model config and the tokenizer.

Why: the SmolLM2 tokenizer that transformers rebuilds from the GGUF names
`<|im_start|>` (id 1, also its BOS) as eos_token, while the model's config says
eos_token_id = 2 (`<|im_end|>`, the token the instruct model ends turns with).
CSFT trains "next title + EOS" and "eos" pooling reads the state at EOS, so both
must use the token the model was trained to end with. The model config's
eos_token_id wins (the first one if it is a list, as for Llama-3), the
tokenizer's eos_token is the fallback, and the tokenizer is then made to agree.

Decoders ship without a pad token; padding is always masked out (attention and
pooling), so the pad id only needs to be a valid id: the EOS is used.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("llmrec.embedder")


def choose_eos_id(model_config: Any, tokenizer: Any) -> int:
    """The EOS id to use: `model_config.eos_token_id` (first if a list), else the tokenizer's eos_token_id."""
    eos = getattr(model_config, "eos_token_id", None)
    if isinstance(eos, list | tuple):
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("neither the model config nor the tokenizer defines an EOS token; set config.eos_token_id")
    return int(eos)


def align_special_tokens(tokenizer: Any, model_config: Any) -> int:
    """Make `tokenizer.eos_token` the chosen EOS, set pad = EOS when missing; returns the EOS id.

    Also records the pad id in `model_config.pad_token_id` when it has none, so a
    saved checkpoint's config and tokenizer agree.
    """
    eos_id = choose_eos_id(model_config, tokenizer)
    if not 0 <= eos_id < len(tokenizer):
        raise ValueError(f"EOS id {eos_id} is outside the tokenizer's vocabulary ({len(tokenizer)} tokens)")
    eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.eos_token_id != eos_id:
        logger.info("eos_aligned", extra={"tokenizer_eos": tokenizer.eos_token,
                                          "tokenizer_eos_id": tokenizer.eos_token_id, "eos": eos_token,
                                          "eos_id": eos_id})
        tokenizer.eos_token = eos_token
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = eos_token
    if getattr(model_config, "pad_token_id", None) is None:
        model_config.pad_token_id = tokenizer.pad_token_id
    return eos_id
