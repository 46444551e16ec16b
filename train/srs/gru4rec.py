"""GRU4Rec (Hidasi et al., 2016) as a next-item sequence encoder."""

from __future__ import annotations

import torch
from torch import nn

from .dropout import FastDropout
from .sasrec import gather_last


def alignment(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the positions of the valid steps in order, then the padding positions.

    A recurrent network reads padding as input; gathering every history to the
    front makes left- and right-padded batches produce the same states. Every sort
    key is distinct (padding is offset by the length), so the order needs no stable
    sort, which ONNX does not have: the exported graph sorts the same way.
    """
    mask = mask.to(torch.bool)
    length = mask.shape[1]
    key = (~mask).to(torch.int64) * length + torch.arange(length, device=mask.device).unsqueeze(0)
    return torch.argsort(key, dim=1)


def gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class GRU4Rec(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.input_dropout = FastDropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.dense = nn.Linear(hidden_size, hidden_size)

    def sequence_output(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """State after every valid item [B, L, D], at that item's own position (zero on padding)."""
        order = alignment(mask)
        states, _ = self.gru(self.input_dropout(gather_steps(item_vectors, order)))
        states = gather_steps(self.dense(states), torch.argsort(order, dim=1))
        return states * mask.unsqueeze(-1).to(states.dtype)

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return gather_last(self.sequence_output(item_vectors, mask), mask)
