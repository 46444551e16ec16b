"""MNTP: non-special tokens selected independently with p 0.2 then 80/10/10 (BERT's collator, as LLM2Rec runs it),
labels predicted from the previous position, 10% of the titles held out, a loss that learns."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from train.embedder import EmbedderConfig, ItemEmbedder
from train.stages import MNTPConfig, make_stage, run_stage
from train.stages.common import IGNORE, shifted_token_loss
from train.stages.mntp import mask_token_id, mask_tokens, split_holdout


def test_selects_each_text_token_independently_then_80_10_10(toks):
    config = MNTPConfig()
    rng = np.random.default_rng(0)
    special = {toks.bos, toks.eos}
    rows = [[toks.bos, *range(10, 30), toks.eos], [toks.bos, 11, 12, 13, 14, 15]]
    batch = mask_tokens(rows, special, 99, config, vocab_size=200, rng=rng, pad_id=toks.eos)
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    selected = labels != IGNORE
    assert not selected[:, 0].any() and not selected[0, 21]  # BOS and EOS never selected
    assert not selected[attention == 0].any() and attention[1].tolist() == [1] * 6 + [0] * 16
    original = torch.full_like(ids, IGNORE)
    original[0, :22] = torch.tensor(rows[0])
    original[1, :6] = torch.tensor(rows[1])
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(ids[~selected & (attention == 1)], original[~selected & (original != IGNORE)])
    # over many rows: 20% of the text tokens selected (not a fixed count per row), of them 80% -> mask, 10% -> a
    # random token, 10% unchanged
    many = mask_tokens([[toks.bos, *range(10, 110)]] * 400, special, 99, config, 200, rng, toks.eos)
    chosen = many["labels"] != IGNORE
    counts = chosen.sum(1)
    assert abs(chosen[:, 1:].float().mean().item() - 0.2) < 0.01 and counts.min() < 16 and counts.max() > 24
    picked = many["input_ids"][chosen]
    kept = (picked == many["labels"][chosen]).float().mean().item()
    as_mask = (picked == 99).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02 and 0.06 < kept < 0.14  # a random token may equal the original too


def test_holdout_is_a_tenth_of_the_titles_seeded(tmp_path):
    texts = [f"t{i}" for i in range(100)]
    train, held = split_holdout(texts, 0.1, seed=3)
    assert len(held) == 10 and sorted(train + held) == sorted(texts) and not set(train) & set(held)
    assert split_holdout(texts, 0.1, seed=3) == (train, held) and split_holdout(texts, 0.0, 3) == (texts, [])


def test_label_at_i_is_predicted_from_position_i_minus_1(tiny_dir):
    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir("llama"))), device="cpu")
    input_ids = torch.tensor([[1, 30, 31, 32, 33]])
    mask = torch.ones_like(input_ids)
    labels = torch.tensor([[IGNORE, IGNORE, 40, IGNORE, 41]])
    logits = embedder.forward_logits(input_ids, mask)
    # label 40 sits at position 2: predicted from position 1; label 41 at position 4: from position 3
    by_hand = F.cross_entropy(logits[0, 1:2], torch.tensor([40])) + F.cross_entropy(logits[0, 3:4], torch.tensor([41]))
    assert torch.allclose(shifted_token_loss(embedder, input_ids, mask, labels), by_hand / 2, atol=1e-5)


def test_mask_token_choice(toks):
    tok = toks.build()
    assert mask_token_id(tok, "the") == tok.convert_tokens_to_ids("the")
    assert mask_token_id(tok, "_") == toks.unk  # not in the tiny vocabulary: <unk>


def test_mntp_learns_bidirectionally(tiny_dir, worded_data, tmp_path):
    stage = make_stage("mntp", "paper", "demo", steps=40, batch_size=6, lora=False, lr=3e-3, log_every=1,
                       mask_ratio=0.4, mask_replace=1.0, random_replace=0.0, epochs=0.0, eval_every=10)
    stage.setup = _limit(stage.setup, 6)
    run_stage(stage, str(tiny_dir("qwen2")), worded_data, tmp_path / "m", device="cpu", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses
    saved = ItemEmbedder.load(tmp_path / "m" / "embedder")
    assert saved.config.attention == "bidirectional"
    stage_json = json.loads((tmp_path / "m" / "stage.json").read_text())
    assert stage_json["mask_token_id"] == 0 and stage_json["held_out"] > 0
    assert [e["step"] for e in stage_json["evaluations"]] == [10, 20, 30, 40] and stage_json["kept_step"] == 40


def _limit(setup, n):
    """Keep the first n titles only: every step sees the same batch."""
    def wrapped(embedder, data):
        setup(embedder, data)
        setup.__self__.ids = setup.__self__.ids[:n]
    return wrapped


def test_paper_profile():
    paper = MNTPConfig.profile("paper")
    assert (paper.steps, paper.epochs, paper.mask_ratio, paper.lr, paper.warmup_steps, paper.holdout) == (
        1000, 3.0, 0.2, 5e-5, 0, 0.1)
    assert (paper.mask_replace, paper.random_replace, paper.item_text, paper.bucket_batches) == (0.8, 0.1, "title", 1)
