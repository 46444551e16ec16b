"""Where a dataset comes from: a built-in name or a folder, and in which layout.

MovieLens-100k ships inside the RecBole wheel (`recbole/dataset_example/ml-100k`),
which gives tests and demos real data without a download. We only *locate*
the package with `importlib.util.find_spec`, which for a top-level package
does not execute it: importing RecBole would pull in its heavy, version-pinned
dependencies, and this project never runs RecBole code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

from .llm2rec_layout import LLM2REC_FILES

ATOMIC = "atomic"
LLM2REC = "llm2rec"

LLM2REC_MARKER = "train_data.txt"
ML_100K = "ml-100k"
BUILTIN_SOURCES = (ML_100K,)


class Source(NamedTuple):
    """A resolved dataset source: `(name, folder, format)`."""

    name: str
    folder: Path
    format: str  # ATOMIC or LLM2REC


def movielens_100k_dir() -> Path:
    """Folder of the MovieLens-100k atomic files embedded in the RecBole wheel."""
    hint = "install it with `pip install --no-deps recbole==1.2.1` (its data is used, its code is not)"
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded MovieLens-100k needs the recbole package, which is not installed; {hint}"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "dataset_example" / ML_100K
        if (folder / f"{ML_100K}.inter").is_file() and (folder / f"{ML_100K}.item").is_file():
            return folder
    raise FileNotFoundError(
        f"recbole is installed at {list(spec.submodule_search_locations)} but has no "
        f"dataset_example/{ML_100K}/{ML_100K}.inter and .item; {hint}"
    )


def _atomic_name(folder: Path, name: str | None) -> str | None:
    """The atomic dataset name in `folder`, or None when it holds no usable `.inter` file.

    RecBole names the files after the folder; a folder with exactly one `.inter`
    file is accepted under that file's name as well.
    """
    if name is not None:
        return name if (folder / f"{name}.inter").is_file() else None
    if (folder / f"{folder.name}.inter").is_file():
        return folder.name
    inters = sorted(folder.glob("*.inter"))
    if len(inters) == 1:
        return inters[0].stem
    return None


def resolve_source(name_or_path: str | Path, name: str | None = None) -> Source:
    """Resolve a built-in name (`ml-100k`), an atomic folder/`.inter` file or an LLM2Rec folder.

    An existing folder wins over a built-in name of the same spelling, so a
    local copy can always be addressed by path.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".inter":
        return Source(name or path.stem, path.parent.resolve(), ATOMIC)
    if path.is_dir():
        folder = path.resolve()
        if (folder / LLM2REC_MARKER).is_file():
            return Source(name or folder.name, folder, LLM2REC)
        atomic = _atomic_name(folder, name)
        if atomic is not None:
            return Source(atomic, folder, ATOMIC)
        wanted = f"{name}.inter" if name else f"{folder.name}.inter (or a single *.inter file)"
        raise FileNotFoundError(
            f"data source {text!r} is a folder but holds neither {wanted} (RecBole atomic format) "
            f"nor {LLM2REC_MARKER} (LLM2Rec layout)"
        )
    if text in BUILTIN_SOURCES:
        return Source(text, movielens_100k_dir(), ATOMIC)
    raise ValueError(
        f"unknown data source {text!r}: not a built-in dataset ({', '.join(BUILTIN_SOURCES)}) "
        "and not an existing folder or .inter file"
    )


def source_files(source: Source) -> list[Path]:
    """The files a source's processed form depends on (what the cache checksums)."""
    if source.format == ATOMIC:
        files = [source.folder / f"{source.name}.inter"]
        item = source.folder / f"{source.name}.item"
        if item.is_file():
            files.append(item)
        return files
    if source.format == LLM2REC:
        return [source.folder / f for f in LLM2REC_FILES]
    raise ValueError(f"unknown source format {source.format!r}")
