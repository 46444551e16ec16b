"""Helpers that write small RecBole atomic / LLM2Rec folders for the data tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_HEADER = ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq")


def write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(name="write_table")
def write_table_fixture() -> Callable[..., Path]:
    """write_table(path, header, rows) -> path."""
    return write_table


@pytest.fixture
def make_atomic(tmp_path: Path) -> Callable[..., Path]:
    """make_atomic(name, inter_rows, item_rows=None, inter_header=..., item_header=...) -> folder."""

    def make(
        name: str,
        inter_rows: Sequence[Sequence[object]],
        item_rows: Sequence[Sequence[object]] | None = None,
        inter_header: Sequence[str] = INTER_HEADER,
        item_header: Sequence[str] = ITEM_HEADER,
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        write_table(folder / f"{name}.inter", inter_header, inter_rows)
        if item_rows is not None:
            write_table(folder / f"{name}.item", item_header, item_rows)
        return folder

    return make
