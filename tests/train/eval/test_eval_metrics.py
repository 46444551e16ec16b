"""Hand-computed checks of target ranks and Recall/NDCG/HR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.eval import hit_ndcg, recall_ndcg, target_ranks


def _descending_scores(num_items: int) -> torch.Tensor:
    """Item j scores 100 - j, so item j has rank j - 1; padding gets a huge score."""
    scores = 100.0 - torch.arange(num_items + 1, dtype=torch.float32)
    scores[0] = 1e9
    return scores.unsqueeze(0)


def test_ranks_0_3_25() -> None:
    scores = _descending_scores(30).repeat(3, 1)
    ranks = target_ranks(scores, torch.tensor([1, 4, 26]))
    assert ranks.tolist() == [0, 3, 25]
    assert ranks.dtype == torch.long


def test_padding_column_with_huge_score_never_counts() -> None:
    scores = torch.tensor([[1e30, 0.5, 0.1, 0.2]])
    assert target_ranks(scores, torch.tensor([1])).tolist() == [0]
    scores[0, 0] = float("inf")
    assert target_ranks(scores, torch.tensor([1])).tolist() == [0]


def test_ties_count_against_target() -> None:
    # target 2 ties with items 4 and 5; item 1 is strictly higher -> 1 + 2 = 3
    scores = torch.tensor([[0.0, 9.0, 5.0, 1.0, 5.0, 5.0, 2.0]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [3]


def test_constant_scorer_gets_worst_rank() -> None:
    scores = torch.zeros(4, 11)
    assert target_ranks(scores, torch.tensor([1, 5, 7, 10])).tolist() == [9, 9, 9, 9]
    assert recall_ndcg(np.array([9, 9, 9, 9]), ks=(5,)) == {"recall@5": 0.0, "ndcg@5": 0.0}


def test_exclusion_removes_higher_items_but_never_target() -> None:
    scores = _descending_scores(10)  # item j has rank j - 1
    target = torch.tensor([6])  # rank 5
    assert target_ranks(scores, target).tolist() == [5]
    exclude = torch.zeros(1, 11, dtype=torch.bool)
    exclude[0, [2, 4]] = True  # two higher-scoring "history" items
    assert target_ranks(scores, target, exclude).tolist() == [3]
    exclude[0, 6] = True  # target in its own history (repeat consumption): still ranked
    assert target_ranks(scores, target, exclude).tolist() == [3]
    exclude[0, [8, 9]] = True  # lower-scoring items: no effect
    assert target_ranks(scores, target, exclude).tolist() == [3]


def test_rank_validation() -> None:
    scores = torch.rand(2, 5)
    with pytest.raises(ValueError):
        target_ranks(scores, torch.tensor([0, 1]))  # padding target
    with pytest.raises(ValueError):
        target_ranks(scores, torch.tensor([1, 5]))  # out of catalogue
    with pytest.raises(ValueError):
        target_ranks(scores, torch.tensor([1]))  # wrong batch
    nan_scores = scores.clone()
    nan_scores[0, 2] = float("nan")
    with pytest.raises(ValueError):
        target_ranks(nan_scores, torch.tensor([1, 1]))


def test_recall_ndcg_literal_values() -> None:
    # 1/log2(rank + 2): rank 0 -> 1, 2 -> 0.5, 6 -> 1/3, 14 -> 0.25, 30 -> 0.2
    m = recall_ndcg(np.array([0, 2, 6, 14, 30]), ks=(5, 10, 20))
    assert list(m) == ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"]
    assert m["recall@5"] == pytest.approx(0.4)
    assert m["ndcg@5"] == pytest.approx(0.3)  # (1 + 0.5) / 5
    assert m["recall@10"] == pytest.approx(0.6)
    assert m["ndcg@10"] == pytest.approx(0.3666666667)  # (1 + 0.5 + 1/3) / 5
    assert m["recall@20"] == pytest.approx(0.8)
    assert m["ndcg@20"] == pytest.approx(0.4166666667)  # (1 + 0.5 + 1/3 + 0.25) / 5


def test_recall_ndcg_rank_3_and_25() -> None:
    m = recall_ndcg(np.array([0, 3, 25]), ks=(5, 10, 20))
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 0.4306765581) / 3)  # 1/log2(5) = 0.4306765581
    assert m["recall@20"] == pytest.approx(2 / 3)


def test_k_larger_than_catalogue_gives_full_recall() -> None:
    scores = torch.tensor([[0.0, 0.3, 0.2, 0.1]] * 3)
    ranks = target_ranks(scores, torch.tensor([1, 2, 3])).numpy()
    m = recall_ndcg(ranks, ks=(5, 10, 20))
    for k in (5, 10, 20):
        assert m[f"recall@{k}"] == 1.0
        assert m[f"ndcg@{k}"] == pytest.approx((1 + 1 / np.log2(3) + 0.5) / 3)


def test_hit_ndcg_keys_and_values() -> None:
    m = hit_ndcg(np.array([0, 2, 10, 50]), k=10)
    assert m == {"hr@10": pytest.approx(0.5), "ndcg@10": pytest.approx(0.375)}  # (1 + 0.5) / 4
    assert set(hit_ndcg(np.array([1]), k=5)) == {"hr@5", "ndcg@5"}


def test_empty_ranks_give_zero() -> None:
    assert recall_ndcg(np.array([], dtype=np.int64), ks=(10,)) == {"recall@10": 0.0, "ndcg@10": 0.0}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=3, max_size=12),
    st.data(),
)
def test_rank_matches_bruteforce(values: list[int], data: st.DataObject) -> None:
    num_items = len(values) - 1
    target = data.draw(st.integers(1, num_items))
    excluded = data.draw(st.sets(st.integers(0, num_items)))
    scores = torch.tensor([values], dtype=torch.float32)
    exclude = torch.zeros(1, num_items + 1, dtype=torch.bool)
    exclude[0, list(excluded)] = True
    expected = sum(
        1
        for j in range(1, num_items + 1)
        if j != target and j not in excluded and values[j] >= values[target]
    )
    assert target_ranks(scores, torch.tensor([target]), exclude).item() == expected
