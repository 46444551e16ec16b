"""A tiny but complete deployment for the gateway tests: real exports, a Triton repository and an item index.

`build_deployment(folder, data)` makes, once per test session (a marker file
says the folder is complete), from the planted dataset of tests/conftest.py
with titles made of words the tiny tokenizer knows:
  - a tiny Llama embedder checkpoint (tests/train/embedder/conftest.py: random, hidden 32, word-level tokenizer)
    and the LLM embeddings of every item title (torch, `ItemEmbedder.encode`);
  - an untrained SASRec (hidden 16, history 10) reading those embeddings through a standardising linear adapter;
  - the embedder exported *with that adapter* (so Triton's item_encoder gives 16-d vectors in the SRS item
    space: upserted items are comparable with the catalogue) and the user encoder export;
  - a python-flavour Triton repository (`write_repository`) and a Flat inner-product index snapshot with the
    item table and the titles (`ItemIndex.save(..., store=...)`).
The torch SRS is returned too: the tests compute the offline answer with it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
DONE = "complete"
MAX_LEN = 10
HIDDEN = 16


def load_module(path: Path, name: str):
    """Import a file by path (test helpers are not a package under --import-mode=importlib)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def item_titles(num_items: int) -> list[str]:
    """Title of every internal id (index 0 = padding, ""): 2-4 words of the tiny vocabulary, all distinct."""
    tiny = load_module(TESTS / "train" / "embedder" / "conftest.py", "llmrec_tiny_models")
    words = tiny.tiny_words()[23:]
    return [""] + [" ".join(words[(7 * i + k) % len(words)] for k in range(2 + i % 3)) for i in range(1, num_items + 1)]


def paths(folder: Path) -> SimpleNamespace:
    return SimpleNamespace(root=folder, checkpoint=folder / "embedder_checkpoint", srs=folder / "srs",
                           embedder=folder / "onnx_embedder", user_encoder=folder / "onnx_user_encoder",
                           repository=folder / "model_repository", index=folder / "index")


def build_deployment(folder: Path, num_items: int) -> SimpleNamespace:
    """Everything under `folder` (built on the first call, reused after); see the module docstring."""
    folder = Path(folder)
    out = paths(folder)
    out.titles = item_titles(num_items)
    out.max_len = MAX_LEN
    if (folder / DONE).is_file():
        return out
    import torch

    from export.onnx.embedder import export_embedder
    from export.onnx.user_encoder import export_user_encoder
    from export.triton.repository import RepositoryOptions, write_repository
    from llmrec.files import sha256_file
    from serving.index import Item, ItemIndex, ItemStore
    from train.embedder import EmbedderConfig, ItemEmbedder
    from train.srs.checkpoint import save_checkpoint
    from train.srs.config import SRSConfig
    from train.srs.model import SequentialRecommender

    tiny = load_module(TESTS / "train" / "embedder" / "conftest.py", "llmrec_tiny_models")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny.build_tiny_tokenizer()
    base = folder / "base"
    tiny.build_tiny_model("llama", len(tokenizer)).save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(base), pooling="mean", max_length=16), device="cpu",
                                      dtype=torch.float32)
    embedder.save(out.checkpoint)
    llm = embedder.encode(out.titles[1:], progress=False)
    table = np.zeros((num_items + 1, llm.shape[1]), dtype=np.float32)
    table[1:] = llm

    torch.manual_seed(0)
    config = SRSConfig(hidden_size=HIDDEN, ffn_size=HIDDEN, num_heads=2, max_len=MAX_LEN, items="frozen",
                       adapter="linear", standardize=True, dropout=0.0)
    srs = SequentialRecommender(config, num_items, frozen_embeddings=torch.from_numpy(table)).eval()
    save_checkpoint(srs, out.srs, {})
    export_embedder(out.checkpoint, out.embedder, adapter=out.srs)
    export_user_encoder(out.srs, out.user_encoder)
    write_repository(out.embedder, out.user_encoder, out.repository,
                     RepositoryOptions(flavour="python", threads=1, max_queue_delay_us=1000))

    from safetensors.numpy import load_file

    vectors = load_file(str(out.user_encoder / "item_vectors.safetensors"))["embeddings"]
    index = ItemIndex(dim=vectors.shape[1], metric="inner_product", factory="Flat", use_gpu=False)
    index.upsert(np.arange(1, num_items + 1, dtype=np.int64), vectors[1:])
    store = ItemStore([Item(i, out.titles[i], {}, key(i)) for i in range(1, num_items + 1)])
    # the provenance export.index records: the gateway refuses an index built from another item table
    index.save(out.index, extra={"score": "inner_product", "source": "tests/serving/deployment.py",
                                 "item_vectors_sha256": sha256_file(out.user_encoder / "item_vectors.safetensors")},
               store=store)
    (folder / DONE).write_text(json.dumps({"num_items": num_items}) + "\n")
    return out


def key(row: int) -> str:
    """The catalogue id of internal row `row` (the planted dataset's raw item id): what the gateway speaks."""
    return f"i{row - 1}"


def keys(rows: list[int]) -> list[str]:
    return [key(int(r)) for r in rows]


def rows(ids: list[str]) -> list[int]:
    """Internal rows of catalogue ids of the catalogue items (the offline model's item numbers)."""
    return [int(i[1:]) + 1 for i in ids]


def load_srs(deployment: SimpleNamespace):
    """The torch SRS of the deployment (eval mode)."""
    from train.srs.checkpoint import load_checkpoint

    model, _ = load_checkpoint(deployment.srs)
    return model.eval()


def offline_top_k(model, history: list[int], k: int, exclude_history: bool) -> tuple[list[int], np.ndarray]:
    """The reference answer: torch user vector of the last max_len items + exact inner-product top-k."""
    import torch

    window = history[-model.config.max_len:]
    with torch.no_grad():
        table = model.item_vectors()
        user = model.user_vectors(torch.tensor([window]), table)[0]
        scores = (table @ user).numpy().astype(np.float64)
    scores[0] = -np.inf
    if exclude_history:
        scores[list(set(history))] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(i) for i in order], scores[order]
