"""Sequential recommenders (SASRec, GRU4Rec) over ID, frozen-text or fused item representations.

What other layers may use (export reads trained checkpoints through it): the config, the model and its
checkpoint loader, the test evaluation and RAT's PCA file.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import SRSConfig
from .model import SequentialRecommender
from .rat import load_pca
from .trainer import evaluate_test, train_one_seed

__all__ = [
    "SRSConfig",
    "SequentialRecommender",
    "evaluate_test",
    "load_checkpoint",
    "load_pca",
    "save_checkpoint",
    "train_one_seed",
]
