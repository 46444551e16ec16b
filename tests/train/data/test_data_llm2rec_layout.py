"""Reading LLM2Rec's pre-split downstream layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.data import PAD_TOKEN, load_dataset, title_texts
from train.data.llm2rec_layout import read_llm2rec

TRAIN = "1 2\n1 2 3\n"
VALID = "1 2 3 4\n"
TEST = "1 2 3 4 5\n2 4\n"
TITLES = {"1": "Alpha", "2": "Beta", "3": "Gamma", "4": "Delta", "5": "Epsilon", "7": "Eta"}


def _folder(tmp_path: Path, titles: object, name: str = "Games", **files: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    contents = {"train_data.txt": TRAIN, "val_data.txt": VALID, "test_data.txt": TEST, **files}
    for filename, text in contents.items():
        (folder / filename).write_text(text)
    (folder / "item_titles.json").write_text(json.dumps(titles))
    return folder


def _check(data) -> None:
    assert data.name == "Games"
    assert data.num_items == 7  # max over files (5) and titles (7)
    assert data.item_ids == [PAD_TOKEN, "1", "2", "3", "4", "5", "6", "7"]
    assert data.user_ids == ["1", "2"]  # test file line numbers
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3, 4, 5], [2, 4]]
    assert data.test.sequences is data.sequences
    assert data.train.position.tolist() == [1, 2] and data.train.targets.tolist() == [2, 3]
    assert [data.train.history(i).tolist() for i in range(2)] == [[1], [1, 2]]
    assert data.valid.targets.tolist() == [4] and data.valid.history(0).tolist() == [1, 2, 3]
    assert data.test.position.tolist() == [4, 1] and data.test.targets.tolist() == [5, 4]
    assert data.test.history(1).tolist() == [2]
    assert data.item_features["title"] == ["", "Alpha", "Beta", "Gamma", "Delta", "Epsilon", "", "Eta"]
    assert title_texts(data) == data.item_features["title"]


def test_titles_as_object(tmp_path: Path) -> None:
    _check(read_llm2rec(_folder(tmp_path, TITLES)))


def test_titles_as_list_with_padding_slot(tmp_path: Path) -> None:
    titles = ["[PAD]", "Alpha", "Beta", "Gamma", "Delta", "Epsilon", None, "Eta"]
    _check(read_llm2rec(_folder(tmp_path, titles)))


def test_round_trip_through_cache(tmp_path: Path) -> None:
    folder = _folder(tmp_path, TITLES)
    first = load_dataset(folder, cache_dir=tmp_path / "cache")
    again = load_dataset(folder, cache_dir=tmp_path / "cache")
    _check(first)
    _check(again)
    assert again.manifest == first.manifest
    assert first.manifest["parameters"] == {}  # taken as is
    assert first.manifest["storage"] == {"train": "own", "valid": "own", "test": "shared"}
    assert first.manifest["counts"]["train_examples"] == 2
    assert {f["name"] for f in first.manifest["source"]["files"]} == {
        "train_data.txt", "val_data.txt", "test_data.txt", "item_titles.json",
    }  # fmt: skip
    assert isinstance(again.train.sequences[0], np.ndarray)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("1 2\n1 x 3\n", r"train_data\.txt: line 2: item id 'x' is not an integer"),
        ("1 2.5\n", r"train_data\.txt: line 1: item id '2\.5' is not an integer"),
        ("1 2\n\n0 3\n", r"train_data\.txt: line 3: item id 0 < 1"),
        ("1 2\n3\n", r"train_data\.txt: line 2: needs at least 2 item ids"),
    ],
)
def test_bad_lines(tmp_path: Path, train: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_llm2rec(_folder(tmp_path, TITLES, **{"train_data.txt": train}))


def test_missing_titles(tmp_path: Path) -> None:
    titles = {k: v for k, v in TITLES.items() if k != "3"}
    with pytest.raises(
        ValueError, match=r"item_titles\.json: no title for 1 item id\(s\) used in the splits: 3"
    ):
        read_llm2rec(_folder(tmp_path, titles))
    # A list without the padding slot shifts every title and leaves the largest id untitled.
    with pytest.raises(ValueError, match="no title"):
        read_llm2rec(_folder(tmp_path, ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"], name="Shifted"))


def test_bad_titles_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an integer item id"):
        read_llm2rec(_folder(tmp_path, {"one": "Alpha"}, name="A"))
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_llm2rec(_folder(tmp_path, "Alpha", name="B"))
