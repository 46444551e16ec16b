"""ItemStore: row -> Item and catalogue id -> row, JSON persistence, and saving it inside an index snapshot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.index import Item, ItemIndex, ItemStore, SnapshotError


def items(n: int = 3) -> list[Item]:
    return [Item(id=i, title=f"Movie {i}", attributes={"genres": "Drama"}, key=str(100 + i))
            for i in range(1, n + 1)]


def test_upsert_get_delete():
    store = ItemStore(items())
    assert len(store) == 3 and 2 in store and 4 not in store and "x" not in store
    got = store.get(np.array([3, -1, 1, 99]))
    assert [g.title if g else None for g in got] == ["Movie 3", None, "Movie 1", None]
    store.upsert([Item(2, "Renamed", {}, "102"), Item(10, "New", {}, "tt10")])
    assert store.get([2])[0] == Item(2, "Renamed", {}, "102") and len(store) == 4
    assert store.rows_of(["101", "102", "tt10", "nope"]) == [1, 2, 10, None]
    assert store.delete([2, 2, 77]) == 1 and 2 not in store and store.rows_of(["102"]) == [None]
    np.testing.assert_array_equal(store.ids(), [1, 3, 10])


def test_keys_map_to_one_row_each():
    store = ItemStore(items())
    store.upsert([Item(1, "Movie 1 again", {}, "renamed-101")])  # a row's key may change...
    assert store.rows_of(["101", "renamed-101"]) == [None, 1]
    with pytest.raises(ValueError, match=r"already held by other rows: \[\('102', 2\)\]"):
        store.upsert([Item(7, "x", {}, "102")])  # ...but a key names one row
    with pytest.raises(ValueError, match="duplicate item keys"):
        store.upsert([Item(7, "x", {}, "k"), Item(8, "y", {}, "k")])
    assert Item(5, "no key").key == "" and ItemStore([Item(5, "no key")]).get([5])[0].key == "5"
    legacy = ItemStore([Item(6, "v1 store", {"raw_id": "242"})])  # llmrec.items/1: the raw id was an attribute
    assert legacy.rows_of(["242"]) == [6]


def test_store_keeps_its_own_copy_and_validates():
    item = Item(1, "A", {"k": "v"})
    store = ItemStore([item])
    item.attributes["k"] = "changed"
    assert store.get([1])[0].attributes == {"k": "v"}
    with pytest.raises(ValueError, match="duplicate item ids in one upsert: \\[1\\]"):
        store.upsert([Item(1, "a"), Item(1, "b")])
    with pytest.raises(ValueError, match="> 0"):
        store.upsert([Item(0, "pad")])
    with pytest.raises(ValueError, match="strings to strings"):
        store.upsert([Item(5, "x", {"year": 1995})])  # type: ignore[dict-item]


def test_save_load_round_trip(tmp_path):
    store = ItemStore(items() + [Item(9, "Amélie (2001)", {}, "x9")])
    path = store.save(tmp_path / "store")
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert obj["format"] == "llmrec.items/2" and obj["count"] == 4 and [e["id"] for e in obj["items"]] == [1, 2, 3, 9]
    assert [e["key"] for e in obj["items"]] == ["101", "102", "103", "x9"]
    loaded = ItemStore.load(tmp_path / "store")
    assert loaded.get([1, 2, 3, 9]) == store.get([1, 2, 3, 9]) and loaded.rows_of(["x9"]) == [9]
    path.write_text(json.dumps({"format": "llmrec.items/1", "count": 1,  # written before keys existed
                                "items": [{"id": 4, "title": "Kolya", "attributes": {"raw_id": "242"}}]}))
    assert ItemStore.load(tmp_path / "store").rows_of(["242"]) == [4]
    path.write_text('{"format": "something else"}')
    with pytest.raises(SnapshotError, match="format 'something else'"):
        ItemStore.load(tmp_path / "store")
    with pytest.raises(SnapshotError, match="not found"):
        ItemStore.load(tmp_path / "missing")


def test_store_inside_index_snapshot(tmp_path):
    store = ItemStore(items())
    index = ItemIndex(4)
    index.upsert(np.array([1, 2, 3]), np.eye(3, 4, dtype=np.float32))
    manifest = index.save(tmp_path / "snap", store=store)
    assert "store.json" in manifest["files"]
    assert ItemStore.load(tmp_path / "snap").get([2])[0].title == "Movie 2"
    with pytest.raises(ValueError, match="ItemIndex.save"):
        store.save(tmp_path / "snap")  # would break the snapshot's checksum
    (tmp_path / "snap" / "store.json").write_text(json.dumps(ItemStore().to_json()))
    with pytest.raises(SnapshotError, match="corrupt"):
        ItemStore.load(tmp_path / "snap")
    with pytest.raises(SnapshotError, match="store.json has sha256"):
        ItemIndex.load(tmp_path / "snap")


def test_assigned_ids_never_take_a_name_in_use_or_given_in_the_same_batch():
    from serving.index.catalog import allocate

    store = ItemStore(items())  # keys "101".."103", rows 1..3
    store.upsert([Item(4, "taken", {}, "new-5")])
    rows, keys = allocate(5, ["", "new-6", "102", ""], store)
    assert rows == [5, 6, 2, 7]  # a new key and empty keys get new rows, a key in use keeps its row
    assert keys == ["new-5-1", "new-6", "102", "new-7"]
