"""Item texts that the LLM embeds, one per internal item id.

The dataset side of the item-text recipes in llmrec/itemtext.py (`recipe_texts`:
title, title + year, title + year + genres, LLMEmb's attribute sentence, a
prompt), plus the raw pieces: titles and (key, value) attribute pairs. Every
builder returns a list indexed by internal id with row 0 (padding) empty, so
`texts[i]` lines up with embedding row i. Attribute pairs are exposed separately (`item_attributes`) and formatted by
`format_attributes`, so a later augmentation stage can drop or shuffle pairs and
reuse the exact same sentence template.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from llmrec.itemtext import ItemText, attribute_sentence, display_name

from .dataset import SequenceData

TITLE_FIELDS = ("title", "movie_title", "item_title", "product_title", "book_title", "name", "item_name")
# token_seq columns that are lists of labels (shown "A, B, C"); other token_seq columns are free text.
LIST_FIELDS = frozenset({"class", "genre", "genres", "category", "categories", "tag", "tags"})


def detect_title_field(data: SequenceData) -> str:
    """The first known title column present in the dataset's item features."""
    for candidate in TITLE_FIELDS:
        if candidate in data.item_features:
            return candidate
    raise ValueError(
        f"dataset {data.name!r} has no title column (looked for {list(TITLE_FIELDS)}; "
        f"item feature columns: {list(data.item_features)}); pass field= explicitly"
    )


def _column(data: SequenceData, field: str) -> list[str]:
    if field not in data.item_features:
        raise ValueError(
            f"dataset {data.name!r} has no item feature {field!r} (columns: {list(data.item_features)})"
        )
    values = data.item_features[field]
    if len(values) != data.num_items + 1:
        raise ValueError(
            f"item feature {field!r} has {len(values)} rows, expected num_items + 1 = {data.num_items + 1}"
        )
    return values


def title_texts(data: SequenceData, field: str | None = None) -> list[str]:
    """LLM2Rec's item text: the title only; `field` is auto-detected when None."""
    values = _column(data, field or detect_title_field(data))
    return [""] + [v.strip() for v in values[1:]]


def format_value(value: str, is_list: bool) -> str:
    """A label list is shown comma-separated; any other value with whitespace collapsed."""
    tokens = value.split()
    return ", ".join(tokens) if is_list else " ".join(tokens)


def item_attributes(
    data: SequenceData,
    fields: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
    list_fields: Iterable[str] | None = None,
) -> list[list[tuple[str, str]]]:
    """(key, value) attribute pairs per internal item id; row 0 and empty values are empty.

    `fields` selects and orders the columns (default: all, in file order);
    `names` overrides display keys; `list_fields` names the `token_seq` columns
    shown as comma-separated lists (default: genre/category/tag-like columns).
    """
    if fields is None:
        fields = list(data.item_features)
        if not fields:
            raise ValueError(f"dataset {data.name!r} has no item features (no .item file?)")
    columns = [_column(data, f) for f in fields]
    list_set = LIST_FIELDS if list_fields is None else frozenset(list_fields)
    keys = [(names or {}).get(f) or display_name(f) for f in fields]
    as_list = [f in list_set and data.feature_types.get(f, "token_seq").endswith("_seq") for f in fields]
    out: list[list[tuple[str, str]]] = [[]]
    for item in range(1, data.num_items + 1):
        pairs = []
        for key, column, is_list in zip(keys, columns, as_list, strict=True):
            value = format_value(column[item], is_list)
            if value:
                pairs.append((key, value))
        out.append(pairs)
    return out


def format_attributes(domain: str, pairs: Sequence[tuple[str, str]]) -> str:
    """LLMEmb's prompt (llmrec.itemtext.attribute_sentence): the sentence an augmentation reorders and prunes."""
    return attribute_sentence(domain, pairs)


def attribute_texts(
    data: SequenceData, domain: str = "movie", fields: Sequence[str] | None = None
) -> list[str]:
    """LLMEmb's item text for every internal id (row 0 empty)."""
    return [""] + [format_attributes(domain, pairs) for pairs in item_attributes(data, fields)[1:]]


def recipe_texts(data: SequenceData, recipe: ItemText) -> list[str]:
    """`recipe` applied to every item's title and attributes (row 0 empty): the offline side of the text
    the gateway builds for an upserted item from the same title and attributes."""
    titles = title_texts(data)
    attributes = item_attributes(data) if data.item_features else [[] for _ in titles]
    return [""] + [recipe.format(titles[i], attributes[i]) for i in range(1, data.num_items + 1)]
