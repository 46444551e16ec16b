"""ItemEmbedder on tiny Llama/Qwen2 models: tokenisation, encode, LoRA, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.embedder import FORMAT, EmbedderConfig, ItemEmbedder

TEXTS = ["toy story", "the star wars return of the jedi", "a", "kalo mitu resa nope kalo", "toy story 2", "movie"]


def perturb_lora(embedder: ItemEmbedder, seed: int = 0) -> None:
    """LoRA's B matrices start at zero (adapter = identity); give them values so the adapters matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in embedder.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def test_tokenize_template_bos_truncation_and_right_padding(tiny_embedder_factory, tiny_tokens):
    embedder = tiny_embedder_factory("llama", template="title {text}", max_length=5)
    batch = embedder.tokenize(["toy story", "the star wars return of the jedi"])
    vocab = embedder.tokenizer.get_vocab()
    assert batch["input_ids"][0].tolist() == [tiny_tokens.bos_id, vocab["title"], vocab["toy"], vocab["story"],
                                              embedder.pad_token_id]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]  # truncated to max_length
    assert batch["input_ids"][1].tolist()[:3] == [tiny_tokens.bos_id, vocab["title"], vocab["the"]]


def test_eos_is_appended_even_after_truncation(tiny_embedder_factory, tiny_tokens):
    embedder = tiny_embedder_factory("llama", pooling="eos", max_length=4)
    ids = embedder.token_ids(["toy", "the star wars return of the jedi"])
    assert ids[0] == [tiny_tokens.bos_id, embedder.tokenizer.get_vocab()["toy"], tiny_tokens.eos_id]
    assert len(ids[1]) == 4 and ids[1][-1] == tiny_tokens.eos_id
    assert all(tiny_tokens.eos_id not in row for row in tiny_embedder_factory("llama").token_ids(TEXTS))
    with pytest.raises(TypeError, match="not one string"):
        embedder.token_ids("toy story")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("pooling", ["mean", "eos"])
def test_encode_restores_order_after_length_sorting(tiny_embedder_factory, arch, pooling):
    embedder = tiny_embedder_factory(arch, pooling=pooling)
    batched = embedder.encode(TEXTS, batch_size=2, progress=False)
    one_by_one = np.stack([embedder.encode([t], progress=False)[0] for t in TEXTS])
    assert batched.dtype == np.float32 and batched.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert len({tuple(np.round(row, 4)) for row in batched}) == len(TEXTS)
    assert embedder.encode([], progress=False).shape == (0, 32)


def test_encode_keeps_training_mode_and_normalize(tiny_embedder_factory):
    embedder = tiny_embedder_factory("llama", normalize=True).train()
    vectors = embedder.encode(TEXTS[:3], progress=False)
    assert embedder.training
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_forward_logits_shape_and_attention_mode(tiny_embedder_factory):
    embedder = tiny_embedder_factory("qwen2")
    batch = embedder.tokenize(["toy story of the", "a"])
    with torch.no_grad():
        bidirectional = embedder.forward_logits(**batch)
        embedder.config.attention = "causal"
        causal = embedder.forward_logits(**batch)
        reference = embedder.causal_lm(**batch).logits  # transformers' own causal path (right padding)
    assert bidirectional.shape == (2, batch["input_ids"].shape[1], len(embedder.tokenizer))
    assert not torch.allclose(bidirectional[0, 0], causal[0, 0], atol=1e-3)
    valid = batch["attention_mask"].bool()
    assert torch.allclose(causal[valid], reference[valid], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_changes_embeddings_and_merges_exactly(tiny_embedder_factory, arch):
    embedder = tiny_embedder_factory(arch, lora={"r": 4, "alpha": 8})
    before = embedder.encode(TEXTS, progress=False)
    embedder.apply_lora()
    assert embedder.is_peft and embedder.config.lora.enabled
    trainable = {n for n, p in embedder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    np.testing.assert_allclose(embedder.encode(TEXTS, progress=False), before, atol=1e-6)  # B = 0 at start
    perturb_lora(embedder)
    adapted = embedder.encode(TEXTS, progress=False)
    assert np.abs(adapted - before).max() > 1e-2
    with pytest.raises(RuntimeError, match="already applied"):
        embedder.apply_lora()
    embedder.merge_lora()
    assert not embedder.is_peft and embedder.lora_merged
    np.testing.assert_allclose(embedder.encode(TEXTS, progress=False), adapted, atol=1e-5)
    with pytest.raises(RuntimeError, match="no LoRA adapters"):
        embedder.merge_lora()


def test_lora_targets_must_exist(tiny_embedder_factory):
    embedder = tiny_embedder_factory("llama", lora={"target_modules": ["q_proj", "c_attn"]})
    embedder.apply_lora()
    targeted = {n.split(".")[-4] for n, _ in embedder.named_parameters() if "lora_A" in n}
    assert targeted == {"q_proj"}
    with pytest.raises(ValueError, match="none of EmbedderConfig.lora.target_modules"):
        tiny_embedder_factory("llama", lora={"target_modules": ["c_attn"]}).apply_lora()


def test_gradient_checkpointing_trains_lora(tiny_embedder_factory):
    embedder = tiny_embedder_factory("llama", lora={"enabled": True, "r": 4}, gradient_checkpointing=True)
    assert embedder.is_peft and embedder.causal_lm.is_gradient_checkpointing
    embedder.train()
    batch = embedder.tokenize(TEXTS[:3])
    embedder(**batch).pow(2).mean().backward()
    grads = [p.grad for n, p in embedder.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)
    embedder.set_gradient_checkpointing(False)
    assert not embedder.causal_lm.is_gradient_checkpointing and not embedder.config.gradient_checkpointing


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_save_load_full_model(tiny_embedder_factory, tmp_path, arch):
    embedder = tiny_embedder_factory(arch, pooling="eos", template="title {text}", normalize=True)
    expected = embedder.encode(TEXTS, progress=False)
    folder = embedder.save(tmp_path / "ckpt")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == FORMAT == "llmrec.embedder/1" and meta["weights"] == "model"
    assert meta["base"]["hidden_size"] == 32 and meta["base"]["architecture"].endswith("ForCausalLM")
    assert EmbedderConfig.from_dict(meta["embedder"]) == embedder.config
    assert (folder / "model" / "model.safetensors").is_file() and (folder / "model" / "tokenizer.json").is_file()
    loaded = ItemEmbedder.load(folder, device="cpu")
    assert loaded.config == embedder.config and not loaded.training
    np.testing.assert_array_equal(loaded.encode(TEXTS, progress=False), expected)
    embedder.save(folder)  # overwriting an existing checkpoint works and leaves no temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_save_load_lora_merged_and_adapter(tiny_embedder_factory, tmp_path):
    embedder = tiny_embedder_factory("llama", lora={"enabled": True, "r": 4})
    perturb_lora(embedder)
    expected = embedder.encode(TEXTS, progress=False)
    merged_dir = embedder.save(tmp_path / "merged", merge=True)
    assert embedder.is_peft, "saving merged weights must leave the live model's adapters in place"
    np.testing.assert_allclose(embedder.encode(TEXTS, progress=False), expected, atol=1e-6)
    adapter_dir = embedder.save(tmp_path / "adapter", merge=False)
    assert (adapter_dir / "adapter" / "adapter_model.safetensors").is_file() and not (adapter_dir / "model").exists()
    merged = ItemEmbedder.load(merged_dir, device="cpu")
    assert not merged.is_peft and merged.lora_merged
    np.testing.assert_allclose(merged.encode(TEXTS, progress=False), expected, atol=1e-5)
    adapted = ItemEmbedder.load(adapter_dir, device="cpu")
    assert adapted.is_peft and not any(p.requires_grad for p in adapted.parameters())
    np.testing.assert_allclose(adapted.encode(TEXTS, progress=False), expected, atol=1e-6)
    trainable = ItemEmbedder.load(adapter_dir, device="cpu", trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())


def test_load_rejects_foreign_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an embedder checkpoint"):
        ItemEmbedder.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match="llmrec.embedder/1"):
        ItemEmbedder.load(tmp_path)


@pytest.mark.parametrize("use_dora", [False, True])
def test_merged_state_dict_matches_peft_merge(tiny_model_dir, use_dora):
    """Plain LoRA merges out of place; DoRA takes the in-place fallback. Both equal peft's merge_and_unload."""
    import copy

    from peft import LoraConfig, get_peft_model

    from train.embedder import load_causal_lm, merged_state_dict

    model = load_causal_lm(tiny_model_dir("llama"), "cpu", torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                                  use_dora=use_dora))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    state = merged_state_dict(peft_model)
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(state[key], value, atol=1e-6, rtol=1e-5)
