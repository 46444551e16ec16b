"""Item-text recipes: the same text offline (dataset columns) and online (an upsert's title + attributes)."""

from __future__ import annotations

import pytest

from llmrec.itemtext import TEXT_KINDS, ItemText, canonical_attributes

TOY = [("title", "Toy Story"), ("release year", "1995"), ("genres", "Animation, Children's, Comedy"),
       ("box office rank", "3")]


@pytest.mark.parametrize(("kind", "expected"), [
    ("title", "Toy Story"),
    ("title-year", "Toy Story (1995)"),
    ("title-year-genres", "Toy Story (1995); genres: Animation, Children's, Comedy"),
    ("attributes", "The movie item has the following attributes: \n title is Toy Story; release year is 1995; "
                   "genres is Animation, Children's, Comedy; box office rank is 3"),
    ("prompt", 'This movie: "Toy Story (1995); genres: Animation, Children\'s, Comedy" means in one word:"'),
])
def test_recipes_by_hand(kind: str, expected: str) -> None:
    assert ItemText(kind).format("Toy Story", TOY) == expected


def test_an_upsert_gets_the_offline_text() -> None:
    """A gRPC map has no order and clients may send column names: the text must not depend on either."""
    online = {"box_office_rank": "3", "class": "Animation, Children's, Comedy", "raw_id": "1",
              "release_year": " 1995 "}
    for kind in TEXT_KINDS:
        recipe = ItemText(kind)
        assert recipe.format("Toy  Story", online) == recipe.format("Toy Story", TOY)
    assert canonical_attributes(online) == [("release year", "1995"), ("genres", "Animation, Children's, Comedy"),
                                            ("box office rank", "3")]


def test_missing_attributes_fall_back_to_what_there_is() -> None:
    assert ItemText("title-year-genres").format("Heat", [("genres", "Action, Crime")]) == "Heat; genres: Action, Crime"
    assert ItemText("title-year").format("Heat", {}) == "Heat"
    assert ItemText("title-year-genres", "book").format("", {"year": "2001"}) == "2001"
    assert ItemText("attributes", "book").format("Dune", {}) == (
        "The book item has the following attributes: \n title is Dune")


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        ItemText("plot")
    with pytest.raises(ValueError, match="domain"):
        ItemText("title", " ")
    with pytest.raises(ValueError, match="unknown item text keys"):
        ItemText.from_dict({"kind": "title", "template": "{text}"})
    assert ItemText.from_dict(ItemText("prompt", "game").to_dict()) == ItemText("prompt", "game")
