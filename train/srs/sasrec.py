"""SASRec (Kang & McAuley, 2018): causal self-attention over the item history.

Written with explicit matmuls rather than fused attention so the same module
exports to ONNX unchanged. Positions are counted over valid items only, so a
history gives the same representation under left padding, right padding or any
amount of padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .dropout import FastDropout

NEG_INF = -1e9


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed.unsqueeze(1), NEG_INF)
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    """Pre-norm transformer block, as in the original SASRec implementation."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(hidden_size)
        self.attn = CausalSelfAttention(hidden_size, num_heads, dropout)
        self.ln_ffn = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, ffn_size), nn.GELU(), FastDropout(dropout), nn.Linear(ffn_size, hidden_size)
        )
        self.dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_attn(x), allowed))
        x = x + self.dropout(self.ffn(self.ln_ffn(x)))
        return x * valid


class SASRec(nn.Module):
    def __init__(
        self, hidden_size: int, max_len: int, num_layers: int, num_heads: int, ffn_size: int, dropout: float
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, hidden_size)
        # same scale as the item vectors: at torch's default (std 1) positions drown the items after the input norm
        nn.init.normal_(self.positions.weight, std=0.02)
        self.input_ln = nn.LayerNorm(hidden_size)
        self.dropout = FastDropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads, ffn_size, dropout) for _ in range(num_layers))
        self.final_ln = nn.LayerNorm(hidden_size)

    def sequence_output(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position [B, L, D]; position t only sees items <= t."""
        length = item_vectors.shape[1]
        mask = mask.to(torch.bool)
        valid = mask.unsqueeze(-1).to(item_vectors.dtype)
        # position of each valid item among the valid items (0 = oldest in the window)
        pos = (torch.cumsum(mask.to(torch.long), dim=1) - 1).clamp(min=0, max=self.max_len - 1)
        x = self.dropout(self.input_ln(item_vectors + self.positions(pos))) * valid
        causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        # padded queries attend to themselves only, which keeps softmax finite without affecting valid rows
        eye = torch.eye(length, dtype=torch.bool, device=mask.device)
        allowed = (causal.unsqueeze(0) & mask.unsqueeze(1)) | eye.unsqueeze(0)
        for block in self.blocks:
            x = block(x, allowed, valid)
        return self.final_ln(x) * valid

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User representation [B, D]: the state at the most recent valid item."""
        out = self.sequence_output(item_vectors, mask)
        return gather_last(out, mask)


def gather_last(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State at the last valid position of each row, whatever the padding side."""
    length = mask.shape[1]
    idx = torch.arange(length, device=mask.device).unsqueeze(0).expand_as(mask)
    last = torch.where(mask.to(torch.bool), idx, torch.zeros_like(idx)).amax(dim=1)
    return states[torch.arange(states.shape[0], device=states.device), last]
