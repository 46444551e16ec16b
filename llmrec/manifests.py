"""Manifests that one layer writes and another reads, as typed records (JSON on disk).

`RepositoryManifest` is the Triton model repository's `llmrec.json`: export writes it beside the models
(export/triton/repository.py) and serving reads it (the gateway's history window, the item-text recipe of
UpsertItems, the pairing of index and user encoder, the sha256 of every file checked before a start).

`EmbeddingsManifest` is the `manifest.json` train.embed writes beside items.safetensors: export reads from it
the item-text recipe the vectors were made with (what the gateway must build for an upserted item) and the
embedder's sha256 (were these the embedder's vectors?).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_MANIFEST = "llmrec.json"
REPOSITORY_FORMAT = "llmrec.triton-repository/1"
# checked-in files of a repository folder (the project's model_repository/): kept when export rewrites it, not
# listed in llmrec.json (Triton ignores files at the repository root)
REPOSITORY_KEPT_FILES = ("README.md", ".gitignore")
EMBEDDINGS_MANIFEST = "manifest.json"
EMBEDDINGS_FORMAT = "llmrec.embeddings/1"  # also the safetensors metadata of items.safetensors


@dataclass(frozen=True)
class EmbeddingsManifest:
    """What one item-embedding file was made from (the fields other layers read; the file holds more)."""

    item_text: dict[str, str]  # {"kind", "domain"}: the recipe (llmrec/itemtext.py) the texts were built with
    embedder_sha256: str | None  # the embedder's content hash, when it was recorded
    dim: int
    count: int

    @classmethod
    def read(cls, folder: str | Path) -> EmbeddingsManifest | None:
        """The manifest of an embeddings folder; None when it has none or it cannot be read. Files written before
        the recipe was recorded as `item_text` name it as `text: "kind[:domain]"` (bare titles when absent)."""
        try:
            data = json.loads((Path(folder) / EMBEDDINGS_MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        item_text = data.get("item_text")
        if not isinstance(item_text, dict):
            kind, _, domain = str(data.get("text", "title")).partition(":")
            item_text = {"kind": kind, "domain": domain or "movie"}
        return cls(item_text={"kind": str(item_text["kind"]), "domain": str(item_text["domain"])},
                   embedder_sha256=(data.get("embedder") or {}).get("sha256"), dim=int(data.get("dim") or 0),
                   count=int(data.get("count") or 0))


@dataclass(frozen=True)
class EmbedderSource:
    """The item embedder export a repository was written from."""

    path: str
    export_sha256: str
    dim: int | None
    tokenization: dict[str, Any]  # what the tokenizer model reproduces (template, max_length, padding...)
    item_text: dict[str, Any] | None  # the item-text recipe (llmrec/itemtext.py) the embedder was trained on
    source: Any = None  # the checkpoint or stage the export came from
    # the graph item_embedder serves: {"variant": "fp32"}, or an int8 variant that passed its quality gate
    # ({"variant": "int8", "recipe", "sha256", "gate": {...}})
    graph: dict[str, Any] = field(default_factory=lambda: {"variant": "fp32"})


@dataclass(frozen=True)
class UserEncoderSource:
    """The user encoder (SRS) export a repository was written from."""

    path: str
    export_sha256: str
    hidden_size: int
    max_len: int  # the history window the SRS was trained with
    item_vectors: dict[str, Any] | None  # {"path", "sha256"} of the item table the index must hold
    source: Any = None


@dataclass(frozen=True)
class RepositoryManifest:
    flavour: str
    created: str
    options: dict[str, Any]
    models: list[str]
    files: dict[str, str]  # path inside the repository -> sha256
    embedder: EmbedderSource | None = None
    user_encoder: UserEncoderSource | None = None
    format: str = field(default=REPOSITORY_FORMAT)

    def to_dict(self) -> dict[str, Any]:
        sources = {name: asdict(value) for name, value in (("embedder", self.embedder),
                                                           ("user_encoder", self.user_encoder)) if value}
        return {"format": self.format, "flavour": self.flavour, "created": self.created, "options": self.options,
                "models": self.models, "sources": sources, "files": self.files}

    def write(self, repository: Path) -> None:
        (Path(repository) / REPOSITORY_MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = REPOSITORY_MANIFEST) -> RepositoryManifest:
        if data.get("format") != REPOSITORY_FORMAT:
            raise ValueError(f"{where}: format {data.get('format')!r}, expected {REPOSITORY_FORMAT!r}")
        sources = data.get("sources") or {}
        try:
            return cls(flavour=data["flavour"], created=data.get("created", ""), options=data.get("options") or {},
                       models=list(data.get("models") or []), files=dict(data.get("files") or {}),
                       embedder=EmbedderSource(**sources["embedder"]) if sources.get("embedder") else None,
                       user_encoder=(UserEncoderSource(**sources["user_encoder"])
                                     if sources.get("user_encoder") else None))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: not a repository manifest this version reads ({exc})") from None

    @classmethod
    def read(cls, repository: str | Path) -> RepositoryManifest | None:
        """The manifest of `repository`; None for a repository without one (written by hand)."""
        path = Path(repository) / REPOSITORY_MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, str(path))
