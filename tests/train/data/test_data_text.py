"""Item text builders (LLM2Rec titles, LLMEmb attribute prompts)."""

from __future__ import annotations

import pytest

from train.data import DataConfig, attribute_texts, item_attributes, title_texts
from train.data.atomic import read_atomic
from train.data.processing import process
from train.data.text import format_attributes

ITEM_HEADER = (
    "item_id:token",
    "movie_title:token_seq",
    "release_year:token",
    "class:token_seq",
    "box_office_rank:float",
)
ITEMS = [
    ("m1", "Toy Story", "1995", "Animation Children's Comedy", "3"),
    ("m2", "Heat", "", "Action  Crime", ""),
]
ROWS = [("u", "m1", 5, 1), ("u", "m2", 5, 2), ("u", "m3", 5, 3)]  # m3 has no .item row


@pytest.fixture
def data(make_atomic):
    return process(
        read_atomic(make_atomic("txt", ROWS, ITEMS, item_header=ITEM_HEADER)), DataConfig(k_core=0)
    )


def test_title_texts(data) -> None:
    assert title_texts(data) == ["", "Toy Story", "Heat", ""]
    assert title_texts(data, field="release_year") == ["", "1995", "", ""]
    with pytest.raises(ValueError, match="no item feature 'plot'"):
        title_texts(data, field="plot")


def test_item_attributes(data) -> None:
    pairs = item_attributes(data)
    assert pairs[0] == []
    assert pairs[1] == [
        ("title", "Toy Story"), ("release year", "1995"),
        ("genres", "Animation, Children's, Comedy"), ("box office rank", "3"),
    ]  # fmt: skip
    assert pairs[2] == [("title", "Heat"), ("genres", "Action, Crime")]  # empty values skipped
    assert pairs[3] == []
    assert item_attributes(data, fields=["class", "movie_title"], names={"class": "genre"})[1] == [
        ("genre", "Animation, Children's, Comedy"), ("title", "Toy Story"),
    ]  # fmt: skip


def test_attribute_texts(data) -> None:
    texts = attribute_texts(data, fields=["movie_title", "release_year", "class"])
    assert texts == [
        "",
        "The movie item has the following attributes: \n title is Toy Story; release year is 1995; "
        "genres is Animation, Children's, Comedy",
        "The movie item has the following attributes: \n title is Heat; genres is Action, Crime",
        "The movie item has the following attributes:",
    ]
    assert attribute_texts(data, domain="film", fields=["movie_title"])[2] == (
        "The film item has the following attributes: \n title is Heat"
    )
    assert format_attributes("book", [("author", "X"), ("year", "1")]) == (
        "The book item has the following attributes: \n author is X; year is 1"
    )


def test_no_title_column(make_atomic) -> None:
    folder = make_atomic("notitle", ROWS, [("m1", "x")], item_header=("item_id:token", "plot:token_seq"))
    data = process(read_atomic(folder), DataConfig(k_core=0))
    with pytest.raises(ValueError, match=r"no title column.*\['plot'\]"):
        title_texts(data)


def test_recipe_texts_follow_the_columns(data) -> None:
    from llmrec.itemtext import ItemText
    from train.data.text import recipe_texts

    assert recipe_texts(data, ItemText("title-year-genres")) == [
        "", "Toy Story (1995); genres: Animation, Children's, Comedy", "Heat; genres: Action, Crime", ""]
    assert recipe_texts(data, ItemText("title-year"))[1] == "Toy Story (1995)"
