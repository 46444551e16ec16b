"""Next-item losses over inner-product scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_softmax_ce(user: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                    unseen: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against every item (padding row 0 excluded from the softmax).

    `unseen` [num_items + 1] bool marks items absent from the training data; they are left out of the
    softmax. Such items (new to the catalogue) would not exist yet when the model is trained; as
    negatives-only they would be pushed below every other item, which a cold-start evaluation must not reward.
    """
    logits = user @ table[1:].T
    if unseen is not None:
        logits = logits.masked_fill(unseen[1:], float("-inf"))
    return F.cross_entropy(logits, targets - 1)


def sample_negatives(targets: torch.Tensor, num_items: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n uniform negatives per row from 1..num_items, never the row's target."""
    neg = torch.randint(1, num_items, (targets.shape[0], n), generator=generator, device=targets.device)
    return neg + (neg >= targets.unsqueeze(1)).to(neg.dtype)


def sampled_bce(
    user: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy: the target against sampled negatives (SASRec's original loss)."""
    pos = (user * table[targets]).sum(-1)
    neg = torch.einsum("bd,bnd->bn", user, table[negatives])
    return F.softplus(-pos).mean() + F.softplus(neg).mean()
