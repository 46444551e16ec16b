"""Attention masks and position ids that switch a decoder LLM between causal and bidirectional attention.

Why a 4D mask: in transformers 4.57 the Llama, Qwen2 and Mistral models pass an
attention mask that is already 4D straight through (`masking_utils` returns it
as is) instead of building their causal mask. An additive float mask
[B, 1, L, L] with 0 on valid keys and `finfo(dtype).min` on padded keys, and no
causal triangle, therefore makes every position attend to every valid token
(LLM2Vec / LLM2Rec's bidirectional conversion) without patching model code.
It is checked with `attn_implementation="eager"`, which adds the mask to the
attention scores exactly as given; the models are loaded that way. (With a
4D mask, Mistral-style sliding windows are not applied either: irrelevant for
item texts far shorter than any window.)

Why explicit position ids: the models default to positions 0..L-1 for every
row, which shifts a left-padded text's rotary positions by its padding. Passing
`cumsum(mask) - 1` (clipped at 0) always gives each text the positions it has
unpadded, so left and right padding give the same states for valid tokens.
"""

from __future__ import annotations

import torch

from .config import ATTENTIONS


def attention_mask_4d(attention_mask_2d: torch.Tensor, dtype: torch.dtype, mode: str) -> torch.Tensor:
    """The mask to pass as `attention_mask` for `mode`.

    "causal": the 2D padding mask unchanged; transformers builds causal + padding itself.
    "bidirectional": additive float mask [B, 1, L, L] of `dtype` (use the model's dtype):
      0 where the key is a valid token, `torch.finfo(dtype).min` where it is padding, same for every query.
    """
    if mode not in ATTENTIONS:
        raise ValueError(f"attention mode must be one of {ATTENTIONS}, got {mode!r}")
    if attention_mask_2d.ndim != 2:
        raise ValueError(f"attention_mask_2d must be [batch, length], got shape {tuple(attention_mask_2d.shape)}")
    if mode == "causal":
        return attention_mask_2d
    batch, length = attention_mask_2d.shape
    valid = attention_mask_2d.to(torch.bool)[:, None, None, :]
    device = attention_mask_2d.device
    zero = torch.zeros((), dtype=dtype, device=device)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask = torch.where(valid, zero, blocked)
    return mask.expand(batch, 1, length, length)


def position_ids_from_mask(attention_mask_2d: torch.Tensor) -> torch.Tensor:
    """Positions that count valid tokens only: `cumsum(mask) - 1`, clipped at 0 (padding gets 0)."""
    return (attention_mask_2d.long().cumsum(dim=-1) - 1).clamp(min=0)


def model_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype, mode: str
) -> dict[str, torch.Tensor]:
    """Keyword arguments for a HF decoder call (`attention_mask`, `position_ids`) honouring `mode`."""
    if input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ in shape"
        )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask_4d(attention_mask, dtype, mode),
        "position_ids": position_ids_from_mask(attention_mask),
    }
