"""A cold-start split: some items never appear in training, yet are valid and test targets.

ID embeddings of such items are never trained, so an ID model cannot rank them;
a text-based item embedding can. This is the setting where LLM item embedders
are expected to earn their cost.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .dataset import SequenceData
from .processing import MIN_SEQUENCE_LENGTH, leave_one_out


def cold_start_split(data: SequenceData, fraction: float = 0.1, seed: int = 0) -> tuple[SequenceData, np.ndarray]:
    """`data` with a random `fraction` of its items removed from every training part of every sequence.

    The last two items of each sequence (the validation and test targets) are
    kept as they are, so cold items stay reachable at evaluation; the test
    history sees a cold item only when it is the validation target. Users
    whose whole training part was cold are dropped (they have no training
    example left). Returns the new data and the cold mask, bool [num_items + 1].
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold-start fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    num_cold = max(1, int(round(fraction * data.num_items)))
    cold = np.zeros(data.num_items + 1, dtype=bool)
    cold[rng.choice(np.arange(1, data.num_items + 1), size=num_cold, replace=False)] = True

    sequences, users = [], []
    for seq, user in zip(data.sequences, data.user_ids, strict=True):
        train_part = seq[:-2][~cold[seq[:-2]]]
        if train_part.shape[0] + 2 < MIN_SEQUENCE_LENGTH:
            continue
        sequences.append(np.concatenate([train_part, seq[-2:]]).astype(np.int64))
        users.append(user)
    train, valid, test = leave_one_out(sequences)
    manifest = {**data.manifest, "cold_start": {"fraction": fraction, "seed": seed, "cold_items": num_cold,
                                                "dropped_users": data.num_users - len(users)}}
    if "key" in manifest:
        manifest["key"] = f"{manifest['key']}-cold{fraction:g}-s{seed}"
    split = replace(data, user_ids=users, sequences=sequences, train=train, valid=valid, test=test,
                    manifest=manifest)
    return split, cold
