"""Reading RecBole atomic files and the errors bad input produces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.data import DataConfig, load_dataset
from train.data.atomic import read_atomic, read_inter, read_items
from train.data.processing import process


def test_reads_columns_types_and_raw_strings(make_atomic) -> None:
    folder = make_atomic(
        "m",
        [("1", "10", "4", "100"), ("1", "11", "", "90")],
        [("10", "Toy   Story", " 1995 ", "Animation Children's"), ("11", "Heat", "1995", "")],
    )
    data = read_atomic(folder)
    assert data.name == "m"
    assert data.inter.users == ["1", "1"] and data.inter.items == ["10", "11"]
    assert data.inter.timestamps.tolist() == [100.0, 90.0]
    assert data.inter.ratings[0] == 4.0 and np.isnan(data.inter.ratings[1])  # empty rating -> NaN
    assert data.items.feature_types == {
        "movie_title": "token_seq",
        "release_year": "token",
        "class": "token_seq",
    }
    assert data.items.features["movie_title"] == {"10": "Toy Story", "11": "Heat"}
    assert data.items.features["release_year"]["10"] == "1995"
    assert data.items.features["class"] == {"10": "Animation Children's", "11": ""}


def test_item_file_is_optional(make_atomic) -> None:
    data = read_atomic(make_atomic("noitem", [("1", "10", "4", "100")]))
    assert data.items.features == {} and data.items.path is None


def test_missing_inter_column_is_named(make_atomic) -> None:
    folder = make_atomic(
        "nocol", [("1", "4", "100")], inter_header=("user_id:token", "rating:float", "timestamp:float")
    )
    with pytest.raises(ValueError, match=r"nocol\.inter.*'item_id' is missing"):
        read_atomic(folder)


def test_missing_timestamp_needs_permission(make_atomic) -> None:
    folder = make_atomic("nots", [("1", "10")], inter_header=("user_id:token", "item_id:token"))
    with pytest.raises(ValueError, match=r"nots\.inter.*'timestamp' is missing.*allow_file_order"):
        read_inter(folder / "nots.inter")
    assert read_inter(folder / "nots.inter", allow_file_order=True).timestamps is None


def test_non_numeric_timestamp_names_the_line(make_atomic) -> None:
    folder = make_atomic(
        "badts", [("1", "10", "4", "100"), ("1", "11", "4", "yesterday"), ("1", "12", "4", "5")]
    )
    with pytest.raises(ValueError, match=r"badts\.inter: line 3: column 'timestamp' value 'yesterday'"):
        read_atomic(folder)


def test_empty_timestamp_names_the_line(make_atomic) -> None:
    folder = make_atomic("emptyts", [("1", "10", "4", "100"), ("1", "11", "4", "")])
    with pytest.raises(ValueError, match=r"line 3: empty value in column 'timestamp'"):
        read_atomic(folder)


def test_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n\n1\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.inter: line 4: expected 3 tab-separated fields, found 2"):
        read_inter(path)


def test_bad_header(tmp_path: Path, write_table) -> None:
    path = write_table(tmp_path / "h.inter", ("user_id:token", "item_id:int"), [])
    with pytest.raises(ValueError, match=r"h\.inter: line 1: column 'item_id' has unknown type 'int'"):
        read_inter(path)
    path = write_table(tmp_path / "h2.inter", ("user_id", "item_id:token"), [])
    with pytest.raises(ValueError, match="not of the form 'name:type'"):
        read_inter(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.inter"):
        read_inter(tmp_path / "missing.inter")


def test_item_file_without_item_id(tmp_path: Path, write_table) -> None:
    path = write_table(tmp_path / "i.item", ("title:token_seq",), [("A",)])
    with pytest.raises(ValueError, match=r"i\.item.*'item_id' is missing"):
        read_items(path)


def test_repeated_item_rows_keep_the_first(tmp_path: Path, write_table) -> None:
    path = write_table(
        tmp_path / "d.item", ("item_id:token", "title:token_seq"), [("1", "First"), ("1", "Second")]
    )
    assert read_items(path).features["title"] == {"1": "First"}


def test_empty_after_filtering_names_k_core(make_atomic) -> None:
    folder = make_atomic("small", [("1", "10", "4", "1"), ("1", "11", "4", "2"), ("2", "10", "4", "3")])
    with pytest.raises(ValueError, match=r"after 10-core filtering.*3 interactions of 2 users and 2 items"):
        process(read_atomic(folder), DataConfig(k_core=10))


def test_empty_after_filtering_through_load_dataset(make_atomic, tmp_path: Path) -> None:
    folder = make_atomic("small2", [("1", "10", "4", "1")])
    with pytest.raises(ValueError, match="5-core"):
        load_dataset(folder, DataConfig(k_core=5), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "datasets").glob("small2-*"))  # nothing half-written


def test_min_rating_without_rating_column(make_atomic) -> None:
    folder = make_atomic(
        "norating", [("1", "10", "1")], inter_header=("user_id:token", "item_id:token", "timestamp:float")
    )
    with pytest.raises(ValueError, match="no 'rating' column"):
        process(read_atomic(folder), DataConfig(k_core=0, min_rating=3))


def test_reads_100k_lines_quickly(tmp_path: Path, write_table) -> None:
    import time

    rng = np.random.default_rng(0)
    rows = zip(
        rng.integers(0, 1000, 100_000),
        rng.integers(0, 2000, 100_000),
        rng.integers(0, 10**9, 100_000),
        strict=True,
    )
    write_table(tmp_path / "big.inter", ("user_id:token", "item_id:token", "timestamp:float"), list(rows))
    start = time.process_time()
    inter = read_inter(tmp_path / "big.inter")
    assert len(inter) == 100_000
    # CPU time, not wall time; ~0.5-1.2 s on these 2-core machines: the bound catches a per-line slowdown, not noise
    assert time.process_time() - start < 3.0
