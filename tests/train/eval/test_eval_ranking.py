"""Full/sampled ranking, negative sampling, head/tail split and breakdowns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.data.dataset import Examples
from train.eval import (
    RankingResult,
    breakdown,
    evaluate,
    full_ranking,
    head_tail_groups,
    hit_ndcg,
    recall_ndcg,
    sample_negatives,
    sampled_ranking,
)


def make_examples(sequences: list[list[int]], pairs: list[tuple[int, int]]) -> Examples:
    return Examples(
        sequences=[np.asarray(s, dtype=np.int64) for s in sequences],
        seq_index=np.array([s for s, _ in pairs], dtype=np.int64),
        position=np.array([p for _, p in pairs], dtype=np.int64),
    )


def random_case(seed: int, num_users: int = 7, num_items: int = 15) -> tuple[Examples, np.ndarray]:
    """Random sequences (with repeats) and integer scores (many ties) per example."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(1, num_items + 1, size=rng.integers(3, 12)).tolist() for _ in range(num_users)]
    pairs = [(s, p) for s, seq in enumerate(sequences) for p in range(1, len(seq))]
    examples = make_examples(sequences, pairs)
    table = rng.integers(0, 6, size=(len(examples), num_items + 1)).astype(np.float32)
    return examples, table


def table_score_fn(table: np.ndarray, calls: list[int] | None = None):
    def score_fn(idx: np.ndarray) -> torch.Tensor:
        if calls is not None:
            calls.append(len(idx))
        return torch.from_numpy(table[idx])

    return score_fn


def naive_ranks(table: np.ndarray, examples: Examples, exclude_history: bool) -> np.ndarray:
    out = []
    for i in range(len(examples)):
        seq = examples.sequences[int(examples.seq_index[i])]
        p = int(examples.position[i])
        target = int(seq[p])
        history = set(seq[:p].tolist()) if exclude_history else set()
        rank = 0
        for j in range(1, table.shape[1]):
            if j == target or j in history:
                continue
            if table[i, j] >= table[i, target]:
                rank += 1
        out.append(rank)
    return np.array(out, dtype=np.int64)


# ---------------------------------------------------------------- full ranking


@pytest.mark.parametrize("exclude_history", [False, True])
def test_full_ranking_batch_invariant_and_matches_naive(exclude_history: bool) -> None:
    examples, table = random_case(seed=3)
    expected = naive_ranks(table, examples, exclude_history)
    for batch_size in (1, 3, 512):
        calls: list[int] = []
        res = full_ranking(
            table_score_fn(table, calls), examples, 15, exclude_history=exclude_history, batch_size=batch_size
        )
        assert isinstance(res, RankingResult)
        np.testing.assert_array_equal(res.ranks, expected)
        assert res.num_examples == len(examples)
        assert max(calls) <= batch_size
        assert sum(calls) == len(examples)
        assert res.metrics == pytest.approx(recall_ndcg(expected, (5, 10, 20)))


def test_exclude_history_uses_full_not_truncated_history() -> None:
    num_items = 100
    seq = list(range(1, 61))  # 60 distinct items
    examples = make_examples([seq], [(0, 50)])  # target item 51, history items 1..50
    early = np.arange(1, 11)  # first 10 history items: outside any window of the last 20

    def score_fn(idx: np.ndarray) -> torch.Tensor:
        scores = torch.zeros(len(idx), num_items + 1)
        scores[:, early] = 10.0
        scores[:, 51] = 5.0
        return scores

    assert full_ranking(score_fn, examples, num_items).ranks.tolist() == [10]
    # a window-only exclusion (last 20 items) would still leave rank 10
    assert full_ranking(score_fn, examples, num_items, exclude_history=True).ranks.tolist() == [0]


def test_exclude_history_keeps_repeated_target() -> None:
    examples = make_examples([[3, 1, 2, 3]], [(0, 3)])  # target 3 also in history

    def score_fn(idx: np.ndarray) -> torch.Tensor:
        return torch.tensor([[0.0, 9.0, 8.0, 5.0, 7.0, 1.0]])

    res = full_ranking(score_fn, examples, 5, exclude_history=True)
    assert res.ranks.tolist() == [1]  # items 1, 2 excluded; only item 4 beats the target


def test_full_ranking_rejects_wrong_score_width() -> None:
    examples = make_examples([[1, 2]], [(0, 1)])
    with pytest.raises(ValueError):
        full_ranking(lambda idx: torch.zeros(len(idx), 5), examples, num_items=5)


# ---------------------------------------------------------------- sampled ranking


def test_sample_negatives_exclude_whole_sequence_and_are_deterministic() -> None:
    num_items = 500
    rng = np.random.default_rng(0)
    sequences = [rng.choice(np.arange(1, num_items + 1), size=40, replace=False).tolist() for _ in range(20)]
    pairs = [(s, p) for s in range(20) for p in (5, 39)]  # early position: future items must be excluded too
    examples = make_examples(sequences, pairs)
    neg = sample_negatives(examples, num_items, 100, seed=7)
    assert neg.shape == (40, 100)
    for row in range(len(examples)):
        items = neg[row]
        assert len(set(items.tolist())) == 100
        assert items.min() >= 1 and items.max() <= num_items
        assert not set(items.tolist()) & set(sequences[int(examples.seq_index[row])])
    np.testing.assert_array_equal(neg, sample_negatives(examples, num_items, 100, seed=7))
    assert not np.array_equal(neg, sample_negatives(examples, num_items, 100, seed=8))


def test_sample_negatives_dense_and_short_catalogue() -> None:
    # catalogue of 8 items, user saw 5 -> only 3 candidates for 100 requested: all used, rest 0-padded
    examples = make_examples([[1, 2, 3, 4, 5], [2, 4]], [(0, 4), (1, 1)])
    neg = sample_negatives(examples, 8, 100, seed=0)
    assert neg.shape == (2, 100)
    assert sorted(neg[0][neg[0] > 0].tolist()) == [6, 7, 8]
    assert sorted(neg[1][neg[1] > 0].tolist()) == [1, 3, 5, 6, 7, 8]
    assert (neg[0][3:] == 0).all() and (neg[1][6:] == 0).all()
    # dense path with more candidates than requested: distinct, outside the sequence
    neg = sample_negatives(examples, 8, 2, seed=1)
    assert len(set(neg[0].tolist())) == 2 and set(neg[0].tolist()) <= {6, 7, 8}


@pytest.mark.parametrize("num_items", [6, 1000])
def test_sample_negatives_roughly_uniform(num_items: int) -> None:
    # num_items=6 exercises the complement path, 1000 the rejection path
    n = 2
    examples = make_examples([[1, 1]], [(0, 1)] * 3000)
    neg = sample_negatives(examples, num_items, n, seed=0)
    assert (neg != 1).all()
    counts = np.bincount(neg.ravel(), minlength=num_items + 1)[2:]
    if num_items == 6:
        # 6000 draws over 5 items: expected 1200 each
        assert np.all(np.abs(counts - 1200) < 150)
    else:
        # mean of uniform{2..1000} is 501
        assert abs(neg.mean() - 501) < 15
        assert all(a != b for a, b in neg)


def test_sample_negatives_large_catalogue_fast() -> None:
    num_items = 100_000
    rng = np.random.default_rng(1)
    sequences = [rng.integers(1, num_items + 1, size=50).tolist() for _ in range(300)]
    examples = make_examples(sequences, [(s, 49) for s in range(300)])
    neg = sample_negatives(examples, num_items, 100, seed=0)
    assert neg.shape == (300, 100) and (neg > 0).all()
    assert all(not set(neg[i].tolist()) & set(sequences[i]) for i in range(300))


def test_sampled_ranking_perfect_scorer() -> None:
    num_items = 300
    rng = np.random.default_rng(2)
    sequences = [rng.choice(np.arange(1, num_items + 1), size=10, replace=False).tolist() for _ in range(50)]
    examples = make_examples(sequences, [(s, 9) for s in range(50)])
    targets = examples.targets

    def perfect(idx: np.ndarray) -> torch.Tensor:
        scores = torch.zeros(len(idx), num_items + 1)
        scores[torch.arange(len(idx)), torch.from_numpy(targets[idx])] = 1.0
        return scores

    res = sampled_ranking(perfect, examples, num_items, num_negatives=100, seed=0, batch_size=7)
    assert res.metrics == {"hr@10": 1.0, "ndcg@10": 1.0}
    assert res.negatives is not None and res.negatives.shape == (50, 100)
    # a constant scorer ranks last among 101 candidates
    const = sampled_ranking(lambda idx: torch.zeros(len(idx), num_items + 1), examples, num_items)
    assert (const.ranks == 100).all()
    assert const.metrics == {"hr@10": 0.0, "ndcg@10": 0.0}


def test_sampled_ranking_hand_case_with_known_negatives() -> None:
    examples = make_examples([[1, 2], [3, 4]], [(0, 1), (1, 1)])  # targets 2 and 4
    scores = torch.tensor(
        [
            # pad   1    2    3    4    5    6    7    8
            [99.0, 9.0, 5.0, 7.0, 1.0, 5.0, 6.0, 0.0, 2.0],
            [99.0, 0.0, 0.0, 0.0, 3.0, 8.0, 3.0, 1.0, 9.0],
        ]
    )
    negatives = np.array([[3, 5, 7, 8], [5, 6, 7, 0]])  # second row: one unused slot
    res = sampled_ranking(lambda idx: scores[idx], examples, 8, negatives=negatives, batch_size=1)
    # row 0: target 5.0 vs 7, 5(tie), 0, 2 -> 2 ; item 1 (9.0) and 6 (6.0) are not candidates
    # row 1: target 3.0 vs 8, 3(tie), 1 -> 2 ; padding slot and item 8 (9.0) ignored
    assert res.ranks.tolist() == [2, 2]
    assert res.metrics == pytest.approx({"hr@10": 1.0, "ndcg@10": 0.5})


# ---------------------------------------------------------------- groups


def test_head_tail_split_hand_counts() -> None:
    #                  pad  1  2  3  4  5  6  7  8  9  10
    counts = np.array([50, 3, 7, 1, 7, 0, 2, 9, 7, 1, 0])
    head = head_tail_groups(counts, 0.2)
    assert head.shape == (11,)
    # 10 items -> 2 head: item 7 (9), then the tie at 7 is broken by smaller id -> item 2
    assert np.flatnonzero(head).tolist() == [2, 7]
    assert not head[0]
    # top 5 by count: 7 (9), 2/4/8 (7, by id), 1 (3)
    assert np.flatnonzero(head_tail_groups(counts, 0.5)).tolist() == [1, 2, 4, 7, 8]
    assert not head_tail_groups(counts, 0.0).any()
    assert head_tail_groups(counts, 1.0).sum() == 10


def test_breakdown_counts_and_subset_metrics() -> None:
    examples, table = random_case(seed=11, num_users=9)
    res = full_ranking(table_score_fn(table), examples, 15)
    counts = np.bincount(examples.targets, minlength=16)
    out = breakdown(res.ranks, examples, counts)
    assert set(out) == {"head_items", "tail_items", "cold_items", "warm_items", "short_history", "long_history"}
    n = len(examples)
    assert out["head_items"]["count"] + out["tail_items"]["count"] == n
    assert out["cold_items"]["count"] + out["warm_items"]["count"] == n
    assert out["short_history"]["count"] + out["long_history"]["count"] == n
    assert out["head_items"]["num_items"] == 3 and out["tail_items"]["num_items"] == 12

    head = head_tail_groups(counts)
    is_head = head[examples.targets]
    lengths = examples.history_lengths
    thr = float(np.median(lengths))
    assert out["short_history"]["threshold"] == thr
    for name, mask in (
        ("head_items", is_head),
        ("tail_items", ~is_head),
        ("warm_items", counts[examples.targets] > 0),
        ("short_history", lengths <= thr),
        ("long_history", lengths > thr),
    ):
        expected = recall_ndcg(res.ranks[mask], (5, 10, 20))
        assert out[name]["count"] == int(mask.sum())
        for key, value in expected.items():
            assert out[name][key] == pytest.approx(value)

    # RankingResult is accepted directly, explicit threshold is honoured
    out2 = breakdown(res, examples, counts, long_threshold=0)
    assert out2["short_history"]["count"] == 0 and out2["long_history"]["count"] == n


def test_breakdown_hand_case_and_sampled_kind() -> None:
    # histories of length 1, 2, 3, 4 -> median 2.5: short = {1, 2}
    examples = make_examples([[1, 2, 3, 4, 5]], [(0, 1), (0, 2), (0, 3), (0, 4)])  # targets 2, 3, 4, 5
    counts = np.array([0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0])  # 10 items -> head = {5, 1}
    ranks = np.array([0, 2, 20, 6])
    full = breakdown(ranks, examples, counts, ks=(10,))
    assert full["head_items"] == {
        "recall@10": 1.0,
        "ndcg@10": pytest.approx(1 / 3),
        "count": 1,
        "num_items": 2,
    }
    assert full["tail_items"]["count"] == 3
    assert full["tail_items"]["recall@10"] == pytest.approx(2 / 3)
    assert full["tail_items"]["ndcg@10"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3
    # targets 2, 3, 4 were never training targets: the cold-start cases (ranks 0, 2, 20)
    assert full["cold_items"] == {"recall@10": pytest.approx(2 / 3), "ndcg@10": pytest.approx(0.5), "count": 3,
                                  "num_items": 9}
    assert full["short_history"]["threshold"] == 2.5
    assert full["short_history"]["ndcg@10"] == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert full["long_history"]["recall@10"] == pytest.approx(0.5)
    samp = breakdown(ranks, examples, counts, ks=(10,), kind="sampled")
    assert samp["long_history"] == {**hit_ndcg(ranks[2:], 10), "count": 2, "threshold": 2.5}
    with pytest.raises(ValueError):
        breakdown(ranks[:3], examples, counts)


def test_evaluate_report_is_strict_json() -> None:
    examples, table = random_case(seed=5)
    counts = np.bincount(examples.targets, minlength=16)
    report = evaluate(
        table_score_fn(table),
        examples,
        15,
        counts,
        exclude_history=True,
        sampled=True,
        num_negatives=5,
        batch_size=4,
    )
    json.dumps(report, allow_nan=False)
    assert set(report) == {"num_examples", "full", "breakdown", "sampled", "sampled_breakdown"}
    assert report["full"] == pytest.approx(
        recall_ndcg(naive_ranks(table, examples, exclude_history=True), (5, 10, 20))
    )
    assert set(report["sampled"]) == {"hr@10", "ndcg@10"}
    assert report["num_examples"] == len(examples)
    assert "sampled" not in evaluate(table_score_fn(table), examples, 15, counts)
