"""Reader for LLM2Rec's downstream-evaluation layout.

LLM2Rec ships already-split data: `train_data.txt`, `val_data.txt` and
`test_data.txt` hold one example per line (space-separated 1-based item ids,
the last id is the target, the others the history), plus `item_titles.json`.
To compare with published numbers the examples are taken *exactly as written*:
no filtering, no re-splitting, no id remapping (the file ids are the internal
ids, 0 stays padding). Each split therefore keeps its own list of sequences,
one per line, and the target sits at position len(line) - 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .dataset import PAD_TOKEN, Examples, SequenceData

SPLIT_FILES = {"train": "train_data.txt", "valid": "val_data.txt", "test": "test_data.txt"}
TITLES_FILE = "item_titles.json"
LLM2REC_FILES = (*SPLIT_FILES.values(), TITLES_FILE)
TITLE_FIELD = "title"


def read_split(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """Sequences of one split file and their 1-based line numbers (blank lines skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"LLM2Rec split file not found: {path}")
    sequences: list[np.ndarray] = []
    line_numbers: list[int] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            ids = []
            for token in tokens:
                if not token.lstrip("-").isascii() or not token.lstrip("-").isdigit():
                    raise ValueError(f"{path}: line {number}: item id {token!r} is not an integer")
                ids.append(int(token))
            if len(ids) < 2:
                raise ValueError(
                    f"{path}: line {number}: needs at least 2 item ids (history and target), got {len(ids)}"
                )
            low = min(ids)
            if low < 1:
                raise ValueError(f"{path}: line {number}: item id {low} < 1 (ids are 1-based, 0 is padding)")
            sequences.append(np.array(ids, dtype=np.int64))
            line_numbers.append(number)
    if not sequences:
        raise ValueError(f"{path}: no examples")
    return sequences, line_numbers


def read_titles(path: Path) -> dict[int, str]:
    """Item id -> title from a JSON object ({"1": "title"}) or list (index i = item i, index 0 ignored)."""
    if not path.is_file():
        raise FileNotFoundError(f"LLM2Rec titles file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if isinstance(raw, dict):
        entries = []
        for key, value in raw.items():
            try:
                entries.append((int(key), value))
            except ValueError:
                raise ValueError(f"{path}: key {key!r} is not an integer item id") from None
    elif isinstance(raw, list):
        entries = list(enumerate(raw))
    else:
        raise ValueError(f"{path}: expected a JSON object (id -> title) or list, got {type(raw).__name__}")
    titles: dict[int, str] = {}
    for item, title in entries:
        if item == 0 or title is None:  # padding slot / explicit "no title"
            continue
        if item < 0:
            raise ValueError(f"{path}: item id {item} < 0")
        if not isinstance(title, str):
            raise ValueError(f"{path}: title of item {item} is a {type(title).__name__}, not a string")
        titles[item] = title
    return titles


def read_llm2rec(folder: str | Path, name: str | None = None) -> SequenceData:
    """Read an LLM2Rec folder into a SequenceData whose `sequences` are the test lines.

    The test lines carry the fullest histories, so they stand in for "the user
    sequences"; `user_ids` are their line numbers. Every item id used by any
    split needs a title.
    """
    folder = Path(folder)
    splits: dict[str, Examples] = {}
    test_lines: list[int] = []
    used: set[int] = set()
    for split, filename in SPLIT_FILES.items():
        sequences, lines = read_split(folder / filename)
        for seq in sequences:
            used.update(seq.tolist())
        positions = np.array([s.shape[0] - 1 for s in sequences], dtype=np.int64)
        splits[split] = Examples(sequences, np.arange(len(sequences), dtype=np.int64), positions)
        if split == "test":
            test_lines = lines
    titles = read_titles(folder / TITLES_FILE)
    missing = sorted(used - titles.keys())
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{folder / TITLES_FILE}: no title for {len(missing)} item id(s) used in the splits: {shown}"
        )
    num_items = max(max(used), max(titles, default=0))
    return SequenceData(
        name=name or folder.name,
        num_items=num_items,
        item_ids=[PAD_TOKEN] + [str(i) for i in range(1, num_items + 1)],
        user_ids=[str(n) for n in test_lines],
        sequences=splits["test"].sequences,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        item_features={TITLE_FIELD: [""] + [titles.get(i, "") for i in range(1, num_items + 1)]},
        feature_types={TITLE_FIELD: "token_seq"},
    )
