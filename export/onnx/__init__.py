"""ONNX export of the item embedder and the SRS user encoder (`python -m export.onnx`).

Each export writes a folder with `model.onnx`, `export.json` (the contract read by
the Triton repository writer and the gateway; see `artifact.py`) and, per kind,
`tokenizer/` or `item_vectors.safetensors`; each is validated against torch first.
"""

from .artifact import (
    EXPORT_FILE,
    FORMAT,
    ITEM_VECTORS_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    ExportInputError,
    ExportValidationError,
    read_manifest,
    verify_files,
)
from .validate import compare, embed_texts_onnx, make_session

__all__ = [
    "EXPORT_FILE",
    "FORMAT",
    "ITEM_VECTORS_FILE",
    "MODEL_FILE",
    "TOKENIZER_DIR",
    "ExportInputError",
    "ExportValidationError",
    "compare",
    "embed_texts_onnx",
    "make_session",
    "read_manifest",
    "verify_files",
]
