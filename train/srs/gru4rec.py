"""GRU4Rec (Hidasi et al., 2016) as a next-item sequence encoder, in two styles.

  project   biases, dropout between GRU layers, a dense layer on the states;
  llm2rec   LLM2Rec's downstream GRU4Rec (seqrec/models/GRU4Rec/_model.py): no biases, no dense layer, dropout
            on the item vectors only.
"""

from __future__ import annotations

import torch
from torch import nn

from .dropout import FastDropout
from .sasrec import gather_last

STYLES = ("project", "llm2rec")


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
    def __init__(self, hidden_size: int, num_layers: int, dropout: float, style: str = "project") -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"GRU4Rec style must be one of {STYLES}, got {style!r}")
        project = style == "project"
        self.input_dropout = FastDropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True, bias=project,
                          dropout=dropout if num_layers > 1 and project else 0.0)
        self.dense = nn.Linear(hidden_size, hidden_size) if project else nn.Identity()

    def sequence_output(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """State after every valid item [B, L, D], at that item's own position (zero on padding)."""
        order = alignment(mask)
        states, _ = self.gru(self.input_dropout(gather_steps(item_vectors, order)))
        states = gather_steps(self.dense(states), torch.argsort(order, dim=1))
        return states * mask.unsqueeze(-1).to(states.dtype)

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return gather_last(self.sequence_output(item_vectors, mask), mask)
