"""Evaluation for next-item recommendation: full/sampled ranking, metrics, group breakdowns."""

from train.eval.compare import paired_bootstrap
from train.eval.metrics import hit_ndcg, recall_ndcg, target_ranks
from train.eval.ranking import (
    RankingResult,
    ScoreFn,
    breakdown,
    evaluate,
    full_ranking,
    head_tail_groups,
    sample_negatives,
    sampled_ranking,
)

__all__ = [
    "RankingResult",
    "ScoreFn",
    "breakdown",
    "evaluate",
    "full_ranking",
    "head_tail_groups",
    "hit_ndcg",
    "paired_bootstrap",
    "recall_ndcg",
    "sample_negatives",
    "sampled_ranking",
    "target_ranks",
]
