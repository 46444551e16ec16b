"""Fixtures shared across packages: a small generated dataset with a planted pattern."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrec.logs import TextFormatter
from train.data import DataConfig, load_dataset

PLANTED_ITEMS = 40


def write_planted_atomic(folder: Path, num_users: int = 120, num_items: int = PLANTED_ITEMS, seed: int = 0) -> Path:
    """RecBole atomic files where every user walks the item cycle i -> i+1 (mod num_items).

    The next item is fully determined by the last one, so a working sequential
    model approaches Recall@10 = 1 while random ranking gives 10 / num_items.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.name
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(num_users):
        start, length = int(rng.integers(num_items)), int(rng.integers(12, 20))
        for t in range(length):
            inter.append(f"u{u}\ti{(start + t) % num_items}\t5\t{1000 + 10 * t}")
    (folder / f"{name}.inter").write_text("\n".join(inter) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\tclass:token_seq"]
    items += [f"i{i}\tItem number {i}\t{'Drama' if i % 2 else 'Comedy'}" for i in range(num_items)]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n")
    return folder


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """pytest's caplog, its text rendered as a person reads the logs: an event with its fields (`extra`)."""
    caplog.handler.setFormatter(TextFormatter())
    return caplog


@pytest.fixture(scope="session")
def planted_folder(tmp_path_factory) -> Path:
    return write_planted_atomic(tmp_path_factory.mktemp("data") / "planted")


@pytest.fixture(scope="session")
def planted_data(planted_folder, tmp_path_factory):
    return load_dataset(planted_folder, DataConfig(k_core=5), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Factory: tiny_dir("llama" | "qwen2") -> saved HF folder of the tiny random model of
    tests/train/embedder/conftest.py (built once per session, shared by the stage and export tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tiny_model_builders",
                                                  Path(__file__).parent / "train" / "embedder" / "conftest.py")
    builders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builders)
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def make(arch: str = "llama") -> Path:
        if arch not in built:
            tokenizer = builders.build_tiny_tokenizer()
            model = builders.build_tiny_model(arch, len(tokenizer))
            folder = root / arch
            model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
            built[arch] = folder
        return built[arch]

    return make

