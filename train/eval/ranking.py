"""Full and sampled ranking evaluation over `Examples`, plus group breakdowns.

The model side is abstracted as a `ScoreFn` mapping example indices to a
score row over the whole catalogue, so the same evaluation code serves every
sequential recommender (SASRec/GRU4Rec/... over ID or LLM item embeddings)
without knowing how histories are encoded or truncated.

Full ranking is the primary protocol (unbiased, as in LLM2Rec). Sampled
ranking with 100 negatives is provided because LLMEmb reports it; its numbers
are not comparable to full-ranking numbers and use different key names
(`hr@k` instead of `recall@k`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from train.eval.metrics import hit_ndcg, recall_ndcg, target_ranks

if TYPE_CHECKING:
    from train.data.dataset import Examples

ScoreFn = Callable[[np.ndarray], torch.Tensor]
"""Example indices (int64 [B]) -> scores [B, num_items + 1] (column 0 = padding, ignored)."""


@dataclass
class RankingResult:
    """Per-example 0-based target ranks and the metrics aggregated from them."""

    ranks: np.ndarray  # int64 [num_examples], aligned with the Examples order
    metrics: dict[str, float]
    num_examples: int
    # Sampled ranking only: the negatives actually used, int64 [num_examples, n],
    # 0-padded when a user had fewer than n candidates. Kept so runs can be audited.
    negatives: np.ndarray | None = None


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _scores_for(score_fn: ScoreFn, idx: np.ndarray, num_items: int) -> torch.Tensor:
    """Call the model and validate its output shape (a wrong width would silently shift item ids)."""
    with torch.no_grad():
        scores = torch.as_tensor(score_fn(idx)).detach()
    expected = (idx.shape[0], num_items + 1)
    if tuple(scores.shape) != expected:
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {expected}")
    return scores


def _history_mask(examples: Examples, idx: np.ndarray, num_items: int, device: torch.device) -> torch.Tensor:
    """Bool [B, num_items + 1], True for every item in each example's FULL history.

    Uses sequences[s][:p] rather than the model's truncated input window: an
    item seen long ago is still a "seen" item and must not be recommended again.
    """
    histories = [examples.sequences[int(examples.seq_index[i])][: int(examples.position[i])] for i in idx]
    mask = torch.zeros((idx.shape[0], num_items + 1), dtype=torch.bool, device=device)
    lengths = np.fromiter((h.shape[0] for h in histories), dtype=np.int64, count=len(histories))
    if lengths.sum() > 0:
        items = np.concatenate(histories).astype(np.int64)
        rows = np.repeat(np.arange(idx.shape[0], dtype=np.int64), lengths)
        mask[torch.from_numpy(rows).to(device), torch.from_numpy(items).to(device)] = True
    return mask


def full_ranking(
    score_fn: ScoreFn,
    examples: Examples,
    num_items: int,
    ks: Iterable[int] = (5, 10, 20),
    exclude_history: bool = False,
    batch_size: int = 512,
) -> RankingResult:
    """Rank each target against all items 1..num_items (pessimistic ties).

    Processes `batch_size` examples at a time so no matrix larger than
    batch_size x (num_items + 1) is ever built, whatever the catalogue size.
    With `exclude_history`, every item of the full history is removed from the
    candidates, except the target itself (see `target_ranks`).
    """
    _check_batch_size(batch_size)
    ks = tuple(int(k) for k in ks)
    n = len(examples)
    targets = examples.targets
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        scores = _scores_for(score_fn, idx, num_items)
        exclude = _history_mask(examples, idx, num_items, scores.device) if exclude_history else None
        batch_targets = torch.from_numpy(targets[idx]).to(scores.device)
        ranks[idx] = target_ranks(scores, batch_targets, exclude).cpu().numpy()
    return RankingResult(ranks=ranks, metrics=recall_ndcg(ranks, ks), num_examples=n)


def _sample_one(rng: np.random.Generator, seen: np.ndarray, num_items: int, n: int) -> np.ndarray:
    """Up to `n` distinct items drawn uniformly from 1..num_items minus `seen` (sorted, unique, real ids)."""
    num_candidates = num_items - seen.shape[0]
    if num_candidates <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if num_candidates <= 4 * n:
        # Dense case: rejection would waste most draws; materialise the complement
        # (O(num_items), only reached when the user covers most of the catalogue
        # or the catalogue is small).
        complement = np.setdiff1d(np.arange(1, num_items + 1, dtype=np.int64), seen, assume_unique=True)
        if num_candidates <= n:
            return complement  # fewer candidates than requested: use all of them
        return rng.choice(complement, size=n, replace=False)
    # Sparse case (typical, and the only affordable one for 100k-item catalogues):
    # rejection sampling. Keeping the first occurrence of each accepted draw is
    # equivalent to sequential uniform sampling without replacement.
    chosen = np.empty(0, dtype=np.int64)
    accept = num_candidates / num_items
    while chosen.shape[0] < n:
        need = n - chosen.shape[0]
        draw = rng.integers(1, num_items + 1, size=int(need / accept * 1.25) + 8, dtype=np.int64)
        draw = draw[~np.isin(draw, seen, assume_unique=False)]
        merged = np.concatenate([chosen, draw])
        _, first = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first)][:n]
    return chosen


def sample_negatives(examples: Examples, num_items: int, n: int = 100, seed: int = 0) -> np.ndarray:
    """Negatives for sampled ranking, int64 [len(examples), n], 0-padded.

    For each example, `n` distinct items drawn uniformly from 1..num_items that
    do NOT occur anywhere in the user's whole sequence (past and future), as
    LLMEmb does, so a negative is never an item the user actually consumed.
    If a user has fewer than `n` such items, all of them are used and the
    remaining slots hold 0 (padding, never ranked). Deterministic given `seed`
    and the example order (one numpy Generator consumed example by example).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    out = np.zeros((len(examples), n), dtype=np.int64)
    seen_cache: dict[int, np.ndarray] = {}
    for row in range(len(examples)):
        s = int(examples.seq_index[row])
        seen = seen_cache.get(s)
        if seen is None:
            seq = np.unique(np.asarray(examples.sequences[s], dtype=np.int64))
            seen = seq[(seq >= 1) & (seq <= num_items)]
            seen_cache[s] = seen
        neg = _sample_one(rng, seen, num_items, n)
        out[row, : neg.shape[0]] = neg
    return out


def sampled_ranking(
    score_fn: ScoreFn,
    examples: Examples,
    num_items: int,
    num_negatives: int = 100,
    k: int = 10,
    seed: int = 0,
    batch_size: int = 512,
    negatives: np.ndarray | None = None,
) -> RankingResult:
    """Rank each target among itself + sampled negatives; reports `hr@k`/`ndcg@k`.

    Negatives come from `sample_negatives(examples, num_items, num_negatives, seed)`
    unless `negatives` ([len(examples), m], 0-padded) is given, which lets
    callers reuse one sample across models. Ties are pessimistic as in full ranking.
    """
    _check_batch_size(batch_size)
    n = len(examples)
    if negatives is None:
        negatives = sample_negatives(examples, num_items, num_negatives, seed)
    negatives = np.asarray(negatives, dtype=np.int64)
    if negatives.ndim != 2 or negatives.shape[0] != n:
        raise ValueError(f"negatives must be [{n}, m], got shape {negatives.shape}")
    if negatives.size and (negatives.min() < 0 or negatives.max() > num_items):
        raise ValueError(f"negatives must be in 0..{num_items} (0 = unused slot)")
    targets = examples.targets
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        scores = _scores_for(score_fn, idx, num_items)
        # Reuse the full-ranking rank rule by excluding everything except the negatives;
        # padding slots (0) point at column 0, which target_ranks never counts.
        exclude = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
        rows = torch.arange(idx.shape[0], device=scores.device).unsqueeze(1)
        exclude[rows, torch.from_numpy(negatives[idx]).to(scores.device)] = False
        batch_targets = torch.from_numpy(targets[idx]).to(scores.device)
        ranks[idx] = target_ranks(scores, batch_targets, exclude).cpu().numpy()
    return RankingResult(ranks=ranks, metrics=hit_ndcg(ranks, k), num_examples=n, negatives=negatives)


def head_tail_groups(item_counts: np.ndarray, head_fraction: float = 0.2) -> np.ndarray:
    """Bool [num_items + 1]: True for head (popular) items.

    Rule: sort items 1..num_items by training count descending, ties broken by
    smaller item id first (stable and reproducible), and mark the first
    floor(head_fraction * num_items) as head. Padding (index 0) is never head.
    Using an item-count fraction (not an interaction-mass fraction) matches the
    usual "top 20% items" long-tail split in LLMEmb-style analyses.
    """
    counts = np.asarray(item_counts)
    if counts.ndim != 1 or counts.shape[0] < 1:
        raise ValueError("item_counts must be 1-D [num_items + 1]")
    if not 0.0 <= head_fraction <= 1.0:
        raise ValueError(f"head_fraction must be in [0, 1], got {head_fraction}")
    num_items = counts.shape[0] - 1
    num_head = int(np.floor(head_fraction * num_items + 1e-9))
    ids = np.arange(1, num_items + 1)
    order = np.lexsort((ids, -counts[1:].astype(np.float64)))  # primary: count desc, then id asc
    head = np.zeros(num_items + 1, dtype=bool)
    head[ids[order[:num_head]]] = True
    return head


def _group_metrics(ranks: np.ndarray, ks: tuple[int, ...], kind: str) -> dict:
    if kind == "full":
        metrics: dict = recall_ndcg(ranks, ks)
    else:
        metrics = {}
        for k in ks:
            metrics.update(hit_ndcg(ranks, k))
    metrics["count"] = int(ranks.shape[0])
    return metrics


def breakdown(
    result_ranks: np.ndarray | RankingResult,
    examples: Examples,
    item_counts: np.ndarray,
    ks: Iterable[int] = (5, 10, 20),
    head_fraction: float = 0.2,
    long_threshold: float | None = None,
    kind: Literal["full", "sampled"] = "full",
    head: np.ndarray | None = None,
) -> dict[str, dict]:
    """Metrics per popularity group of the target and per history-length group.

    Groups: `head_items` / `tail_items` (target is / is not a head item per
    `head_tail_groups`), `cold_items` (target never a training target: the
    cold-start cases, a subset of tail), `warm_items` (the others) and `short_history` / `long_history` (full history
    length <= threshold / > threshold; threshold defaults to the median history
    length of these examples). Each group holds the metrics (`recall@k`/`ndcg@k`
    for kind="full", `hr@k`/`ndcg@k` for kind="sampled"), `count`, and for
    context `num_items` (popularity groups) or `threshold` (history groups).
    Empty groups report 0.0 metrics with count 0. `head` (bool [num_items + 1]) replaces the top-fraction
    head set, e.g. LLMEmb's absolute threshold (`SequenceData.user_counts`).
    """
    if kind not in ("full", "sampled"):
        raise ValueError(f"kind must be 'full' or 'sampled', got {kind!r}")
    ranks = result_ranks.ranks if isinstance(result_ranks, RankingResult) else result_ranks
    ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
    if ranks.shape[0] != len(examples):
        raise ValueError(f"{ranks.shape[0]} ranks for {len(examples)} examples")
    ks = tuple(int(k) for k in ks)
    head = head_tail_groups(item_counts, head_fraction) if head is None else np.asarray(head, dtype=bool)
    targets = examples.targets
    if targets.size and targets.max() >= head.shape[0]:
        raise ValueError("a target id exceeds len(item_counts) - 1")
    is_head = head[targets]
    counts = np.asarray(item_counts)
    lengths = examples.history_lengths
    if long_threshold is None:
        threshold = float(np.median(lengths)) if lengths.size else 0.0
    else:
        threshold = float(long_threshold)
    is_short = lengths <= threshold

    out: dict[str, dict] = {}
    num_head = int(head.sum())
    for name, mask, extra in (
        ("head_items", is_head, {"num_items": num_head}),
        ("tail_items", ~is_head, {"num_items": int(head.shape[0] - 1 - num_head)}),
        ("cold_items", counts[targets] == 0, {"num_items": int((counts[1:] == 0).sum())}),
        ("warm_items", counts[targets] > 0, {"num_items": int((counts[1:] > 0).sum())}),
        ("short_history", is_short, {"threshold": threshold}),
        ("long_history", ~is_short, {"threshold": threshold}),
    ):
        group = _group_metrics(ranks[mask], ks, kind)
        group.update(extra)
        out[name] = group
    return out


def evaluate(
    score_fn: ScoreFn,
    examples: Examples,
    num_items: int,
    item_counts: np.ndarray,
    ks: Iterable[int] = (5, 10, 20),
    exclude_history: bool = False,
    sampled: bool = False,
    num_negatives: int = 100,
    sampled_k: int = 10,
    seed: int = 0,
    batch_size: int = 512,
    head_fraction: float = 0.2,
    long_threshold: float | None = None,
    head: np.ndarray | None = None,
) -> dict:
    """One-call evaluation returning a JSON-serialisable report.

    Keys: `num_examples`, `full` (recall/ndcg@ks), `breakdown` (groups of the
    full ranking) and, if `sampled`, `sampled` (hr/ndcg@sampled_k) and
    `sampled_breakdown`. Sampled ranking ignores `exclude_history`: its
    negatives already exclude the whole user sequence.
    """
    ks = tuple(int(k) for k in ks)
    full = full_ranking(score_fn, examples, num_items, ks, exclude_history, batch_size)
    report: dict = {
        "num_examples": int(full.num_examples),
        "full": full.metrics,
        "breakdown": breakdown(full.ranks, examples, item_counts, ks, head_fraction, long_threshold, "full", head),
    }
    if sampled:
        samp = sampled_ranking(score_fn, examples, num_items, num_negatives, sampled_k, seed, batch_size)
        report["sampled"] = samp.metrics
        report["sampled_breakdown"] = breakdown(
            samp.ranks, examples, item_counts, (sampled_k,), head_fraction, long_threshold, "sampled", head
        )
    return report
