"""MNTP: ~20% of the non-special tokens masked, labels predicted from the previous position, a loss that learns."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from train.embedder import EmbedderConfig, ItemEmbedder
from train.stages import MNTPConfig, make_stage, run_stage
from train.stages.common import IGNORE, shifted_token_loss
from train.stages.mntp import mask_token_id, mask_tokens


def test_masks_a_fifth_of_the_text_tokens_and_keeps_labels(toks):
    rng = np.random.default_rng(0)
    rows = [[toks.bos, *range(10, 30), toks.eos], [toks.bos, 11, 12, 13, 14, 15]]
    special = {toks.bos, toks.eos}
    batch = mask_tokens(rows, special, mask_id=99, ratio=0.2, rng=rng, pad_id=toks.eos)
    ids, labels = batch["input_ids"], batch["labels"]
    masked = labels != IGNORE
    assert masked[0].sum() == 4 and masked[1].sum() == 1  # round(0.2 * 20), at least one of 5
    assert (ids[masked] == 99).all() and not masked[:, 0].any()  # BOS never masked
    original = torch.full_like(ids, IGNORE)
    original[0, :22] = torch.tensor(rows[0])
    original[1, :6] = torch.tensor(rows[1])
    assert torch.equal(labels[masked], original[masked])
    assert torch.equal(ids[~masked & (batch["attention_mask"] == 1)], original[~masked & (original != IGNORE)])
    assert not masked[0, 21]  # EOS never masked
    assert batch["attention_mask"][1].tolist() == [1] * 6 + [0] * 16
    many = mask_tokens([[toks.bos, *range(10, 110)]] * 50, special, 99, 0.2, rng, toks.eos)["labels"]
    assert (many != IGNORE).float().mean().item() == np.float32(20 / 101)


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
    stage = make_stage("mntp", "demo", steps=20, batch_size=6, lora=False, lr=3e-3, warmup_ratio=0.0, log_every=1,
                       mask_ratio=0.4)
    stage.setup = _limit(stage.setup, 6)
    run_stage(stage, str(tiny_dir("qwen2")), worded_data, tmp_path / "m", device="cpu", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses
    saved = ItemEmbedder.load(tmp_path / "m" / "embedder")
    assert saved.config.attention == "bidirectional"
    assert json.loads((tmp_path / "m" / "stage.json").read_text())["mask_token_id"] == 0


def _limit(setup, n):
    """Keep the first n titles only: every step sees the same batch."""
    def wrapped(embedder, data):
        setup(embedder, data)
        setup.__self__.ids = setup.__self__.ids[:n]
    return wrapped


def test_paper_profile():
    paper = MNTPConfig.profile("paper")
    assert paper.steps == 1000 and paper.mask_ratio == 0.2
