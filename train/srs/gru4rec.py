"""GRU4Rec (Hidasi et al., 2016) as a next-item sequence encoder."""

from __future__ import annotations

import torch
from torch import nn

from .dropout import FastDropout
from .sasrec import gather_last


def right_align(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move valid steps to the front, keeping their order.

    A recurrent network reads padding as input; aligning every history to the
    left edge makes left- and right-padded batches produce the same states.
    """
    order = torch.argsort((~mask.to(torch.bool)).to(torch.int64), dim=1, stable=True)
    x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    return x, torch.gather(mask.to(torch.bool), 1, order)


class GRU4Rec(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.input_dropout = FastDropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, aligned_mask = right_align(item_vectors, mask)
        states, _ = self.gru(self.input_dropout(x))
        return self.dense(gather_last(states, aligned_mask))
