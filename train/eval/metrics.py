"""Rank computation and top-K metrics for next-item prediction.

Every example has exactly one relevant item (the next item), so all metrics
are functions of the target's 0-based rank alone. Keeping "rank" as the
interface between scoring and metrics lets full ranking, sampled ranking and
the head/tail breakdowns share one definition of each metric.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

PAD_ID = 0


def target_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """0-based rank of each target among the real items 1..num_items.

    Args:
        scores: [B, num_items + 1] model scores; column 0 is padding.
        targets: [B] internal ids in 1..num_items.
        exclude: optional bool [B, num_items + 1]; True removes the item from
            the candidate list of that row (e.g. already-seen items).

    Returns:
        int64 [B]: number of other candidates scoring >= the target.

    Why this definition:
        * Padding (column 0) is never a candidate, whatever its score: models
          often leave the padding embedding untrained or arbitrary.
        * Ties count against the target (pessimistic). An optimistic or
          "strictly greater" rule would hand a constant or collapsed scorer a
          perfect rank; pessimism makes degenerate models score 0.
        * The target is never excluded even if `exclude` marks it: with repeat
          consumption the target can legitimately appear in the history, and
          dropping it would make the example unrankable.

    Raises:
        ValueError: on shape mismatches, targets outside 1..num_items, or NaN
            scores (NaN compares False and would silently rank a broken model
            first).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, num_items + 1], got shape {tuple(scores.shape)}")
    batch, width = scores.shape
    targets = torch.as_tensor(targets, device=scores.device).long()
    if targets.shape != (batch,):
        raise ValueError(f"targets must have shape ({batch},), got {tuple(targets.shape)}")
    if batch == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    if int(targets.min()) < 1 or int(targets.max()) >= width:
        raise ValueError(f"targets must be in 1..{width - 1} (0 is padding)")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")

    rows = torch.arange(batch, device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    candidate = torch.ones((batch, width), dtype=torch.bool, device=scores.device)
    if exclude is not None:
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude must have shape {tuple(scores.shape)}, got {tuple(exclude.shape)}")
        candidate &= ~exclude.to(device=scores.device, dtype=torch.bool)
    candidate[:, PAD_ID] = False
    # The target is not its own competitor; this also overrides any exclusion of it.
    candidate[rows, targets] = False
    return ((scores >= target_scores) & candidate).sum(dim=1, dtype=torch.long)


def _as_ranks(ranks: np.ndarray | Iterable[int]) -> np.ndarray:
    arr = np.asarray(ranks, dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError("ranks must be non-negative")
    return arr


def _recall_ndcg_at(ranks: np.ndarray, k: int) -> tuple[float, float]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ranks.size == 0:
        # Empty groups (e.g. no long-history examples) report 0 rather than NaN
        # so results stay strict-JSON; callers carry a `count` to tell them apart.
        return 0.0, 0.0
    hit = ranks < k
    gains = np.where(hit, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return float(hit.mean()), float(gains.mean())


def recall_ndcg(ranks: np.ndarray, ks: Iterable[int] = (5, 10, 20)) -> dict[str, float]:
    """Recall@k and NDCG@k for single-relevant-item examples.

    With one relevant item the ideal DCG is 1, so NDCG@k reduces to
    1/log2(rank + 2) when the target is in the top k and 0 otherwise;
    recall@k is the hit rate. Returns keys `recall@k`, `ndcg@k` per k.
    An empty `ranks` gives 0.0 for every metric.
    """
    arr = _as_ranks(ranks)
    out: dict[str, float] = {}
    for k in ks:
        recall, ndcg = _recall_ndcg_at(arr, int(k))
        out[f"recall@{int(k)}"] = recall
        out[f"ndcg@{int(k)}"] = ndcg
    return out


def hit_ndcg(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k as reported for sampled ranking (e.g. LLMEmb).

    Same formulas as `recall_ndcg` (hit rate == recall with one relevant item);
    only the key names differ so sampled numbers are never mistaken for
    full-ranking ones. Keys: `hr@k`, `ndcg@k`.
    """
    recall, ndcg = _recall_ndcg_at(_as_ranks(ranks), int(k))
    return {f"hr@{int(k)}": recall, f"ndcg@{int(k)}": ndcg}
