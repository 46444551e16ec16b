"""Where an item the recommender never trained on goes: the text -> item-vector map of LLM-initialised IDs.

A ridge regression of the trained ID rows on the text (InitItemEmbedding.fit_cold_map) spends its fit equally on
every direction of the ID space and never sees what a cold item competes against: its vectors are shrunk towards
zero and, without intercept, share no direction. `fit_ranked_cold_map` calibrates that map by the
recommender's own loss, with the trained model frozen: each batch pretends a random share of the warm items is new
(their vectors replaced by the map's output, as DropoutNet drops IDs) and minimises the full-softmax cross-entropy
of the training transitions over the whole catalogue. A pretend-new target teaches the map to place an item where
its users look; every other target teaches it not to let pretend-new items take places from warm ones, the
trade-off a new item's vector has to strike when it is served.

What is fitted (`params`), screened on validation in bench/cold_vectors.py:
  - "scale" (the default): one scale of the ridge map and a shared offset (65 numbers). The offset is a
    direction every new item shares, which the ridge map, fitted without intercept, cannot express. It is not the
    mean of the trained IDs (an intercept towards that mean ranked cold items worse in the screen): on the
    make-demo model it is about as long as a mapped row (.36 against .37) at cosine -0.36 to the ID mean;
  - "scale-pop": as "scale", the offset weighted per item by a linear function of its text (how much this item
    will be looked at), a rank-one term on top of the scaled map; its result depends more on the calibration's
    random draws;
  - "affine": a [D, D] matrix after the ridge map and the offset;
  - "full": the whole [D, text dim] map and the offset (memorises the warm items it is fitted on).
The result is still one linear layer, so the exported item encoder computes it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from train.data.dataset import SequenceData

from .config import COLD_MAP_RANKS
from .model import SequentialRecommender

# Adam's step per parameter suits the size of what it moves: one scale and an offset take 1e-3; the text-sized
# weights of "scale-pop" and "full" move every item at once (at 1e-3 in the screen, "full" diverged and
# "scale-pop" lost validation R@10)
DEFAULT_LR = {"scale": 1e-3, "scale-pop": 3e-4, "affine": 1e-3, "full": 3e-5}


@torch.no_grad()
def training_states(model: SequentialRecommender, data: SequenceData, table: torch.Tensor, batch_size: int = 512
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen model's user vector before every training target, and that target: [N, D], [N]; `table` is the
    model's item table."""
    model.eval()
    device = table.device
    inputs, targets = data.train.windows(model.config.max_len)
    states, kept = [], []
    for b in range(0, len(inputs), batch_size):
        hist = torch.from_numpy(inputs[b:b + batch_size]).to(device)
        tgt = torch.from_numpy(targets[b:b + batch_size]).to(device)
        has = tgt != 0
        states.append(model.sequence_states(hist, table)[has])
        kept.append(tgt[has])
    return torch.cat(states), torch.cat(kept)


def fit_ranked_cold_map(model: SequentialRecommender, data: SequenceData, epochs: int, pretend: float = 0.4,
                        lr: float | None = None, batch_size: int = 1024, seed: int = 0, params: str = "scale"
                        ) -> list[float]:
    """Calibrate the text path of a fusion-init model (holding its ridge map) by ranking, the model frozen.
    `lr` defaults to DEFAULT_LR[params]. Returns the mean loss of every epoch. Deterministic given `seed`. The
    defaults were chosen on the cold split's validation (bench/results/cold_vectors.md)."""
    if params not in COLD_MAP_RANKS:
        raise ValueError(f"params must be one of {COLD_MAP_RANKS}, got {params!r}")
    lr = DEFAULT_LR[params] if lr is None else lr
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
    dim = ridge.shape[0]
    inner = ridge.clone().requires_grad_(params == "full")
    outer = (torch.eye(dim, device=device) if params != "scale" else torch.ones((), device=device))
    outer.requires_grad_(params != "full")
    bias = layer.bias.detach().clone().requires_grad_(True)
    # "scale-pop": the shared offset also scales with a direction of the text (how much this item is looked at)
    pop = torch.zeros(ridge.shape[1], device=device, requires_grad=params == "scale-pop")
    optimizer = torch.optim.AdamW([t for t in (inner, outer, bias, pop) if t.requires_grad], lr=lr, weight_decay=0.0)

    def weight() -> torch.Tensor:
        return (outer @ inner if outer.dim() == 2 else outer * inner) + torch.outer(bias, pop)

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
