"""The real embedded MovieLens-100k: one short training run learns something."""

import pytest

from train.data import load_dataset
from train.srs.config import SRSConfig
from train.srs.trainer import train_one_seed


@pytest.mark.slow
def test_one_epoch_on_movielens_beats_random_by_far(tmp_path):
    data = load_dataset("ml-100k", cache_dir=tmp_path)
    config = SRSConfig(backbone="sasrec", max_epochs=2, batch_size=64, hidden_size=64, ffn_size=64)
    result = train_one_seed(data, config, seed=2024, progress=False)
    random_recall20 = 20 / data.num_items  # ~0.015
    assert result.valid["recall@20"] > 5 * random_recall20
    assert result.test["full"]["recall@20"] > 5 * random_recall20
    groups = result.test["breakdown"]
    assert groups["head_items"]["count"] + groups["tail_items"]["count"] == data.num_users
