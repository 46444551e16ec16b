"""Sequential recommenders (SASRec, GRU4Rec) over ID, frozen-text or fused item representations.

What other layers may use (export reads trained checkpoints through it): the config, the model and its
checkpoint loader, the test evaluation, per-example ranks and RAT's PCA file.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import SRSConfig
from .model import SequentialRecommender
from .rat import load_pca
from .trainer import evaluate_test, example_ranks, train_one_seed

__all__ = [
    "SRSConfig",
    "SequentialRecommender",
    "evaluate_test",
    "example_ranks",
    "load_checkpoint",
    "load_pca",
    "save_checkpoint",
    "train_one_seed",
]
