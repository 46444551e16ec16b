"""Where the two models run, behind one small interface (Merlin's idea: operators independent of the runtime).

The pipeline (`pipeline.py`) only calls `encode_users` and `encode_texts`;
`TritonBackend` (triton_client.py) sends them to Triton, `OnnxRuntimeBackend`
runs the very same model repository in-process with onnxruntime: the ONNX
graphs of `user_encoder` and `item_embedder` and the repository's own
tokenizer model file. Tests and the load benchmark's in-process baseline use
it; results match Triton's because the files are the same.

Tensor names are the export contract (export/onnx/artifact.py, repository.py):
user_encoder  item_vectors float32 [B, L, H], attention_mask int64 [B, L] -> user_vector float32 [B, H]
item_encoder  text BYTES [B, 1] -> item_vector float32 [B, D]  (tokenizer + item_embedder ensemble)
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmrec.itemtext import ItemText
from llmrec.manifests import RepositoryManifest
from llmrec.names import (
    ATTENTION_MASK,
    INPUT_IDS,
    ITEM_EMBEDDER,
    ITEM_VECTOR,
    ITEM_VECTORS,
    TOKENIZER,
    USER_ENCODER,
    USER_VECTOR,
)


class EncoderBackend(Protocol):
    """The two model calls the gateway needs; implementations raise GatewayError (UNAVAILABLE...) on failure."""

    name: str

    def ready(self) -> bool: ...

    def encode_users(self, item_vectors: np.ndarray, attention_mask: np.ndarray,
                     timeout_s: float | None = None) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str], timeout_s: float | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


def item_text_of(manifest: RepositoryManifest | None) -> ItemText | None:
    """The item-text recipe the served item encoder was trained with, or None (texts are embedded as sent)."""
    recipe = manifest.embedder.item_text if manifest and manifest.embedder else None
    return ItemText.from_dict(recipe) if recipe else None


def item_text_recipe(repository: str | Path) -> ItemText | None:
    """item_text_of the repository's llmrec.json."""
    return item_text_of(RepositoryManifest.read(repository))


def latest_version(model_dir: Path) -> Path:
    """The highest numeric version folder of a Triton model (Triton's `latest` policy)."""
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no version folder (a Triton model written by export.onnx)")
    return max(versions, key=lambda p: int(p.name))


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the verified repository
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes
    return module


class OnnxRuntimeBackend:
    """The repository's models in this process: no Triton, same files, same tokenizer code."""

    name = "onnxruntime"

    def __init__(self, repository: str | Path, user_model: str = USER_ENCODER, item_model: str = ITEM_EMBEDDER,
                 tokenizer_model: str = TOKENIZER, threads: int = 1) -> None:
        import onnxruntime as ort

        root = Path(repository)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.user_session = None
        self.item_session = None
        self.tokenizer = None
        if (root / user_model).is_dir():
            self.user_session = ort.InferenceSession(str(latest_version(root / user_model) / "model.onnx"), options,
                                                     providers=providers)
        if (root / item_model).is_dir() and (root / tokenizer_model).is_dir():
            self.item_session = ort.InferenceSession(str(latest_version(root / item_model) / "model.onnx"), options,
                                                     providers=providers)
            version = latest_version(root / tokenizer_model)
            module = _load_module(version / "model.py", f"llmrec_repository_{tokenizer_model}")
            self.tokenizer = module.ItemTokenizer(version)
        if self.user_session is None:
            raise FileNotFoundError(f"{root}: no {user_model} model (write the repository with export.onnx)")

    def ready(self) -> bool:
        return True

    def encode_users(self, item_vectors: np.ndarray, attention_mask: np.ndarray,
                     timeout_s: float | None = None) -> np.ndarray:
        feed = {ITEM_VECTORS: np.ascontiguousarray(item_vectors, dtype=np.float32),
                ATTENTION_MASK: np.ascontiguousarray(attention_mask, dtype=np.int64)}
        return np.asarray(self.user_session.run([USER_VECTOR], feed)[0], dtype=np.float32)

    def encode_texts(self, texts: Sequence[str], timeout_s: float | None = None) -> np.ndarray:
        from .errors import GatewayError

        if self.item_session is None or self.tokenizer is None:
            raise GatewayError("FAILED_PRECONDITION", "this deployment has no item encoder")
        ids, mask = self.tokenizer(list(texts))
        return np.asarray(self.item_session.run([ITEM_VECTOR], {INPUT_IDS: ids, ATTENTION_MASK: mask})[0],
                          dtype=np.float32)

    def close(self) -> None:
        pass
