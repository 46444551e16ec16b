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


def soft_contrastive_loss(x: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float, normalize: bool = False,
                          detach_targets: bool = False, targets_times_tau: bool = True) -> torch.Tensor:
    """LLMEmb's symmetric soft-target contrastive loss of two views [B, D] (row i of x and y are a pair): its SCFT
    loss (llm/llama.py) and its RAT alignment (models/utils.py Contrastive_Loss2).

    logits = x y^T / tau, targets = softmax(((x x^T + y y^T) / 2) * tau) per row (/ tau unless
    `targets_times_tau`), loss = (CE(logits, targets) + CE(logits^T, targets^T)) / 2 with soft-target
    cross-entropy; `normalize` compares cosines.
    """
    x, y = x.float(), y.float()
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = x @ y.T / temperature
    similarity = (x @ x.T + y @ y.T) / 2
    targets = F.softmax(similarity * temperature if targets_times_tau else similarity / temperature, dim=-1)
    if detach_targets:
        targets = targets.detach()
    loss_x = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    loss_y = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(-1).mean()
    return (loss_x + loss_y) / 2
