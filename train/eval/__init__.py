"""Evaluation for next-item recommendation: full/sampled ranking, metrics, group breakdowns.

The names are loaded on first use (PEP 562), so `train.eval.compare` (numpy only: paired bootstrap, random
ranking) is importable without torch, as the report needs.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "paired_bootstrap": "compare",
    "hit_ndcg": "metrics", "recall_ndcg": "metrics", "target_ranks": "metrics",
    "RankingResult": "ranking", "ScoreFn": "ranking", "breakdown": "ranking", "evaluate": "ranking",
    "full_ranking": "ranking", "head_tail_groups": "ranking", "sample_negatives": "ranking",
    "sampled_ranking": "ranking",
}
__all__ = ["RankingResult", "ScoreFn", "breakdown", "evaluate", "full_ranking", "head_tail_groups", "hit_ndcg",
           "paired_bootstrap", "recall_ndcg", "sample_negatives", "sampled_ranking", "target_ranks"]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'train.eval' has no attribute {name!r}")
    return getattr(import_module(f"train.eval.{_WHERE[name]}"), name)
