"""Length-grouped, seeded batches that are a pure function of (seed, batch index).

Why: padding a batch to its longest text wastes compute, so texts of similar
length should share a batch; but batches must still be shuffled, and a resumed
run must see exactly the batches an uninterrupted run would have seen. Here the
batch with global index `b` is computed from the seed and `b` alone (no sampler
state to checkpoint): epoch `e = b // batches_per_epoch` shuffles all indices
with `seed + e`, cuts them into chunks of `bucket_batches` batches, sorts every
chunk by length, splits it into batches and shuffles the order of the batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class LengthGroupedBatches:
    """Batches of `batch_size` sample indices, grouped by length, cycling over epochs forever.

    A dataset smaller than one batch yields all of its indices every time.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, bucket_batches: int = 16) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("no training samples")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = min(int(batch_size), len(self.lengths))
        self.seed = int(seed)
        self.bucket_batches = max(1, int(bucket_batches))
        self.per_epoch = len(self.lengths) // self.batch_size  # the incomplete last batch is dropped
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def _batches_of_epoch(self, epoch: int) -> list[np.ndarray]:
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))[: self.per_epoch * self.batch_size]
        chunk = self.batch_size * self.bucket_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._epoch = (epoch, batches)
        return batches

    def batch(self, index: int) -> np.ndarray:
        """Sample indices of global batch `index` (0-based)."""
        epoch, within = divmod(int(index), self.per_epoch)
        return self._batches_of_epoch(epoch)[within]
