"""Tiny randomly initialised causal LMs (Llama, Qwen2, Mistral) with an in-memory tokenizer: no downloads.

`tiny_model_dir(arch)` returns a saved Hugging Face folder (config.json, safetensors,
tokenizer) that every loader treats like a real base model. The tokenizer mimics
SmolLM2: it prepends BOS and has no pad token. With `eos_mismatch=True` it also
reproduces SmolLM2's naming problem: the tokenizer's eos_token is the BOS token
while config.eos_token_id is another token ("<eos>").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SPECIALS = ["<unk>", "<bos>", "<eos>", "<sep>"]
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
EXTRA_WORDS = ["toy", "story", "the", "movie", "title", "list", "star", "wars", "return", "of", "jedi", "a", "b",
               *[str(d) for d in range(10)]]


def tiny_words(count: int = 300) -> list[str]:
    """Deterministic made-up words ("kalo", "mitu", ...) plus a few test words."""
    syllables = ["ka", "lo", "mi", "tu", "re", "sa", "no", "pe", "zi", "do", "fu", "ga", "be", "ri"]
    made = ["".join(p) for p in itertools.product(syllables, repeat=2)]
    made += ["".join(p) for p in itertools.product(syllables, repeat=3)]
    return EXTRA_WORDS + made[: count - len(EXTRA_WORDS)]


def build_tiny_tokenizer(eos_mismatch: bool = False):
    """A word-level fast tokenizer: BOS prepended by its post-processor, unknown words -> <unk>, no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + tiny_words())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<bos>" if eos_mismatch else "<eos>",
        unk_token="<unk>",
    )


def build_tiny_model(arch: str, vocab_size: int, seed: int = 0):
    """A 2-layer, hidden-32 causal LM of `arch` ("llama", "qwen2", "mistral") with random weights."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        tie_word_embeddings=False, initializer_range=0.1,  # larger than 0.02: attention far from uniform
    )
    configs = {
        "llama": lambda: LlamaConfig(**common),
        "qwen2": lambda: Qwen2Config(**common, use_sliding_window=False),
        "mistral": lambda: MistralConfig(**common, sliding_window=None),
    }
    if arch not in configs:
        raise ValueError(f"unknown tiny architecture {arch!r}; one of {sorted(configs)}")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(configs[arch]())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Callable[..., Path]:
    """Factory: `tiny_model_dir(arch="llama", eos_mismatch=False) -> Path` of a saved tiny model (built once)."""
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[tuple[str, bool], Path] = {}

    def make(arch: str = "llama", eos_mismatch: bool = False) -> Path:
        key = (arch, eos_mismatch)
        if key not in built:
            folder = root / f"{arch}{'-eos-mismatch' if eos_mismatch else ''}"
            tokenizer = build_tiny_tokenizer(eos_mismatch)
            model = build_tiny_model(arch, len(tokenizer))
            model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
            built[key] = folder
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_tokens() -> SimpleNamespace:
    """The tiny tokenizer's special ids and its builder, for tests that check token handling."""
    return SimpleNamespace(unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, build_tokenizer=build_tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_embedder_factory(tiny_model_dir):
    """Factory: `tiny_embedder_factory(arch="llama", **config_fields) -> ItemEmbedder` on CPU float32."""
    from train.embedder import EmbedderConfig, ItemEmbedder

    def make(arch: str = "llama", eos_mismatch: bool = False, **fields):
        config = EmbedderConfig(base=str(tiny_model_dir(arch, eos_mismatch)), **fields)
        return ItemEmbedder.from_base(config, device="cpu", dtype=torch.float32)

    return make
