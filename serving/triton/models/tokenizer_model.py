"""Triton Python-backend model `tokenizer`: item texts -> `input_ids`, `attention_mask` for `item_embedder`.

Copied as `tokenizer/<version>/model.py` by `python -m export.onnx repository`,
next to `tokenizer/tokenizer.json` and `tokenization.json`. It reproduces the
embedder's tokenisation (train/embedder/model.py `token_ids` + `collate`):
the template is applied, the tokenizer adds its own special tokens (BOS),
texts are truncated to `max_length` (one place kept for EOS when the pooling is
"eos", EOS appended unless already last), and rows are padded with the pad id
on `padding_side`, the mask 0 on padding.

Needs only numpy and the `tokenizers` library (no torch, no transformers).
`ItemTokenizer` is importable outside Triton (tests compare it with the
training-side tokenisation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

try:  # only present inside the Triton Python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - imported by tests and tools outside Triton
    pb_utils = None

SETTINGS_FILE = "tokenization.json"
TOKENIZER_FILE = "tokenizer/tokenizer.json"


class ItemTokenizer:
    """Texts -> padded int64 `input_ids` / `attention_mask`, exactly as the embedder tokenises them."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text())
        self.template: str = settings["template"]
        self.max_length = int(settings["max_length"])
        self.append_eos = bool(settings["append_eos"])
        self.eos_token_id = int(settings["eos_token_id"])
        self.pad_token_id = int(settings["pad_token_id"])
        self.padding_side: str = settings.get("padding_side", "right")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        limit = self.max_length - 1 if self.append_eos else self.max_length
        self.tokenizer.enable_truncation(max_length=limit, direction=settings.get("truncation_side", "right"))

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Unpadded token ids per text (template, special tokens, truncation, EOS)."""
        formatted = [self.template.format(text=t) for t in texts]
        rows = [list(e.ids) for e in self.tokenizer.encode_batch(formatted, add_special_tokens=True)]
        if self.append_eos:
            rows = [r if r and r[-1] == self.eos_token_id else [*r, self.eos_token_id] for r in rows]
        return rows

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`input_ids`, `attention_mask` int64 [len(texts), longest]."""
        rows = self.token_ids(texts)
        length = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            span = slice(0, len(row)) if self.padding_side == "right" else slice(length - len(row), length)
            ids[i, span] = row
            mask[i, span] = 1
        return ids, mask


def decode_texts(array: np.ndarray) -> list[str]:
    """A TYPE_STRING tensor [B, 1] (bytes objects) as Python strings."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


class TritonPythonModel:
    """One response per request: each request's texts are padded to that request's longest text."""

    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = ItemTokenizer(folder)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                texts = decode_texts(pb_utils.get_input_tensor_by_name(request, "text").as_numpy())
                ids, mask = self.tokenizer(texts)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask)]))
            except Exception as error:  # one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tokenizer: {error}")))
        return responses
