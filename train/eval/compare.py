"""Is one model better than another on the same test users? Paired bootstrap, and the random ranking.

Seeds vary a model; users vary the test set. Both rows are first averaged over their seeds per
example, then the examples are resampled with replacement (the same draw for both rows, so the
comparison is paired) and the 2.5% / 97.5% quantiles of the mean difference give a 95% interval.
An interval that contains 0 means "no difference" at this test-set size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_example(ranks: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Recall@k (hit) or NDCG@k of every example from its 0-based target rank."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks < k
    if metric == "recall":
        return hit.astype(np.float64)
    if metric == "ndcg":
        return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    raise ValueError(f"metric must be 'recall' or 'ndcg', got {metric!r}")


def seed_mean(ranks_per_seed: Sequence[Sequence[int]], metric: str, k: int) -> np.ndarray:
    """Per-example metric averaged over seeds ([seeds][examples] ranks, the same examples in each)."""
    rows = [np.asarray(r) for r in ranks_per_seed]
    if not rows or any(r.shape != rows[0].shape for r in rows):
        raise ValueError("every seed must rank the same examples")
    return np.mean([per_example(r, metric, k) for r in rows], axis=0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over examples and its 95% bootstrap interval (same resampled examples for both)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.shape[0] == 0:
        raise ValueError(f"paired rows need the same non-empty examples, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 1000):  # bounded memory: 1000 resamples at a time
        n = min(1000, samples - start)
        means[start:start + n] = diff[rng.integers(0, diff.shape[0], size=(n, diff.shape[0]))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"diff": float(diff.mean()), "low": float(low), "high": float(high),
            "relative": float(diff.mean() / b.mean()) if b.mean() > 0 else float("nan"),
            "excludes_zero": bool(low > 0 or high < 0), "examples": int(diff.shape[0])}


def random_recall(candidates: np.ndarray, k: int) -> float:
    """Expected Recall@k of a uniformly random ranking: mean over examples of min(1, k / candidates)."""
    candidates = np.asarray(candidates, dtype=np.float64)
    if (candidates < 1).any():
        raise ValueError("every example needs at least one candidate (its target)")
    return float(np.minimum(1.0, k / candidates).mean())
