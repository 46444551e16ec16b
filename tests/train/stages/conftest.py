"""Fixtures of the stage tests: the tiny Llama/Qwen2 model folders of tests/train/embedder, and the planted
dataset with titles made of words the tiny tokenizer knows (its own titles are mostly <unk>)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_embedder_fixtures", Path(__file__).parents[1] / "embedder" /
                                               "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
build_tiny_tokenizer, build_tiny_model, tiny_words = (_fixtures.build_tiny_tokenizer, _fixtures.build_tiny_model,
                                                      _fixtures.tiny_words)
BOS_ID, EOS_ID, UNK_ID = _fixtures.BOS_ID, _fixtures.EOS_ID, _fixtures.UNK_ID



@pytest.fixture(scope="session")
def worded_data(planted_data):
    """planted_data with titles of 2-4 tiny-vocabulary words per item."""
    words = tiny_words()[23:]
    titles = [""] + [" ".join(words[(7 * i + k) % len(words)] for k in range(2 + i % 3))
                     for i in range(1, planted_data.num_items + 1)]
    return dataclasses.replace(planted_data, item_features={**planted_data.item_features, "movie_title": titles})


@pytest.fixture(scope="session")
def toks():
    """The tiny tokenizer's ids and builder (conftest modules cannot be imported under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(bos=BOS_ID, eos=EOS_ID, unk=UNK_ID, build=build_tiny_tokenizer)
