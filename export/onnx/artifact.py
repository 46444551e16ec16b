"""The export folder contract: `export.json` (the manifest) and how it is written and read.

Every export folder holds `model.onnx` (plus `model.onnx_data` when the weights
are external), `export.json`, and per kind `tokenizer/` (embedder) or
`item_vectors.safetensors` (user encoder). The manifest names the graph's
inputs and outputs, the settings a client must reproduce (tokenisation,
padding, history length, score), the checkpoint it was made from with its
sha256, the sha256 of every file written, and the validation report, so the
Triton repository writer and the gateway read one file instead of guessing,
and a stale or mismatched artifact is detected.

Errors: `ExportInputError` is bad input (a missing checkpoint, a flag out of
range; exit code 2), `ExportValidationError` an export whose outputs differ from
torch beyond the threshold (exit code 1).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llmrec.files import ForeignFolder, refuse_foreign_folder, sha256_file
from llmrec.names import USER_ENCODER

FORMAT = "llmrec.onnx/1"
EXPORT_FILE = "export.json"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"
TOKENIZER_DIR = "tokenizer"
ITEM_VECTORS_FILE = "item_vectors.safetensors"
KINDS = ("embedder", USER_ENCODER)
EXIT_VALIDATION = 1
EXIT_BAD_INPUT = 2


class ExportInputError(ValueError):
    """Bad input to an export (the message names the flag or field); reported as one line, exit code 2."""


class ExportValidationError(RuntimeError):
    """The exported graph does not reproduce torch within the threshold; exit code 1."""


def check_out(out: Path, force: bool, markers: tuple[str, ...] = (EXPORT_FILE,)) -> None:
    """ExportInputError when `out` is a non-empty folder an export did not write (see refuse_foreign_folder)."""
    try:
        refuse_foreign_folder(out, markers, force)
    except ForeignFolder as exc:
        raise ExportInputError(str(exc)) from None


def sha256_files(paths: list[Path]) -> str:
    """One sha256 over the names and bytes of `paths`, in order (a checkpoint's identity)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def tensor_spec(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    """One entry of `inputs`/`outputs`: -1 marks a dynamic axis."""
    return {"name": name, "dtype": dtype, "dims": list(dims)}


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in the export folder except the manifest, keyed by relative path (sorted)."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != EXPORT_FILE:
            out[rel] = sha256_file(path)
    return out


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write `export.json` atomically (temporary name, then rename)."""
    path = Path(folder) / EXPORT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The manifest of an export folder (or the path of its export.json), checked for format and kind."""
    path = Path(folder)
    if path.is_dir():
        path = path / EXPORT_FILE
    if not path.is_file():
        raise ExportInputError(f"{path} not found: not an llmrec ONNX export folder")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ExportInputError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if kind is not None and manifest.get("kind") != kind:
        raise ExportInputError(f"{path}: kind {manifest.get('kind')!r}, expected {kind!r}")
    return manifest


def verify_files(folder: str | Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Files whose sha256 differs from the manifest's `files` (or that are missing); empty when intact."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    bad = []
    for rel, digest in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(rel)
    return bad
