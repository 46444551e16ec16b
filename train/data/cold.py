"""A cold-start split: some items never appear in training, yet are valid and test targets.

ID embeddings of such items are never trained, so an ID model cannot rank them;
a text-based item embedding can. This is the setting where LLM item embedders
are expected to earn their cost.

Leave-one-out alone sees few cold targets (about 80 of 943 users on MovieLens-100k
with 10% of items cold: one hit moves Recall@10 by .012 against a random ranking's
~.008). So the split also carries two cold-target evaluation sets over the users'
original sequences: `cold_test` = each user's last interaction with a cold item,
`cold_valid` = the one before it, each with everything the user did before it as
history. The model never trains on a cold item; it does train on the warm items
around it (the usual item-cold-start protocol: the target is what is unseen).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .dataset import Examples, SequenceData
from .processing import MIN_SEQUENCE_LENGTH, leave_one_out

COLD_VALID, COLD_TEST = "cold_valid", "cold_test"


def cold_target_examples(sequences: list[np.ndarray], cold: np.ndarray, from_end: int) -> Examples:
    """Per sequence, its `from_end`-th last position (1 = last) holding a cold item, history non-empty."""
    seq_index, position = [], []
    for s, seq in enumerate(sequences):
        where = np.flatnonzero(cold[seq[1:]]) + 1
        if where.shape[0] >= from_end:
            seq_index.append(s)
            position.append(int(where[-from_end]))
    return Examples(sequences, np.asarray(seq_index, dtype=np.int64), np.asarray(position, dtype=np.int64))


def cold_start_split(data: SequenceData, fraction: float = 0.2, seed: int = 0) -> tuple[SequenceData, np.ndarray]:
    """`data` with a random `fraction` of its items removed from every training part of every sequence.

    The last two items of each sequence (the validation and test targets) are
    kept as they are, so cold items stay reachable at evaluation; the test
    history sees a cold item only when it is the validation target. Users
    whose whole training part was cold are dropped (they have no training
    example left). `extra_eval` holds the cold-target sets (module docstring).
    Returns the new data and the cold mask, bool [num_items + 1].
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold-start fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    num_cold = max(1, int(round(fraction * data.num_items)))
    cold = np.zeros(data.num_items + 1, dtype=bool)
    cold[rng.choice(np.arange(1, data.num_items + 1), size=num_cold, replace=False)] = True

    sequences, originals, users = [], [], []
    for seq, user in zip(data.sequences, data.user_ids, strict=True):
        train_part = seq[:-2][~cold[seq[:-2]]]
        if train_part.shape[0] + 2 < MIN_SEQUENCE_LENGTH:
            continue
        sequences.append(np.concatenate([train_part, seq[-2:]]).astype(np.int64))
        originals.append(seq)
        users.append(user)
    train, valid, test = leave_one_out(sequences)
    extra = {COLD_VALID: cold_target_examples(originals, cold, 2), COLD_TEST: cold_target_examples(originals, cold, 1)}
    manifest = {**data.manifest, "cold_start": {"fraction": fraction, "seed": seed, "cold_items": num_cold,
                                                "dropped_users": data.num_users - len(users),
                                                **{f"{k}_examples": len(v) for k, v in extra.items()}}}
    if "key" in manifest:
        manifest["key"] = f"{manifest['key']}-cold{fraction:g}-s{seed}"
    split = replace(data, user_ids=users, sequences=sequences, train=train, valid=valid, test=test,
                    manifest=manifest, extra_eval=extra)
    return split, cold
