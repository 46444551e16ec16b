"""The text -> item-vector map of LLM-initialised IDs, calibrated by ranking (train/srs/coldmap.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from train.data.cold import COLD_VALID, cold_start_split
from train.srs.checkpoint import load_checkpoint
from train.srs.coldmap import fit_ranked_cold_map
from train.srs.config import SRSConfig
from train.srs.trainer import train_one_seed, validate

CPU = torch.device("cpu")

SMALL = dict(hidden_size=8, num_heads=2, ffn_size=16, max_len=5, dropout=0.1, batch_size=16, max_epochs=8,
             patience=8, lr=3e-3, early_stop_metric="ndcg@10")


def cycle_features(data) -> np.ndarray:
    """Each item's place on the planted cycle (i -> i+1) as Fourier features: the text of this toy catalogue,
    from which the next item is a fixed rotation away."""
    n = data.num_items
    angle = np.zeros(n + 1)
    angle[1:] = [2 * np.pi * int(raw.removeprefix("i")) / n for raw in data.item_ids[1:]]
    feats = [f(k * angle) for k in range(1, 9) for f in (np.cos, np.sin)]
    out = np.stack(feats, axis=1).astype(np.float32)
    out[0] = 0
    return out


@pytest.fixture(scope="module")
def cold_planted(planted_data, tmp_path_factory):
    """A cold split of the planted cycle, its Fourier 'text', and a fusion-init SASRec trained on it whose ridge map
    (lambda 30 on 32 warm items) shrinks cold vectors to where they rank last."""
    data, cold = cold_start_split(planted_data, 0.2, seed=0)
    folder = tmp_path_factory.mktemp("coldmap")
    np.save(folder / "items.npy", cycle_features(planted_data))
    config = SRSConfig(items=str(folder / "items.npy"), fusion="init", cold_map=30.0, **SMALL)
    frozen = torch.from_numpy(np.load(folder / "items.npy"))
    train_one_seed(data, config, seed=5, out_dir=folder / "ridge", frozen_embeddings=frozen, progress=False)
    return data, torch.from_numpy(cold), folder, config, frozen


def test_ranking_brings_back_cold_items_a_shrunk_ridge_map_ranks_last_and_leaves_warm_ones_alone(cold_planted):
    data, cold, folder, _, _ = cold_planted
    model, _ = load_checkpoint(folder / "ridge")
    before = model.item_vectors().detach().clone()
    random_recall = 5 / data.num_items
    assert validate(model, data, model.config, CPU)[f"{COLD_VALID}/recall@5"] < random_recall
    losses = fit_ranked_cold_map(model, data, epochs=30, pretend=0.2, lr=0.05, seed=1)
    assert losses[-1] < losses[0]
    # a scale and a shared offset put the cold targets near the top
    assert validate(model, data, model.config, CPU)[f"{COLD_VALID}/recall@5"] > 0.6 > 2 * random_recall
    after = model.item_vectors().detach()
    warm = model.items.warm
    assert torch.equal(after[warm], before[warm])  # the trained IDs are untouched
    assert not torch.allclose(after[cold], before[cold])
    # still one linear layer over the standardised text: what the exported item encoder carries
    z = (model.items.text.frozen - model.items.text.mean) / model.items.text.std
    layer = model.items.text.adapter.net
    torch.testing.assert_close(after[cold], (z @ layer.weight.T + layer.bias)[cold])
    # deterministic given the seed
    again, _ = load_checkpoint(folder / "ridge")
    assert fit_ranked_cold_map(again, data, epochs=30, pretend=0.2, lr=0.05, seed=1) == losses
    assert torch.equal(again.item_vectors(), after)


def test_training_calibrates_the_map_when_asked_and_the_checkpoint_keeps_it(cold_planted):
    data, cold, folder, config, frozen = cold_planted
    ranked = replace(config, cold_map_rank_epochs=3)
    result = train_one_seed(data, ranked, seed=5, out_dir=folder / "ranked", frozen_embeddings=frozen,
                            progress=False)
    a, _ = load_checkpoint(folder / "ridge")
    b, _ = load_checkpoint(folder / "ranked")
    warm = a.items.warm
    assert torch.equal(a.item_vectors()[warm], b.item_vectors()[warm])  # the same training, to the same IDs
    assert not torch.allclose(a.item_vectors()[cold], b.item_vectors()[cold])
    assert validate(b, data, b.config, CPU) == result.valid  # the reported validation is the saved model's
    with pytest.raises(ValueError, match="cold_map_rank_epochs"):
        SRSConfig(items="x.npy", fusion="init", cold_map_rank_epochs=3)  # needs the ridge map it calibrates
    with pytest.raises(ValueError, match="cold_map_pretend"):
        SRSConfig(items="x.npy", fusion="init", cold_map=10.0, cold_map_pretend=1.0)
