"""Pooling on hand-computed cases, under left and right padding."""

from __future__ import annotations

import pytest
import torch

from train.embedder import last_valid_index, pool

# one text of 2 tokens with states [1, 2] and [3, 6], another of 3 tokens
TEXT_A = [[1.0, 2.0], [3.0, 6.0]]
TEXT_B = [[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]]
PAD = [99.0, -99.0]  # garbage in padded positions must never leak into a pooled vector


def batch(padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    if padding == "right":
        hidden = [TEXT_A + [PAD], TEXT_B]
        mask = [[1, 1, 0], [1, 1, 1]]
    else:
        hidden = [[PAD] + TEXT_A, TEXT_B]
        mask = [[0, 1, 1], [1, 1, 1]]
    return torch.tensor(hidden), torch.tensor(mask)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_mean_is_average_of_valid_tokens(padding):
    hidden, mask = batch(padding)
    expected = torch.tensor([[2.0, 4.0], [2.0, 4.0]])  # (1+3)/2, (2+6)/2 ; (0+2+4)/3, (1+3+8)/3
    assert torch.allclose(pool(hidden, mask, "mean"), expected)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("method", ["last", "eos"])
def test_last_and_eos_take_the_last_valid_token(padding, method):
    hidden, mask = batch(padding)
    expected = torch.tensor([[3.0, 6.0], [4.0, 8.0]])
    assert torch.equal(pool(hidden, mask, method), expected)


def test_last_valid_index_left_right_and_empty():
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert last_valid_index(mask).tolist() == [1, 3, 3, 0]


def test_eos_pooling_checks_the_token_when_asked():
    hidden, mask = batch("right")
    ids_ok = torch.tensor([[5, 2, 0], [6, 7, 2]])
    assert torch.equal(pool(hidden, mask, "eos", input_ids=ids_ok, eos_token_id=2), pool(hidden, mask, "last"))
    ids_bad = torch.tensor([[5, 9, 2], [6, 7, 2]])  # EOS sits in padding for row 0
    with pytest.raises(ValueError, match="EOS"):
        pool(hidden, mask, "eos", input_ids=ids_bad, eos_token_id=2)


def test_pool_returns_float32_from_bf16_and_rejects_bad_input():
    hidden, mask = batch("right")
    assert pool(hidden.to(torch.bfloat16), mask, "mean").dtype == torch.float32
    with pytest.raises(ValueError, match="one of"):
        pool(hidden, mask, "max")
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        pool(hidden[0], mask, "mean")


def test_mean_can_leave_the_first_valid_token_out_under_any_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "mean", skip_first=True).flatten().tolist() == [1.5, 6.0]  # (1+2)/2, (5+6+7)/3
    assert pool(hidden, left, "mean", skip_first=True).flatten().tolist() == [2.5, 6.0]  # (2+3)/2
    assert pool(hidden, right, "mean").flatten().tolist() == [1.0, 5.5]


def test_the_embedder_averages_the_text_tokens_not_the_bos(tiny_dir):
    from train.embedder import EmbedderConfig, ItemEmbedder

    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir("llama"))), device="cpu")
    batch = embedder.tokenize(["toy story the movie"])
    assert embedder.adds_bos and batch["input_ids"][0, 0] == embedder.tokenizer.bos_token_id
    with torch.no_grad():
        hidden = embedder.forward_hidden(batch["input_ids"], batch["attention_mask"])
        assert torch.allclose(embedder(batch["input_ids"], batch["attention_mask"])[0], hidden[0, 1:].mean(0))
