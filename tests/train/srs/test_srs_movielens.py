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


@pytest.mark.slow
def test_llmembs_preset_on_movielens_validates_on_sampled_ndcg_with_its_tail_groups(tmp_path):
    data = load_dataset("ml-100k", cache_dir=tmp_path)
    config = SRSConfig.preset("llmemb", max_epochs=1, hidden_size=32, ffn_size=32, max_len=50, batch_size=64)
    result = train_one_seed(data, config, seed=2024, progress=False)
    assert result.valid["sampled/ndcg@10"] > 0.05  # one epoch: well above a random order of 101 candidates (~.02)
    counts = data.user_counts()
    tail = result.test["breakdown"]["tail_items"]
    assert tail["count"] == int((counts[data.test.targets] < 20).sum()) > 0
