"""Real ONNX exports of tiny random models, shared by the repository and Triton tests (no downloads).

`build_tiny_exports(folder)` makes, once per test session (a marker file says
the folder is complete): a 2-layer hidden-32 Llama embedder checkpoint (the
tiny model and word-level tokenizer of tests/train/embedder/conftest.py; "eos"
pooling, a template and max_length 12 so the tokenizer step has to template,
truncate and append EOS), its export by `export.onnx.embedder.export_embedder`,
an untrained SASRec (hidden 16, 30 items) saved with `save_checkpoint` and its
export by `export.onnx.user_encoder.export_user_encoder`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

TESTS = Path(__file__).resolve().parents[1]
DONE = "complete"
TEMPLATE = "title: {text}"
MAX_LENGTH = 12
TEXTS = ["toy story", "star wars", "return of the jedi", "kalo mitu resa", "a b 1 2 3 4 5 6 7 8 9 0 toy story movie",
         "unknownword", ""]


def load_module(path: Path, name: str):
    """Import a file by path (test helpers are not a package under --import-mode=importlib)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_tiny_exports(folder: Path) -> SimpleNamespace:
    """Exports under `folder` (built on first call, reused after): embedder/, user_encoder/, checkpoint/."""
    folder = Path(folder)
    out = SimpleNamespace(root=folder, embedder=folder / "onnx_embedder", user_encoder=folder / "onnx_user_encoder",
                          checkpoint=folder / "embedder_checkpoint", srs=folder / "srs")
    if (folder / DONE).is_file():
        return out
    import torch

    from export.onnx.embedder import export_embedder
    from export.onnx.user_encoder import export_user_encoder
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
    config = EmbedderConfig(base=str(base), pooling="eos", template=TEMPLATE, max_length=MAX_LENGTH)
    ItemEmbedder.from_base(config, device="cpu", dtype=torch.float32).save(out.checkpoint)
    export_embedder(out.checkpoint, out.embedder)
    torch.manual_seed(0)
    srs = SequentialRecommender(SRSConfig(hidden_size=16, ffn_size=16, num_heads=2, max_len=10), num_items=30).eval()
    save_checkpoint(srs, out.srs, {})
    export_user_encoder(out.srs, out.user_encoder)
    (folder / DONE).write_text("ok\n")
    return out
