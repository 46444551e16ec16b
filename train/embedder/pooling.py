"""Pooling of per-token hidden states into one item vector.

All methods read only the attention mask, never the padding side, so a batch
padded on the left or on the right pools to the same vectors; this is what lets
the same pooling run inside an exported ONNX graph whatever the client's padding.

- "mean": average over valid tokens (LLM2Rec, LLMEmb); with `skip_first`, the first valid token (the BOS a
  tokenizer such as Llama's adds) is left out, as LLM2Vec's embed_mask and LLMEmb do: the average is over
  the text's own tokens. The first valid position is read from the mask, so an exported graph needs no ids.
- "last": the state of the last valid token, the natural summary of a causal LM.
- "eos": the state at the EOS token that `ItemEmbedder.tokenize` appends to every
  text when pooling is "eos" (after truncation, so it is always there). It is
  therefore the last valid position; pass `input_ids` and `eos_token_id` to have
  that checked instead of assumed.
"""

from __future__ import annotations

import torch

from .config import POOLINGS


def last_valid_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid token of each row [B] (0 for an all-padding row), left or right padding."""
    length = attention_mask.shape[-1]
    positions = torch.arange(1, length + 1, device=attention_mask.device)
    return ((attention_mask != 0).long() * positions).argmax(dim=-1)


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    method: str,
    input_ids: torch.Tensor | None = None,
    eos_token_id: int | None = None,
    skip_first: bool = False,
) -> torch.Tensor:
    """Pool `hidden` [B, L, D] under `attention_mask` [B, L] (1 = token, 0 = padding) into float32 [B, D].

    Float32 whatever the model dtype: the sums of bf16 states lose digits, and the
    vectors go on to losses and indexes that expect float32.
    """
    if method not in POOLINGS:
        raise ValueError(f"pooling method must be one of {POOLINGS}, got {method!r}")
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden [B, L, D] and attention_mask [B, L], got {tuple(hidden.shape)} and "
            f"{tuple(attention_mask.shape)}"
        )
    hidden = hidden.float()
    if method == "mean":
        valid = attention_mask != 0
        if skip_first:  # the first valid position of each row (left or right padding) is the BOS
            first = valid.long().argmax(dim=-1, keepdim=True)
            valid = valid & (torch.arange(valid.shape[-1], device=valid.device).unsqueeze(0) != first)
        weights = valid.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    index = last_valid_index(attention_mask)
    if method == "eos" and input_ids is not None and eos_token_id is not None:
        found = input_ids.gather(1, index[:, None]).squeeze(1)
        if not bool((found == eos_token_id).all()):
            raise ValueError(
                f"eos pooling: the last valid token is not EOS ({eos_token_id}) in every row; "
                "texts must be tokenized with EOS appended (ItemEmbedder.tokenize does this when pooling='eos')"
            )
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
