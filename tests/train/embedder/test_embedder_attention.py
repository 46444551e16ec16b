"""Bidirectional vs causal attention on tiny Llama/Qwen2/Mistral models, and padding invariance."""

from __future__ import annotations

import pytest
import torch

from train.embedder import attention_mask_4d, model_inputs, position_ids_from_mask

ARCHS = ["llama", "qwen2", "mistral"]
TEXT = "toy story of the star wars"


def test_mask_values_and_position_ids():
    mask2d = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert attention_mask_4d(mask2d, torch.float32, "causal") is mask2d
    mask = attention_mask_4d(mask2d, torch.bfloat16, "bidirectional")
    assert mask.shape == (2, 1, 4, 4) and mask.dtype == torch.bfloat16
    low = torch.finfo(torch.bfloat16).min
    for query in range(4):  # every query row: 0 on valid keys, min on padded keys, no causal triangle
        assert mask[0, 0, query].tolist() == [0, 0, 0, low]
        assert mask[1, 0, query].tolist() == [low, 0, 0, 0]
    assert position_ids_from_mask(mask2d).tolist() == [[0, 1, 2, 2], [0, 0, 1, 2]]
    with pytest.raises(ValueError, match="one of"):
        attention_mask_4d(mask2d, torch.float32, "full")
    with pytest.raises(ValueError, match="differ in shape"):
        model_inputs(torch.zeros(2, 3, dtype=torch.long), mask2d, torch.float32, "causal")


@pytest.mark.parametrize("arch", ARCHS)
def test_first_position_sees_the_last_token_only_when_bidirectional(tiny_embedder_factory, arch):
    embedder = tiny_embedder_factory(arch)
    batch = embedder.tokenize(["toy story of the star wars", "toy story of the star jedi"])
    assert (batch["input_ids"][0] != batch["input_ids"][1]).sum() == 1  # only the last token differs
    changes = {}
    for mode in ("causal", "bidirectional"):
        embedder.config.attention = mode
        with torch.no_grad():
            hidden = embedder.forward_hidden(batch["input_ids"], batch["attention_mask"])
        changes[mode] = (hidden[0, :-1] - hidden[1, :-1]).abs().max().item()
    assert changes["causal"] == 0.0, "a causal prefix must not depend on a later token"
    assert changes["bidirectional"] > 1e-3, "bidirectional states must depend on the last token"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_left_and_right_padding_match_the_unpadded_text(tiny_embedder_factory, arch, mode):
    embedder = tiny_embedder_factory(arch, attention=mode)
    single = embedder.tokenize([TEXT])
    n = single["input_ids"].shape[1]
    right = embedder.tokenize([TEXT, TEXT + " kalo mitu resa nope"])  # right-padded by 4
    pad = right["input_ids"].shape[1] - n
    assert pad == 4 and right["attention_mask"][0].sum() == n
    left_ids = torch.cat([torch.full((1, pad), embedder.pad_token_id), single["input_ids"]], dim=1)
    left_mask = torch.cat([torch.zeros(1, pad, dtype=torch.long), single["attention_mask"]], dim=1)
    with torch.no_grad():
        reference = embedder.forward_hidden(single["input_ids"], single["attention_mask"])[0]
        right_states = embedder.forward_hidden(right["input_ids"], right["attention_mask"])[0, :n]
        left_states = embedder.forward_hidden(left_ids, left_mask)[0, pad:]
        pooled = [embedder(ids, mask)[0] for ids, mask in
                  [(single["input_ids"], single["attention_mask"]), (right["input_ids"], right["attention_mask"]),
                   (left_ids, left_mask)]]
    assert torch.allclose(right_states, reference, atol=1e-4)
    assert torch.allclose(left_states, reference, atol=1e-4)
    assert torch.allclose(pooled[1], pooled[0], atol=1e-4) and torch.allclose(pooled[2], pooled[0], atol=1e-4)


def test_a_4d_mask_is_used_as_given(tiny_embedder_factory):
    """Mechanism check: our 4D mask plus the causal triangle reproduces transformers' own causal path, so the
    model applies a 4D mask verbatim and the bidirectional mask differs from causal by the triangle only."""
    embedder = tiny_embedder_factory("llama", attention="causal")
    batch = embedder.tokenize(["toy story of the star wars", "the movie"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    length = ids.shape[1]
    low = torch.finfo(torch.float32).min
    bidirectional = attention_mask_4d(mask, torch.float32, "bidirectional")
    triangle = torch.triu(torch.full((length, length), low), diagonal=1)
    causal_4d = (bidirectional + triangle).clamp(min=low)
    decoder = embedder.causal_lm.get_decoder()
    with torch.no_grad():
        expected = embedder.forward_hidden(ids, mask)
        got = decoder(input_ids=ids, attention_mask=causal_4d, position_ids=position_ids_from_mask(mask),
                      use_cache=False).last_hidden_state
    valid = mask.bool()
    assert torch.allclose(got[valid], expected[valid], atol=1e-5)
