"""The cold-start split: cold items leave every training part and stay valid/test targets."""

from __future__ import annotations

import numpy as np
import pytest

from train.data.cold import cold_start_split


def test_cold_items_never_train_but_stay_targets(planted_data) -> None:
    split, cold = cold_start_split(planted_data, fraction=0.25, seed=3)
    assert cold.shape == (planted_data.num_items + 1,) and not cold[0]
    assert cold.sum() == round(0.25 * planted_data.num_items)
    # no cold item is a training target or inside a training history
    counts = split.train_item_counts()
    assert (counts[cold] == 0).all()
    for s in set(split.train.seq_index.tolist()):
        last_train = split.train.position[split.train.seq_index == s].max()
        assert not cold[split.sequences[s][: last_train + 1]].any()
    # validation and test targets are the original ones, user by user
    by_user = dict(zip(planted_data.user_ids, planted_data.sequences, strict=True))
    for user, seq in zip(split.user_ids, split.sequences, strict=True):
        np.testing.assert_array_equal(seq[-2:], by_user[user][-2:])
        original = by_user[user][:-2]
        np.testing.assert_array_equal(seq[:-2], original[~cold[original]])
    assert cold[split.test.targets].any(), "some test targets should be cold with a quarter of the items cold"
    assert split.manifest["cold_start"]["cold_items"] == int(cold.sum())
    # the same seed draws the same items
    np.testing.assert_array_equal(cold_start_split(planted_data, 0.25, seed=3)[1], cold)


def test_cold_fraction_is_validated(planted_data) -> None:
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            cold_start_split(planted_data, bad)


def test_cold_target_sets_hold_each_users_last_cold_interactions(planted_data) -> None:
    from train.data.cold import COLD_TEST, COLD_VALID

    split, cold = cold_start_split(planted_data, fraction=0.25, seed=3)
    test, valid = split.extra_eval[COLD_TEST], split.extra_eval[COLD_VALID]
    assert len(test) > len(valid) > 0
    assert cold[test.targets].all() and cold[valid.targets].all()
    by_user = dict(zip(planted_data.user_ids, planted_data.sequences, strict=True))
    for i in range(len(test)):
        s, p = int(test.seq_index[i]), int(test.position[i])
        seq = by_user[split.user_ids[s]]
        np.testing.assert_array_equal(test.sequences[s], seq)  # the original sequence, cold items kept
        assert p >= 1 and not cold[seq[p + 1:]].any()  # nothing cold after the last cold interaction
    for i in range(len(valid)):  # the cold interaction before the test one, of the same user
        s = int(valid.seq_index[i])
        j = int(np.flatnonzero(test.seq_index == s)[0])
        assert valid.position[i] < test.position[j]
        seq = valid.sequences[s]
        assert cold[seq[valid.position[i] + 1: test.position[j]]].sum() == 0
    counts = split.manifest["cold_start"]
    assert counts["cold_test_examples"] == len(test) and counts["cold_valid_examples"] == len(valid)
