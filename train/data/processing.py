"""Turn raw interactions into per-user sequences and leave-one-out examples.

The steps follow the usual sequential-recommendation protocol (SASRec,
LLM2Rec, LLMEmb): drop low ratings if asked, k-core filter users and items
until stable, order each user's interactions by time, remap ids so that 0 is
padding, and hold out the last item of each user for test and the one before
for validation. Every earlier position is a training target (every prefix),
which is how SASRec-style models are trained on the same data.

Determinism matters because cached embeddings are indexed by internal id:
  * users are numbered by first appearance in the `.inter` file;
  * internal item ids 1..N follow each surviving item's first appearance in the
    *raw* `.inter` file (before any filtering), so the mapping does not depend on
    tie-breaking inside the filters;
  * interactions with equal timestamps keep their file order (stable sort).

Users need at least 3 interactions (one training target plus valid and test).
With k_core < 3 that bound is folded into the k-core fixpoint (users >= max(k, 3),
items >= k), so dropping short users can never leave an item below k.
Repeated (user, item) interactions are kept and counted, as RecBole does for
sequential data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .atomic import AtomicData, Interactions
from .dataset import PAD_TOKEN, Examples, SequenceData

MIN_SEQUENCE_LENGTH = 3  # one training target needs position 1; valid and test take the last two


@dataclass(frozen=True)
class DataConfig:
    """Processing parameters; all of them are part of the cache key.

    k_core: users and items both need at least this many interactions (0 or 1: no filtering).
    min_rating: interactions rated below this are dropped before filtering (None: keep all).
    allow_file_order: accept a `.inter` without `timestamp`, taking the file order as time.
    """

    k_core: int = 5
    min_rating: float | None = None
    allow_file_order: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.k_core, bool) or not isinstance(self.k_core, int) or self.k_core < 0:
            raise ValueError(f"k_core must be a non-negative integer, got {self.k_core!r}")
        if self.min_rating is not None:
            # 4 and 4.0 must give the same cache key.
            object.__setattr__(self, "min_rating", float(self.min_rating))

    def to_dict(self) -> dict:
        return asdict(self)


def first_appearance_codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer code per value, codes numbered by first appearance; also the code -> value list."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def k_core_mask(user: np.ndarray, item: np.ndarray, user_min: int, item_min: int) -> np.ndarray:
    """Boolean mask of the interactions in the (user_min, item_min)-core.

    Users with fewer than `user_min` and items with fewer than `item_min`
    interactions are removed repeatedly, since every removal can push others
    below the threshold; the fixpoint (the largest subgraph meeting both
    thresholds) does not depend on the removal order.
    """
    keep = np.ones(user.shape[0], dtype=bool)
    n_users = int(user.max()) + 1 if user.size else 0
    n_items = int(item.max()) + 1 if item.size else 0
    while True:
        user_count = np.bincount(user[keep], minlength=n_users)
        item_count = np.bincount(item[keep], minlength=n_items)
        bad = keep & ((user_count[user] < user_min) | (item_count[item] < item_min))
        if not bad.any():
            return keep
        keep &= ~bad


def chronological_order(user: np.ndarray, timestamp: np.ndarray | None) -> np.ndarray:
    """Row order grouping users (by code) and sorting each user's rows by time, ties in file order."""
    if timestamp is None:
        return np.argsort(user, kind="stable")
    by_time = np.argsort(timestamp, kind="stable")
    return by_time[np.argsort(user[by_time], kind="stable")]


def leave_one_out(sequences: list[np.ndarray]) -> tuple[Examples, Examples, Examples]:
    """Train (positions 1..n-3), valid (n-2) and test (n-1) examples over shared sequences."""
    lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
    if (lengths < MIN_SEQUENCE_LENGTH).any():
        raise ValueError(f"leave-one-out needs sequences of length >= {MIN_SEQUENCE_LENGTH}")
    n_train = lengths - 2 - 1  # positions 1..n-3
    train_seq = np.repeat(np.arange(len(sequences), dtype=np.int64), n_train)
    starts = np.cumsum(n_train) - n_train
    train_pos = np.arange(int(n_train.sum()), dtype=np.int64) - np.repeat(starts, n_train) + 1
    all_seq = np.arange(len(sequences), dtype=np.int64)
    return (
        Examples(sequences, train_seq, train_pos),
        Examples(sequences, all_seq.copy(), lengths - 2),
        Examples(sequences, all_seq.copy(), lengths - 1),
    )


def process(atomic: AtomicData, config: DataConfig) -> SequenceData:
    """Filter, order, remap and split an atomic dataset (see the module docstring)."""
    inter: Interactions = atomic.inter
    if inter.timestamps is None and not config.allow_file_order:
        raise ValueError(
            f"{inter.path}: no 'timestamp' column; set allow_file_order=True to use the file order"
        )
    user_codes, raw_users = first_appearance_codes(inter.users)
    item_codes, raw_items = first_appearance_codes(inter.items)
    keep = np.ones(len(inter), dtype=bool)
    if config.min_rating is not None:
        if inter.ratings is None:
            raise ValueError(
                f"{inter.path}: min_rating={config.min_rating} given but the file has no 'rating' column"
            )
        keep &= inter.ratings >= config.min_rating  # NaN (empty) ratings are dropped too
    rows = np.flatnonzero(keep)
    # Users also need MIN_SEQUENCE_LENGTH interactions for a split; folding that into
    # the fixpoint keeps the item threshold true after short users are dropped.
    user_min = max(config.k_core, MIN_SEQUENCE_LENGTH)
    rows = rows[k_core_mask(user_codes[rows], item_codes[rows], user_min, config.k_core)]
    if rows.size == 0:
        raise ValueError(
            f"{inter.path}: no interactions left after {config.k_core}-core filtering "
            f"(users need >= {user_min}, items >= {config.k_core} interactions; "
            f"min_rating={config.min_rating}): before it {int(keep.sum())} interactions of "
            f"{len(np.unique(user_codes[keep]))} users and {len(np.unique(item_codes[keep]))} items"
        )

    # Items: internal id = rank of first appearance in the raw file among survivors (codes are that order).
    surviving_items = np.unique(item_codes[rows])  # sorted codes == first-appearance order
    item_map = np.zeros(len(raw_items), dtype=np.int64)
    item_map[surviving_items] = np.arange(1, surviving_items.size + 1, dtype=np.int64)
    item_ids = [PAD_TOKEN] + [raw_items[c] for c in surviving_items]

    order = chronological_order(
        user_codes[rows], None if inter.timestamps is None else inter.timestamps[rows]
    )
    rows = rows[order]
    users = user_codes[rows]
    items = item_map[item_codes[rows]]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    sequences = [np.ascontiguousarray(s) for s in np.split(items, boundaries)]
    user_order = users[np.concatenate([[0], boundaries])]
    user_ids = [raw_users[c] for c in user_order]
    train, valid, test = leave_one_out(sequences)

    features: dict[str, list[str]] = {}
    for column, values in atomic.items.features.items():
        features[column] = [""] + [values.get(raw, "") for raw in item_ids[1:]]
    return SequenceData(
        name=atomic.name,
        num_items=len(item_ids) - 1,
        item_ids=item_ids,
        user_ids=user_ids,
        sequences=sequences,
        train=train,
        valid=valid,
        test=test,
        item_features=features,
        feature_types=dict(atomic.items.feature_types),
    )
