"""SASRec (Kang & McAuley, 2018): causal self-attention over the item history, in three block styles.

  pre-ln    this project's: input LayerNorm, pre-norm blocks (LayerNorm before attention and the GELU
            feed-forward, residuals around both), a final LayerNorm; positions start near zero (std 0.02).
  post-ln   RecBole's TransformerEncoder, LLM2Rec's downstream SASRec (seqrec/modules.py TransformerEncoder_v2):
            items + positions, dropout, then per block LayerNorm(x + dropout(attention)) and
            LayerNorm(h + dropout(FFN(h))), GELU, no final norm; torch's default initialisation.
  original  Kang & McAuley's code, LLMEmb's SASRec (models/SASRec.py): items x sqrt(hidden) + positions
            (1..L over the valid items), dropout; per block Q = LayerNorm(x), x = Q + attention(Q, x, x),
            x = LayerNorm(x), x = x + FFN(x) (ReLU, dropout inside); a final LayerNorm; xavier_normal weights.
            The causal mask is kept: LLMEmb's public code had it commented out, so each training position could
            see its own target; tests/train/srs check that no position sees a later item.

Written with explicit matmuls rather than fused attention so the same module exports to ONNX unchanged.
Positions are counted over valid items only, so a history gives the same representation under left padding,
right padding or any amount of padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .dropout import FastDropout

NEG_INF = -1e9
STYLES = ("pre-ln", "post-ln", "original")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Queries from `x`, keys and values from `keys` (default `x`)."""
        b, length, d = x.shape
        if keys is None:
            q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        else:  # rows of qkv: the query projection, then the key and value projections
            weight, bias = self.qkv.weight, self.qkv.bias
            q = nn.functional.linear(x, weight[:d], bias[:d]).view(b, length, self.num_heads, self.head_dim)
            q = q.transpose(1, 2)
            kv = nn.functional.linear(keys, weight[d:], bias[d:])
            k, v = kv.view(b, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed.unsqueeze(1), NEG_INF)
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int, dropout: float, style: str,
                 activation: str, eps: float) -> None:
        super().__init__()
        self.style = style
        self.ln_attn = nn.LayerNorm(hidden_size, eps=eps)
        self.attn = CausalSelfAttention(hidden_size, num_heads, dropout)
        self.ln_ffn = nn.LayerNorm(hidden_size, eps=eps)
        inner = [nn.Linear(hidden_size, ffn_size), ACTIVATIONS[activation]()]
        if style == "original":  # Kang's PointWiseFeedForward: conv1, dropout, ReLU, conv2, dropout
            inner = [inner[0], FastDropout(dropout), inner[1]]
        elif style == "pre-ln":
            inner = [*inner, FastDropout(dropout)]
        self.ffn = nn.Sequential(*inner, nn.Linear(ffn_size, hidden_size))
        self.dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.style == "pre-ln":
            x = x + self.dropout(self.attn(self.ln_attn(x), allowed))
            x = x + self.dropout(self.ffn(self.ln_ffn(x)))
        elif self.style == "post-ln":
            x = self.ln_attn(x + self.dropout(self.attn(x, allowed)))
            x = self.ln_ffn(x + self.dropout(self.ffn(x)))
        else:
            q = self.ln_attn(x)
            x = self.ln_ffn(q + self.attn(q, allowed, keys=x))
            x = x + self.dropout(self.ffn(x))
        return x * valid


class SASRec(nn.Module):
    def __init__(self, hidden_size: int, max_len: int, num_layers: int, num_heads: int, ffn_size: int,
                 dropout: float, style: str = "pre-ln", activation: str = "gelu", eps: float = 1e-5) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"SASRec style must be one of {STYLES}, got {style!r}")
        self.style = style
        self.max_len = max_len
        self.input_scale = math.sqrt(hidden_size) if style == "original" else 1.0
        # "original" numbers valid positions from 1 (0 is padding there)
        self.positions = nn.Embedding(max_len + (style == "original"), hidden_size)
        if style == "pre-ln":  # same scale as the item vectors: at std 1 positions drown the items after the norm
            nn.init.normal_(self.positions.weight, std=0.02)
        self.input_ln = nn.LayerNorm(hidden_size, eps=eps) if style == "pre-ln" else nn.Identity()
        self.dropout = FastDropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads, ffn_size, dropout, style, activation, eps)
                                    for _ in range(num_layers))
        self.final_ln = nn.Identity() if style == "post-ln" else nn.LayerNorm(hidden_size, eps=eps)
        if style == "original":
            for param in self.parameters():
                if param.dim() >= 2:
                    nn.init.xavier_normal_(param)

    def sequence_output(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position [B, L, D]; position t only sees items <= t."""
        length = item_vectors.shape[1]
        mask = mask.to(torch.bool)
        valid = mask.unsqueeze(-1).to(item_vectors.dtype)
        # position of each valid item among the valid items (0 = oldest in the window; 1 for "original")
        first = int(self.style == "original")
        pos = (torch.cumsum(mask.to(torch.long), dim=1) - 1 + first).clamp(min=0, max=self.max_len - 1 + first)
        x = item_vectors * self.input_scale + self.positions(pos)
        x = self.dropout(self.input_ln(x)) * valid
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
