"""Item text: how an item's title and attributes become the text an embedder reads.

One recipe serves both sides of the system: the catalogue is embedded offline
with it (train.embed), and a new item sent to UpsertItems / EmbedItems with a
title and attributes is formatted by the same function in the gateway, so the
served vector of an item equals its offline vector. The recipe's name is
recorded in every embedding manifest and in the Triton repository's llmrec.json.

Kinds (a bare title carries little for a small LLM: "Kolya"):
  title              the title alone (LLM2Rec's text when titles are descriptive, as on Amazon)
  title-year         "Toy Story (1995)", the form MovieLens itself writes
  title-year-genres  "Toy Story (1995); genres: Animation, Children's, Comedy"
  attributes         LLMEmb's sentence (its item_prompt notebooks, `attribute_sentence`):
                     "The movie item has the following attributes: \n title is ...; release year is ...; ..."
  prompt             PromptEOL-style, for last-token pooling:
                     'This movie: "Toy Story (1995); genres: ..." means in one word:"'
Attribute keys are display names ("release year", "genres"); dataset column names
("release_year", "class") are mapped to them, so a client may send either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

TEXT_KINDS = ("title", "title-year", "title-year-genres", "attributes", "prompt")
DEFAULT_KIND = "attributes"  # best of the co-consumption screen (bench/results/screen_embeddings.md)

# dataset column -> display key
DISPLAY_NAMES = {
    "movie_title": "title",
    "item_title": "title",
    "release_year": "release year",
    "class": "genres",
}
YEAR_KEYS = ("release year", "year")
LIST_KEYS = ("genres", "genre", "categories", "category", "tags", "tag")
# attributes that describe the catalogue entry, not the item
IGNORED_KEYS = frozenset({"raw_id"})


def display_name(key: str) -> str:
    """Human-readable attribute key: known renames, otherwise underscores become spaces."""
    key = key.strip()
    return DISPLAY_NAMES.get(key, key.replace("_", " "))


def canonical_attributes(attributes: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(display key, value) pairs in one fixed order: year, list-like keys, then the rest by name.

    A fixed order matters because a gRPC map has none: the offline catalogue and an
    upserted item must give the same sentence.
    """
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    clean: dict[str, str] = {}
    for key, value in pairs:
        name, value = display_name(str(key)), " ".join(str(value).split())
        if name and value and str(key).strip() not in IGNORED_KEYS and name != "title":
            clean[name] = value
    known = [k for k in (*YEAR_KEYS, *LIST_KEYS) if k in clean]
    rest = sorted(k for k in clean if k not in known)
    return [(k, clean[k]) for k in known + rest]


def attribute_sentence(domain: str, pairs: Sequence[tuple[str, str]]) -> str:
    """LLMEmb's item prompt: the instruction "The <domain> item has the following attributes: \\n " then
    "key is value" pairs joined by "; " (as its data/*/item_prompt.ipynb write them)."""
    body = "; ".join(f"{key} is {value}" for key, value in pairs)
    return f"The {domain} item has the following attributes: \n {body}".rstrip()


@dataclass(frozen=True)
class ItemText:
    """A named item-text recipe (see the module docstring); `domain` names the item kind in sentences."""

    kind: str = DEFAULT_KIND
    domain: str = "movie"

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ValueError(f"item text kind must be one of {TEXT_KINDS}, got {self.kind!r}")
        if not isinstance(self.domain, str) or not self.domain.strip():
            raise ValueError(f"item text domain must be a non-empty string, got {self.domain!r}")

    def format(self, title: str, attributes: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> str:
        title = " ".join(str(title).split())
        pairs = canonical_attributes(attributes)
        if self.kind == "title":
            return title
        if self.kind == "attributes":
            return attribute_sentence(self.domain, ([("title", title)] if title else []) + pairs)
        described = self._described(title, dict(pairs))
        if self.kind == "prompt":
            return f'This {self.domain}: "{described}" means in one word:"'
        return described

    def _described(self, title: str, attrs: dict[str, str]) -> str:
        year = next((attrs[k] for k in YEAR_KEYS if k in attrs), "")
        text = f"{title} ({year})" if year and title else (title or year)
        if self.kind == "title-year":
            return text
        lists = [(k, attrs[k]) for k in LIST_KEYS if k in attrs]
        return "; ".join([text] + [f"{k}: {v}" for k, v in lists]) if text else "; ".join(
            f"{k}: {v}" for k, v in lists)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> ItemText:
        unknown = sorted(set(d) - {"kind", "domain"})
        if unknown:
            raise ValueError(f"unknown item text keys: {unknown} (known: ['domain', 'kind'])")
        return cls(**d)
