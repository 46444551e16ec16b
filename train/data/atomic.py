"""Reader for RecBole "atomic" files (`<name>.inter`, `<name>.item`).

RecBole's format is a tab-separated table whose header names every column as
`name:type` (types `token`, `token_seq`, `float`, `float_seq`). We read it with
plain Python and numpy because pandas is not a dependency of this project and a
100k-line file splits in well under a second this way.

Interactions keep raw string ids (remapping is the processing stage's job) and
item features keep raw strings, so the text builders see exactly what the file
says; the column type is remembered because it decides how a value is shown
(e.g. a `token_seq` genre list becomes "Animation, Children's, Comedy").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("llmrec.data")

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
USER_FIELD = "user_id"
ITEM_FIELD = "item_id"
TIME_FIELD = "timestamp"
RATING_FIELD = "rating"


@dataclass
class Interactions:
    """The rows of a `.inter` file, in file order."""

    path: Path
    users: list[str]
    items: list[str]
    timestamps: np.ndarray | None  # float64 [n]; None when the file has no timestamp column
    ratings: np.ndarray | None  # float64 [n]; NaN where the cell was empty

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class ItemTable:
    """The rows of a `.item` file: raw feature strings per raw item id."""

    path: Path | None
    features: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> raw item id -> value
    feature_types: dict[str, str] = field(default_factory=dict)  # column -> RecBole type, file order


@dataclass
class AtomicData:
    """One atomic dataset: interactions plus (possibly empty) item features."""

    name: str
    inter: Interactions
    items: ItemTable


def _parse_header(path: Path, line: str) -> list[tuple[str, str]]:
    """Split a `name:type` header; a bad header is reported with its column."""
    columns: list[tuple[str, str]] = []
    for position, cell in enumerate(line.rstrip("\r\n").split("\t"), start=1):
        name, sep, ftype = cell.strip().rpartition(":")
        if not sep or not name:
            raise ValueError(
                f"{path}: line 1: header column {position} {cell!r} is not of the form 'name:type'"
            )
        if ftype not in FIELD_TYPES:
            raise ValueError(
                f"{path}: line 1: column {name!r} has unknown type {ftype!r} (expected one of {FIELD_TYPES})"
            )
        columns.append((name, ftype))
    names = [n for n, _ in columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{path}: line 1: duplicated column(s) {duplicated}")
    return columns


def _read_table(path: Path) -> tuple[list[tuple[str, str]], list[list[str]], list[int]]:
    """Header, data rows (cells) and each row's 1-based file line number.

    Blank lines are skipped (trailing newlines are common); a row with the wrong
    number of cells is an error, naming its line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"atomic file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc})") from exc
    lines = text.split("\n")
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: empty file or missing header line")
    columns = _parse_header(path, lines[0])
    width = len(columns)
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != width:
            raise ValueError(
                f"{path}: line {number}: expected {width} tab-separated fields, found {len(cells)}"
            )
        rows.append(cells)
        line_numbers.append(number)
    return columns, rows, line_numbers


def _float_column(
    path: Path, name: str, values: list[str], line_numbers: list[int], allow_empty: bool
) -> np.ndarray:
    """Parse a float column; the first unparsable cell is reported by line number."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        cell = value.strip()
        if not cell:
            if allow_empty:
                out[i] = np.nan
                continue
            raise ValueError(f"{path}: line {line_numbers[i]}: empty value in column {name!r}")
        try:
            out[i] = float(cell)
        except ValueError:
            raise ValueError(
                f"{path}: line {line_numbers[i]}: column {name!r} value {value!r} is not a number"
            ) from None
    if not allow_empty and np.isnan(out).any():
        i = int(np.flatnonzero(np.isnan(out))[0])
        raise ValueError(f"{path}: line {line_numbers[i]}: column {name!r} is NaN")
    return out


def _require(path: Path, names: list[str], column: str) -> int:
    if column not in names:
        raise ValueError(f"{path}: required column {column!r} is missing (columns: {names})")
    return names.index(column)


def read_inter(path: str | Path, allow_file_order: bool = False) -> Interactions:
    """Read a `.inter` file.

    `user_id` and `item_id` are required. `timestamp` is required too because
    sequences are ordered by time; `allow_file_order=True` accepts its absence and
    then the file order is the chronological order. `rating` is optional.
    """
    path = Path(path)
    columns, rows, line_numbers = _read_table(path)
    names = [n for n, _ in columns]
    ui = _require(path, names, USER_FIELD)
    ii = _require(path, names, ITEM_FIELD)
    if TIME_FIELD not in names and not allow_file_order:
        raise ValueError(
            f"{path}: required column {TIME_FIELD!r} is missing (columns: {names}); "
            "pass allow_file_order=True to use the file order as the chronological order"
        )
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    users = [c.strip() for c in cols[ui]]
    items = [c.strip() for c in cols[ii]]
    for label, values in ((USER_FIELD, users), (ITEM_FIELD, items)):
        if values and not all(values):
            i = values.index("")
            raise ValueError(f"{path}: line {line_numbers[i]}: empty {label!r}")
    timestamps = None
    if TIME_FIELD in names:
        timestamps = _float_column(path, TIME_FIELD, list(cols[names.index(TIME_FIELD)]), line_numbers, False)
    ratings = None
    if RATING_FIELD in names:
        ratings = _float_column(path, RATING_FIELD, list(cols[names.index(RATING_FIELD)]), line_numbers, True)
    return Interactions(path=path, users=users, items=items, timestamps=timestamps, ratings=ratings)


def _normalise(value: str, ftype: str) -> str:
    """Sequence cells are joined with single spaces; scalars are only stripped."""
    if ftype.endswith("_seq"):
        return " ".join(value.split())
    return value.strip()


def read_items(path: str | Path) -> ItemTable:
    """Read a `.item` file: every non-id column becomes a feature of raw strings.

    A repeated item id keeps its first row (logged), as later rows would
    silently overwrite features otherwise.
    """
    path = Path(path)
    columns, rows, line_numbers = _read_table(path)
    names = [n for n, _ in columns]
    ii = _require(path, names, ITEM_FIELD)
    table = ItemTable(path=path)
    feature_cols = [(j, n, t) for j, (n, t) in enumerate(columns) if j != ii]
    for _, name, ftype in feature_cols:
        table.features[name] = {}
        table.feature_types[name] = ftype
    duplicates = 0
    for cells, number in zip(rows, line_numbers, strict=True):
        item = cells[ii].strip()
        if not item:
            raise ValueError(f"{path}: line {number}: empty {ITEM_FIELD!r}")
        first = table.features[feature_cols[0][1]] if feature_cols else None
        if first is not None and item in first:
            duplicates += 1
            continue
        for j, name, ftype in feature_cols:
            table.features[name][item] = _normalise(cells[j], ftype)
    if duplicates:
        logger.warning("%s: %d repeated item id row(s) ignored (first row kept)", path, duplicates)
    return table


def read_atomic(folder: str | Path, name: str | None = None, allow_file_order: bool = False) -> AtomicData:
    """Read `<folder>/<name>.inter` and, if present, `<folder>/<name>.item`.

    `name` defaults to the folder's name, RecBole's convention.
    """
    folder = Path(folder)
    name = name or folder.name
    inter = read_inter(folder / f"{name}.inter", allow_file_order=allow_file_order)
    item_path = folder / f"{name}.item"
    items = read_items(item_path) if item_path.is_file() else ItemTable(path=None)
    return AtomicData(name=name, inter=inter, items=items)
