"""Item representations: what turns an internal item id into a vector.

The same vectors feed the sequence encoder and score candidates (tied input
and output), so the deployed system needs one item table only: the FAISS
index holds exactly what the user encoder reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmrec.files import sha256_file

EMBEDDINGS_KEY = "embeddings"


ID_INIT_STD = 0.02  # SASRec's initialisation of the ID table ("small")


class IDItemEmbedding(nn.Module):
    """A trainable table, one row per item, row 0 = padding (kept at zero); `init` [num_items + 1, hidden]
    replaces the random start (see text_init). `how`: "small" N(0, 0.02), "unit" N(0, 1) (LLM2Rec's seqrec),
    "xavier" xavier_normal (LLMEmb)."""

    def __init__(self, num_items: int, hidden_size: int, init: torch.Tensor | None = None,
                 how: str = "small") -> None:
        super().__init__()
        self.table = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        if how == "xavier":
            nn.init.xavier_normal_(self.table.weight)
        else:
            nn.init.normal_(self.table.weight, std=1.0 if how == "unit" else ID_INIT_STD)
        with torch.no_grad():
            if init is not None:
                self.table.weight.copy_(init)
            self.table.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)

    def all_items(self) -> torch.Tensor:
        return self.table.weight


def text_init(embeddings: torch.Tensor, warm: torch.Tensor, hidden_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An ID table's starting point from text (LLM-initialised IDs): every row projected on the first
    `hidden_size` principal components of the standardised warm rows, scaled to the random start's
    standard deviation, so only the geometry of the start changes, not its size.
    Returns the table [rows, hidden] and the projection [dim, hidden] (scale included) that maps a
    standardised text to its row."""
    x = embeddings.detach().to(torch.float64)
    rows = x[warm.to(torch.bool) & (torch.arange(len(x)) > 0)]
    mean, std = rows.mean(0), rows.std(0).clamp_min(1e-6)
    _, _, vt = torch.linalg.svd((rows - mean) / std, full_matrices=False)
    if vt.shape[0] < hidden_size:
        raise ValueError(f"text_init needs at least {hidden_size} warm items and dimensions, got {tuple(rows.shape)}")
    projected = ((x - mean) / std) @ vt[:hidden_size].T
    scale = ID_INIT_STD / projected[1:].std().clamp_min(1e-12)
    projected = projected * scale
    projected[0] = 0
    return projected.to(torch.float32), (vt[:hidden_size].T * scale).to(torch.float32)


class Adapter(nn.Module):
    """Maps frozen text-embedding space into the recommender's space."""

    def __init__(self, in_dim: int, hidden_size: int, kind: str = "linear", init: str = "torch") -> None:
        """kind: "linear" (LLM2Rec's), "mlp" (Linear, GELU, Linear), "llmemb" (Linear(D, D/2), Linear(D/2, hidden),
        no activation: LLMEmb's models/Adapter.py); init "xavier": xavier_normal weights, zero biases (LLM2Rec),
        "xavier-weights": xavier_normal weights, torch's biases (LLMEmb's BaseModel._init_weights)."""
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, hidden_size)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        elif kind == "llmemb":
            self.net = nn.Sequential(nn.Linear(in_dim, in_dim // 2), nn.Linear(in_dim // 2, hidden_size))
        else:
            raise ValueError(f"adapter must be 'linear', 'mlp' or 'llmemb', got {kind!r}")
        if init in ("xavier", "xavier-weights"):
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_normal_(module.weight)
                    if init == "xavier":
                        nn.init.zeros_(module.bias)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FrozenItemEmbedding(nn.Module):
    """Frozen pretrained vectors (e.g. LLM item embeddings) + a trainable adapter.

    The frozen table is a buffer, so a checkpoint is self-contained and
    reproduces its metrics without the original embedding file.
    """

    def __init__(self, embeddings: torch.Tensor, hidden_size: int, adapter: str = "linear",
                 standardize: bool = False, fit_rows: torch.Tensor | None = None, adapter_init: str = "torch") -> None:
        """`fit_rows` (bool [rows]): the items whose statistics the standardisation uses (warm items on a
        cold-start split: a cold item's text must not shape the transform it is later put through)."""
        super().__init__()
        frozen = embeddings.detach().to(torch.float32).clone()
        self.register_buffer("frozen", frozen)
        # Raw LLM embeddings are anisotropic (mean pairwise cosine ~.9): per-dimension standardisation over the
        # catalogue spreads them before the adapter. Kept as buffers so a new item is transformed the same way.
        rows = frozen[1:] if fit_rows is None else frozen[fit_rows.to(torch.bool) & (torch.arange(len(frozen)) > 0)]
        mean = rows.mean(0) if standardize else torch.zeros(frozen.shape[1])
        std = rows.std(0).clamp_min(1e-6) if standardize else torch.ones(frozen.shape[1])
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.adapter = Adapter(embeddings.shape[1], hidden_size, adapter, adapter_init)

    def transform(self, frozen: torch.Tensor) -> torch.Tensor:
        return self.adapter((frozen - self.mean) / self.std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.transform(self.frozen[ids])
        return out * (ids != 0).unsqueeze(-1).to(out.dtype)

    def all_items(self) -> torch.Tensor:
        out = self.transform(self.frozen)
        return torch.cat([torch.zeros_like(out[:1]), out[1:]], dim=0)


class InitItemEmbedding(nn.Module):
    """LLM-initialised IDs: an ID table that starts on the text's principal components (text_init) and then
    trains as ID-SASRec's does. An item never trained (cold, or upserted later) gets its vector from its text
    through `text` (standardisation + a linear layer that never trains by gradient): the starting point, or,
    after `fit_cold_map`, a text -> ID map fitted on the warm items; the exported item encoder computes the
    same vector from the item's text."""

    def __init__(self, embeddings: torch.Tensor, hidden_size: int, warm: torch.Tensor) -> None:
        super().__init__()
        warm = warm.to(torch.bool).clone()
        warm[0] = False
        table, projection = text_init(embeddings, warm, hidden_size)
        self.ids = IDItemEmbedding(embeddings.shape[0] - 1, hidden_size, table)
        with torch.random.fork_rng(devices=[]):  # the fixed map draws no random numbers: training is that of IDs
            self.text = FrozenItemEmbedding(embeddings, hidden_size, "linear", standardize=True, fit_rows=warm)
        with torch.no_grad():
            self.text.adapter.net.weight.copy_(projection.T)
            self.text.adapter.net.bias.zero_()
        self.text.requires_grad_(False)
        self.register_buffer("warm", warm)

    @torch.no_grad()
    def fit_cold_map(self, ridge: float) -> None:
        """Replace the start by a text -> ID map: ridge regression (no intercept) of the trained ID rows of the
        warm items on their standardised text, so a cold item lands where items with its text were trained to."""
        z = ((self.text.frozen - self.text.mean) / self.text.std).to(torch.float64)
        target = self.ids.all_items().to(torch.float64)
        zw, tw = z[self.warm], target[self.warm]
        weight = torch.linalg.solve(zw.T @ zw + ridge * torch.eye(z.shape[1], dtype=torch.float64), zw.T @ tw)
        self.text.adapter.net.weight.copy_(weight.T.to(torch.float32))
        self.text.adapter.net.bias.zero_()

    def with_text(self, text: torch.Tensor) -> torch.Tensor:
        """The item table when the text path gives `text` [rows, hidden]: warm items are their trained IDs."""
        out = torch.where(self.warm.unsqueeze(-1), self.ids.all_items(), text)
        return torch.cat([torch.zeros_like(out[:1]), out[1:]], dim=0)

    def all_items(self) -> torch.Tensor:
        return self.with_text(self.text.all_items())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.ids(ids)  # training sees warm items only: the text path runs when a history holds a cold one
        cold = ~self.warm[ids] & (ids != 0)
        if bool(cold.any()):
            out = torch.where(cold.unsqueeze(-1), self.text(ids), out)
        return out


def read_embedding_file(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """Read a [rows, dim] matrix and, when the file carries them, the item id of every row.

    safetensors: tensor "embeddings" (or the only tensor) and optional metadata
    "item_ids" (a JSON list). npy: the matrix alone, never unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"item embedding file not found: {path}")
    ids: list[str] | None = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            keys = list(f.keys())
            key = EMBEDDINGS_KEY if EMBEDDINGS_KEY in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{path}: expected a tensor named {EMBEDDINGS_KEY!r} (found {keys})")
            matrix = f.get_tensor(key)
            meta = f.metadata() or {}
        if "item_ids" in meta:
            ids = [str(x) for x in json.loads(meta["item_ids"])]
    elif path.suffix == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: not a plain numeric .npy array ({e})") from None
    else:
        raise ValueError(f"{path}: item embeddings must be .safetensors or .npy, got {path.suffix!r}")
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise ValueError(f"{path}: expected a 2-D float matrix, got shape {matrix.shape} dtype {matrix.dtype}")
    if ids is not None and len(ids) != matrix.shape[0]:
        raise ValueError(f"{path}: metadata has {len(ids)} item_ids for {matrix.shape[0]} rows")
    return matrix.astype(np.float32), ids


def load_item_embeddings(path: str | Path, item_ids: list[str]) -> tuple[torch.Tensor, dict]:
    """Frozen item vectors aligned with the dataset's internal ids (row 0 = padding).

    A file that names its rows is re-ordered by id; every id must be known to the
    dataset and every dataset item present. A file without ids must have exactly
    one row per internal id.
    """
    matrix, file_ids = read_embedding_file(path)
    num_rows = len(item_ids)
    if file_ids is None:
        if matrix.shape[0] != num_rows:
            raise ValueError(
                f"{path}: {matrix.shape[0]} embedding rows, but the dataset needs {num_rows} "
                f"({num_rows - 1} items + padding row 0); was it made for another dataset or filtering?"
            )
        aligned = matrix
    else:
        position = {raw: i for i, raw in enumerate(item_ids)}
        unknown = [raw for raw in file_ids[1:] if raw not in position]
        if unknown:
            raise ValueError(
                f"{path}: {len(unknown)} item ids unknown to the dataset (e.g. {unknown[:5]}); "
                "the file was made for another dataset or filtering"
            )
        present = set(file_ids[1:])
        missing = [raw for raw in item_ids[1:] if raw not in present]
        if missing:
            raise ValueError(f"{path}: no embedding for {len(missing)} dataset items (e.g. {missing[:5]})")
        aligned = np.zeros((num_rows, matrix.shape[1]), dtype=np.float32)
        for row, raw in enumerate(file_ids[1:], start=1):
            aligned[position[raw]] = matrix[row]
    if not np.isfinite(aligned[1:]).all():
        raise ValueError(f"{path}: embeddings contain NaN or infinite values")
    info = {"path": str(path), "sha256": sha256_file(Path(path)), "dim": int(matrix.shape[1])}
    return torch.from_numpy(np.ascontiguousarray(aligned)), info
