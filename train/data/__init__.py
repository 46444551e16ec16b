"""Datasets for sequential recommendation: reading, processing, caching, item texts."""

from .cache import cache_folder, default_cache_dir
from .dataset import PAD_ID, PAD_TOKEN, Examples, SequenceData
from .load import build_dataset, load_dataset
from .processing import DataConfig
from .sources import movielens_100k_dir, resolve_source
from .text import attribute_texts, format_attributes, item_attributes, title_texts

__all__ = [
    "PAD_ID",
    "PAD_TOKEN",
    "DataConfig",
    "Examples",
    "SequenceData",
    "attribute_texts",
    "build_dataset",
    "cache_folder",
    "default_cache_dir",
    "format_attributes",
    "item_attributes",
    "load_dataset",
    "movielens_100k_dir",
    "resolve_source",
    "title_texts",
]
