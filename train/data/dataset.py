"""In-memory form of a processed sequential-recommendation dataset.

Examples are stored as (sequence index, target position) pairs over shared
per-user sequences instead of materialised prefixes: every training prefix of
MovieLens would otherwise be copied, and evaluation needs the *full* history
(for history exclusion and short/long breakdowns) while models only read the
last `max_len` items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD_ID = 0
PAD_TOKEN = "[PAD]"


@dataclass
class Examples:
    """Next-item examples: target = sequences[s][p], history = sequences[s][:p]."""

    sequences: list[np.ndarray]
    seq_index: np.ndarray  # int64 [n]
    position: np.ndarray  # int64 [n], >= 1

    def __len__(self) -> int:
        return int(self.seq_index.shape[0])

    @property
    def targets(self) -> np.ndarray:
        return np.fromiter(
            (self.sequences[s][p] for s, p in zip(self.seq_index, self.position, strict=True)),
            dtype=np.int64,
            count=len(self),
        )

    @property
    def history_lengths(self) -> np.ndarray:
        """Full (untruncated) history length of every example."""
        return self.position.astype(np.int64).copy()

    def history(self, i: int, max_len: int | None = None) -> np.ndarray:
        s, p = int(self.seq_index[i]), int(self.position[i])
        start = 0 if max_len is None else max(0, p - max_len)
        return self.sequences[s][start:p]

    def batch(
        self, idx: np.ndarray, max_len: int, padding: str = "left"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded histories [B, max_len], their lengths [B] and targets [B].

        Only the last `max_len` items of each history are kept.
        """
        if padding not in ("left", "right"):
            raise ValueError(f"padding must be 'left' or 'right', got {padding!r}")
        idx = np.asarray(idx, dtype=np.int64)
        hist = np.full((idx.shape[0], max_len), PAD_ID, dtype=np.int64)
        lengths = np.empty(idx.shape[0], dtype=np.int64)
        targets = np.empty(idx.shape[0], dtype=np.int64)
        for row, i in enumerate(idx):
            h = self.history(int(i), max_len)
            n = h.shape[0]
            lengths[row] = n
            targets[row] = self.sequences[int(self.seq_index[i])][int(self.position[i])]
            if padding == "left":
                hist[row, max_len - n :] = h
            else:
                hist[row, :n] = h
        return hist, lengths, targets

    def windows(self, max_len: int, last_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All-position training windows: inputs [W, max_len], next-item targets [W, max_len] and the sequence
        each window comes from [W].

        Every sequence is cut, from its last example backwards, into windows of
        max_len inputs; the target at each input position is the following item
        and 0 marks padding. Right padded. Each target item of a sequence up to
        its last example's position appears exactly once, with the (up to)
        max_len items before it that share its window as history. `last_only`: the
        last window of each sequence alone (LLMEmb trains on each user's last
        max_len training items).
        """
        last: dict[int, int] = {}
        for s, p in zip(self.seq_index.tolist(), self.position.tolist(), strict=True):
            last[s] = max(last.get(s, 0), p)
        inputs, targets, owners = [], [], []
        for s, p in last.items():
            seq = self.sequences[s]
            end = p + 1
            while end > 1:
                start = max(0, end - max_len - 1)
                window = seq[start:end]
                row_in = np.zeros(max_len, dtype=np.int64)
                row_out = np.zeros(max_len, dtype=np.int64)
                row_in[: len(window) - 1] = window[:-1]
                row_out[: len(window) - 1] = window[1:]
                inputs.append(row_in)
                targets.append(row_out)
                owners.append(s)
                end = 1 if last_only else start + 1
        if not inputs:
            return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64), np.zeros(0, np.int64)
        return np.stack(inputs), np.stack(targets), np.asarray(owners, dtype=np.int64)

    def training_items(self, num_items: int) -> np.ndarray:
        """Bool [sequences, num_items + 1]: the items of each sequence up to its last training position (what
        LLMEmb's negative sampling excludes for that user)."""
        out = np.zeros((len(self.sequences), num_items + 1), dtype=bool)
        for s, p in zip(self.seq_index.tolist(), self.position.tolist(), strict=True):
            out[s, self.sequences[s][: p + 1]] = True
        out[:, 0] = False
        return out


@dataclass
class SequenceData:
    """A processed dataset: internal item ids 1..num_items, 0 is padding."""

    name: str
    num_items: int
    item_ids: list[str]  # raw id of every internal id; item_ids[0] == PAD_TOKEN
    user_ids: list[str]  # raw user id of every sequence
    sequences: list[np.ndarray]  # chronological internal item ids per user
    train: Examples
    valid: Examples
    test: Examples
    # column -> value per internal id ("" for row 0)
    item_features: dict[str, list[str]] = field(default_factory=dict)
    # column -> RecBole type (token, token_seq, float, ...)
    feature_types: dict[str, str] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    # named evaluation sets beside valid/test, e.g. the cold-start split's cold-target cases
    # ("cold_valid" is reported with validation, every other one with test)
    extra_eval: dict[str, Examples] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def user_counts(self) -> np.ndarray:
        """How many users have each item anywhere in their sequence (all splits), [num_items + 1]: LLMEmb's item
        popularity for its long-tail groups."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for seq in self.sequences:
            counts[np.unique(seq)] += 1
        return counts

    def train_item_counts(self) -> np.ndarray:
        """Training popularity: how often each item is a training target, [num_items + 1]."""
        return np.bincount(self.train.targets, minlength=self.num_items + 1).astype(np.int64)
