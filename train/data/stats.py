"""Summary numbers of a processed dataset (what `python -m train.data stats` prints)."""

from __future__ import annotations

import numpy as np

from .dataset import SequenceData

QUANTILES = {"p25": 25, "p50": 50, "p75": 75, "p90": 90}


def dataset_stats(data: SequenceData) -> dict:
    """Users, items, interactions, density and sequence-length quantiles.

    Interactions are the lengths of `data.sequences` summed (for the LLM2Rec
    layout: the test lines, the fullest histories). Quantiles use numpy's
    linear interpolation.
    """
    lengths = np.array([s.shape[0] for s in data.sequences], dtype=np.int64)
    interactions = int(lengths.sum())
    cells = data.num_users * data.num_items
    seq_len: dict[str, float] = {"min": int(lengths.min()) if lengths.size else 0}
    for label, q in QUANTILES.items():
        seq_len[label] = float(np.percentile(lengths, q)) if lengths.size else 0.0
    seq_len["max"] = int(lengths.max()) if lengths.size else 0
    seq_len["mean"] = float(lengths.mean()) if lengths.size else 0.0
    return {
        "name": data.name,
        "users": data.num_users,
        "items": data.num_items,
        "interactions": interactions,
        "density": interactions / cells if cells else 0.0,
        "sequence_length": seq_len,
        "examples": {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
    }
