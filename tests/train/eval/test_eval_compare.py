"""Paired bootstrap against a baseline and the random ranking's expected recall."""

from __future__ import annotations

import numpy as np
import pytest

from train.eval.compare import paired_bootstrap, per_example, random_recall, seed_mean


def test_per_example_metrics_by_hand() -> None:
    ranks = np.array([0, 1, 9, 10])
    np.testing.assert_allclose(per_example(ranks, "recall", 10), [1, 1, 1, 0])
    np.testing.assert_allclose(per_example(ranks, "ndcg", 10), [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0])
    np.testing.assert_allclose(seed_mean([[0, 20], [20, 20]], "recall", 10), [0.5, 0.0])
    with pytest.raises(ValueError, match="same examples"):
        seed_mean([[0, 1], [0]], "recall", 10)


def test_paired_bootstrap() -> None:
    # identical rows: the difference is exactly 0 in every resample
    a = np.array([1.0, 0.0, 1.0, 0.0])
    same = paired_bootstrap(a, a, samples=500)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and not same["excludes_zero"]
    # a row better on 60 of 200 examples and worse on none: the interval sits above 0
    base = np.zeros(200)
    better = base.copy()
    better[:60] = 1.0
    result = paired_bootstrap(better, base + 0.5, samples=2000)
    assert result["diff"] == pytest.approx(0.3 - 0.5)
    assert result["high"] < 0 and result["excludes_zero"]
    up = paired_bootstrap(better, base, samples=2000)
    assert up["diff"] == pytest.approx(0.3) and 0.2 < up["low"] < 0.3 < up["high"] < 0.4
    # pairing matters: a shared per-example effect cancels (unpaired, this would be noise around 0)
    rng = np.random.default_rng(0)
    shared = rng.random(300)
    paired = paired_bootstrap(shared + 0.01, shared, samples=1000)
    assert paired["low"] == pytest.approx(0.01) and paired["high"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="same non-empty"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_random_recall() -> None:
    assert random_recall(np.array([100, 20, 5]), 10) == pytest.approx((0.1 + 0.5 + 1.0) / 3)
    with pytest.raises(ValueError, match="at least one candidate"):
        random_recall(np.array([0]), 10)
