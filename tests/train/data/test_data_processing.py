"""k-core filtering, chronological order, id remapping and the leave-one-out split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.data import PAD_ID, PAD_TOKEN, DataConfig, Examples
from train.data.atomic import read_atomic
from train.data.processing import chronological_order, first_appearance_codes, k_core_mask, process

# k = 3 (users need >= 3, items >= 3):
#   u1: a b c      u2: a b c      u3: a b c      u4: a b d      u5: d e
# Pass 1: u5 has 2 interactions, d has 2 (u4, u5), e has 1 -> u5, d, e removed.
#         u4 is left with a b (2 interactions).
# Pass 2: u4 < 3 -> removed; a, b, c now have exactly 3 each (u1..u3).
# Pass 3: nothing changes. Result: u1..u3 x {a, b, c}, 9 interactions.
# A single pass would wrongly keep u4's (a, b).
KCORE_ROWS = [
    ("u1", "a"), ("u1", "b"), ("u1", "c"),
    ("u2", "a"), ("u2", "b"), ("u2", "c"),
    ("u3", "a"), ("u3", "b"), ("u3", "c"),
    ("u4", "a"), ("u4", "b"), ("u4", "d"),
    ("u5", "d"), ("u5", "e"),
]  # fmt: skip


def test_k_core_needs_a_second_pass() -> None:
    users, _ = first_appearance_codes([u for u, _ in KCORE_ROWS])
    items, _ = first_appearance_codes([i for _, i in KCORE_ROWS])
    keep = k_core_mask(users, items, 3, 3)
    kept = [row for row, k in zip(KCORE_ROWS, keep, strict=True) if k]
    assert kept == KCORE_ROWS[:9]


def test_k_core_through_process(make_atomic) -> None:
    rows = [(u, i, 5, t) for t, (u, i) in enumerate(KCORE_ROWS)]
    data = process(read_atomic(make_atomic("kc", rows)), DataConfig(k_core=3))
    assert data.user_ids == ["u1", "u2", "u3"]
    assert data.item_ids == [PAD_TOKEN, "a", "b", "c"]
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3]] * 3


def _naive_core(rows: list[tuple[int, int]], user_min: int, item_min: int) -> list[int]:
    """Remove one offending row at a time with Counters until none is left (slow but obvious)."""
    alive = list(range(len(rows)))
    while True:
        users = Counter(rows[r][0] for r in alive)
        items = Counter(rows[r][1] for r in alive)
        bad = [r for r in alive if users[rows[r][0]] < user_min or items[rows[r][1]] < item_min]
        if not bad:
            return alive
        alive.remove(bad[0])


@settings(max_examples=150, deadline=None, database=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=60),
    user_min=st.integers(0, 5),
    item_min=st.integers(0, 5),
)
def test_k_core_matches_naive_fixpoint(rows: list[tuple[int, int]], user_min: int, item_min: int) -> None:
    keep = k_core_mask(np.array([u for u, _ in rows]), np.array([i for _, i in rows]), user_min, item_min)
    assert np.flatnonzero(keep).tolist() == _naive_core(rows, user_min, item_min)


# Tiny dataset, k_core=0 (no k-core; users still need 3 interactions for a split).
# file line: user item rating timestamp
TINY = [
    ("u1", "i10", 5, 300),  # line 2
    ("u2", "i20", 4, 100),  # line 3
    ("u1", "i30", 3, 100),  # line 4
    ("u1", "i20", 4, 200),  # line 5
    ("u2", "i10", 2, 100),  # line 6  (ties with line 3 -> after i20)
    ("u1", "i40", 5, 200),  # line 7  (ties with line 5 -> after i20)
    ("u2", "i30", 1, 50),  # line 8
    ("u2", "i40", 3, 400),  # line 9
    ("u3", "i50", 5, 1),  # line 10
    ("u3", "i10", 5, 2),
    ("u3", "i20", 5, 3),
    ("u3", "i30", 5, 4),
    ("u3", "i40", 5, 5),
    ("u4", "i60", 5, 1),  # u4 has only 2 interactions -> dropped, and i60 with it
    ("u4", "i10", 5, 2),
]
# Item ids by first appearance in the file: i10=1, i20=2, i30=3, i40=4, i50=5 (i60 dropped).
# u1 by time: i30(100) i20(200,line5) i40(200,line7) i10(300) -> [3, 2, 4, 1]
# u2 by time: i30(50) i20(100,line3) i10(100,line6) i40(400)  -> [3, 2, 1, 4]
# u3: [5, 1, 2, 3, 4]


@pytest.fixture
def tiny(make_atomic):
    return process(read_atomic(make_atomic("tiny", TINY)), DataConfig(k_core=0))


def test_ids_and_chronological_order(tiny) -> None:
    assert tiny.item_ids == [PAD_TOKEN, "i10", "i20", "i30", "i40", "i50"]
    assert tiny.num_items == 5
    assert tiny.user_ids == ["u1", "u2", "u3"]
    assert [s.tolist() for s in tiny.sequences] == [[3, 2, 4, 1], [3, 2, 1, 4], [5, 1, 2, 3, 4]]
    assert all(PAD_ID not in s for s in tiny.sequences)


def test_remapping_is_deterministic(make_atomic) -> None:
    # Same rows in the same file order -> identical ids, independent of anything else.
    a = process(read_atomic(make_atomic("a", TINY)), DataConfig(k_core=0))
    b = process(read_atomic(make_atomic("b", TINY)), DataConfig(k_core=0))
    assert a.item_ids == b.item_ids and [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]


def test_leave_one_out(tiny) -> None:
    # Training: positions 1..n-3 of every user (u1, u2: n=4 -> {1}; u3: n=5 -> {1, 2}).
    assert tiny.train.seq_index.tolist() == [0, 1, 2, 2]
    assert tiny.train.position.tolist() == [1, 1, 1, 2]
    assert tiny.train.targets.tolist() == [2, 2, 1, 2]
    assert [tiny.train.history(i).tolist() for i in range(4)] == [[3], [3], [5], [5, 1]]
    # Validation n-2, test n-1.
    assert tiny.valid.position.tolist() == [2, 2, 3]
    assert tiny.valid.targets.tolist() == [4, 1, 3]
    assert tiny.valid.history(2).tolist() == [5, 1, 2]
    assert tiny.test.position.tolist() == [3, 3, 4]
    assert tiny.test.targets.tolist() == [1, 4, 4]
    assert tiny.test.history(0).tolist() == [3, 2, 4]
    assert tiny.test.history(2).tolist() == [5, 1, 2, 3]
    # Position 0 is never a target.
    for ex in (tiny.train, tiny.valid, tiny.test):
        assert ex.position.min() >= 1


def test_min_rating_drops_low_ratings(make_atomic) -> None:
    # Ratings < 3 removed: u2 loses i10 (2) and i30 (1) -> 2 left -> dropped.
    data = process(read_atomic(make_atomic("r", TINY)), DataConfig(k_core=0, min_rating=3))
    assert data.user_ids == ["u1", "u3"]
    assert [s.tolist() for s in data.sequences] == [[3, 2, 4, 1], [5, 1, 2, 3, 4]]


def test_stable_ties_helper() -> None:
    user = np.array([1, 0, 1, 0, 1])
    ts = np.array([5.0, 2.0, 5.0, 1.0, 4.0])
    assert chronological_order(user, ts).tolist() == [3, 1, 4, 0, 2]
    assert chronological_order(user, None).tolist() == [1, 3, 0, 2, 4]


def test_file_order_when_allowed(make_atomic) -> None:
    rows = [("u", "x"), ("u", "y"), ("u", "z"), ("v", "x"), ("v", "z"), ("v", "y")]
    folder = make_atomic("fo", rows, inter_header=("user_id:token", "item_id:token"))
    data = process(read_atomic(folder, allow_file_order=True), DataConfig(k_core=0, allow_file_order=True))
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3], [1, 3, 2]]


def test_batch_padding_and_truncation() -> None:
    ex = Examples([np.array([1, 2, 3, 4, 5])], np.array([0, 0]), np.array([4, 1]))
    hist, lengths, targets = ex.batch(np.array([0, 1]), max_len=3, padding="left")
    assert hist.tolist() == [[2, 3, 4], [0, 0, 1]]
    assert lengths.tolist() == [3, 1] and targets.tolist() == [5, 2]
    hist, lengths, targets = ex.batch(np.array([1, 0]), max_len=3, padding="right")
    assert hist.tolist() == [[1, 0, 0], [2, 3, 4]]
    assert lengths.tolist() == [1, 3] and targets.tolist() == [2, 5]
    assert ex.history_lengths.tolist() == [4, 1]  # untruncated
    with pytest.raises(ValueError, match="padding"):
        ex.batch(np.array([0]), 3, padding="middle")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="k_core"):
        DataConfig(k_core=-1)
    assert DataConfig(min_rating=4).min_rating == 4.0
