"""Where an item the recommender never trained on goes: the text -> item-vector map of LLM-initialised IDs.

A ridge regression of the trained ID rows on the text (InitItemEmbedding.fit_cold_map) spends its fit equally on
every direction of the ID space and never sees what a cold item competes against: its vectors are shrunk towards
zero and, without intercept, share no direction. `fit_ranked_cold_map` calibrates that map by the
recommender's own loss, with the trained model frozen: each batch pretends a random share of the warm items is new
(their vectors replaced by the map's output, as DropoutNet drops IDs) and minimises the full-softmax cross-entropy
of the training transitions over the whole catalogue. A pretend-new target teaches the map to place an item where
its users look; every other target teaches it not to let pretend-new items take places from warm ones, the
trade-off a new item's vector has to strike when it is served.

What is fitted: one scale of the ridge map and a shared offset (65 numbers). The offset is a direction every new
item shares, which the ridge map, fitted without intercept, cannot express. It is not the mean of the trained IDs
(an intercept towards that mean ranked cold items worse in the screen): on the make-demo model it is about as long
as a mapped row (.36 against .37) at cosine -0.36 to the ID mean. Fitting more (an offset weighted by the text, a
[D, D] matrix, the whole map) did not rank cold items better on validation (docs/decisions.md).
The result is still one linear layer, so the exported item encoder computes it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from train.data.dataset import SequenceData

from .model import SequentialRecommender

DEFAULT_LR = 1e-3  # Adam's step for one scale and an offset


@torch.no_grad()
def training_states(model: SequentialRecommender, data: SequenceData, table: torch.Tensor, batch_size: int = 512
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen model's user vector before every training target, and that target: [N, D], [N]; `table` is the
    model's item table."""
    model.eval()
    device = table.device
    inputs, targets, _ = data.train.windows(model.config.max_len)
    states, kept = [], []
    for b in range(0, len(inputs), batch_size):
        hist = torch.from_numpy(inputs[b:b + batch_size]).to(device)
        tgt = torch.from_numpy(targets[b:b + batch_size]).to(device)
        has = tgt != 0
        states.append(model.sequence_states(hist, table)[has])
        kept.append(tgt[has])
    return torch.cat(states), torch.cat(kept)


def fit_ranked_cold_map(model: SequentialRecommender, data: SequenceData, epochs: int, pretend: float = 0.4,
                        lr: float = DEFAULT_LR, batch_size: int = 1024, seed: int = 0) -> list[float]:
    """Calibrate the text path of a fusion-init model (holding its ridge map) by ranking, the model frozen: a scale
    of the map and a shared offset. Returns the mean loss of every epoch. Deterministic given `seed`. The defaults
    were chosen on the cold split's validation (docs/decisions.md, the cold-vector screen)."""
    items = model.items
    layer = items.text.adapter.net
    model.eval()
    with torch.no_grad():
        table = model.item_vectors().detach()
        z = (items.text.frozen - items.text.mean) / items.text.std
    states, targets = training_states(model, data, table)
    device = states.device
    warm = items.warm
    seen = torch.zeros_like(warm)
    seen[targets] = True
    unseen = ~seen[1:]  # never a training target: absent from the catalogue when it trained (see full_softmax_ce)
    ridge = layer.weight.detach().clone()
    scale = torch.ones((), device=device, requires_grad=True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([scale, bias], lr=lr, weight_decay=0.0)

    def weight() -> torch.Tensor:
        return scale * ridge

    generator = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        total, batches = 0.0, 0
        for rows in np.array_split(rng.permutation(len(targets)), max(1, len(targets) // batch_size)):
            rows = torch.from_numpy(rows).to(device)
            fake = warm & (torch.rand(warm.shape, generator=generator, device=device) < pretend)
            vectors = torch.where(fake.unsqueeze(-1), z @ weight().T + bias, table)
            logits = (states[rows] @ vectors[1:].T).masked_fill(unseen, float("-inf"))
            loss = F.cross_entropy(logits, targets[rows] - 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        losses.append(round(total / batches, 5))
    with torch.no_grad():
        layer.weight.copy_(weight())
        layer.bias.copy_(bias)
    return losses
