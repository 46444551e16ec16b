"""The papers' downstream presets: SASRec block styles by hand, causality (no position sees its own target),
GRU4Rec without biases, LLMEmb's adapter, last windows, negatives outside the row, validation every N epochs,
LLMEmb's long-tail groups."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.srs.config import PRESETS, SRSConfig
from train.srs.gru4rec import GRU4Rec
from train.srs.items import Adapter
from train.srs.sasrec import STYLES, SASRec
from train.srs.trainer import redraw_inside


def _attention(block, x, keys, allowed):
    """Multi-head attention by hand: softmax(q k^T / sqrt(d_head)) v, heads concatenated, output projection."""
    d, heads = x.shape[-1], block.attn.num_heads
    w, b = block.attn.qkv.weight, block.attn.qkv.bias
    q, k, v = x @ w[:d].T + b[:d], keys @ w[d:2 * d].T + b[d:2 * d], keys @ w[2 * d:].T + b[2 * d:]
    out = []
    for h in range(heads):
        sl = slice(h * d // heads, (h + 1) * d // heads)
        scores = q[:, sl] @ k[:, sl].T / math.sqrt(d // heads)
        out.append(torch.softmax(scores.masked_fill(~allowed, -1e9), -1) @ v[:, sl])
    return block.attn.out(torch.cat(out, -1))


@pytest.mark.parametrize("style", STYLES)
def test_each_block_style_by_hand(style):
    torch.manual_seed(0)
    model = SASRec(8, max_len=4, num_layers=1, num_heads=2, ffn_size=12, dropout=0.0, style=style,
                   activation="relu" if style == "original" else "gelu").eval()
    items = torch.randn(1, 3, 8)
    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    block = model.blocks[0]
    pos = model.positions.weight[torch.arange(3) + (style == "original")]
    if style == "pre-ln":
        x = model.input_ln(items[0] + pos)
        x = x + _attention(block, block.ln_attn(x), block.ln_attn(x), causal)
        x = model.final_ln(x + block.ffn(block.ln_ffn(x)))
    elif style == "post-ln":  # RecBole / LLM2Rec: LayerNorm(x + sublayer(x)), no final norm
        x = items[0] + pos
        x = block.ln_attn(x + _attention(block, x, x, causal))
        x = block.ln_ffn(x + block.ffn[2](F.gelu(block.ffn[0](x))))
    else:  # Kang / LLMEmb: items x sqrt(d); Q = LN(x), x = Q + MHA(Q, x, x); x = LN(x); x = x + FFN(x)
        x = items[0] * math.sqrt(8) + pos
        q = block.ln_attn(x)
        x = block.ln_ffn(q + _attention(block, q, x, causal))
        x = model.final_ln(x + block.ffn[3](F.relu(block.ffn[0](x))))
    assert torch.allclose(model.sequence_output(items, torch.ones(1, 3, dtype=torch.bool))[0], x, atol=1e-5)


@pytest.mark.parametrize("style", STYLES)
def test_no_position_sees_a_later_item_in_any_style(style):
    """LLMEmb's public SASRec commented its causal mask out, so position t saw item t+1, its own target; here
    changing a later item leaves every earlier state unchanged."""
    torch.manual_seed(1)
    model = SASRec(8, max_len=6, num_layers=2, num_heads=1, ffn_size=8, dropout=0.0, style=style).eval()
    items = torch.randn(1, 6, 8)
    changed = items.clone()
    changed[0, 4] = torch.randn(8)
    mask = torch.ones(1, 6, dtype=torch.bool)
    a, b = model.sequence_output(items, mask), model.sequence_output(changed, mask)
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-6) and not torch.allclose(a[0, 4], b[0, 4])


@pytest.mark.parametrize("style", STYLES)
def test_left_and_right_padding_give_the_same_user(style):
    torch.manual_seed(2)
    model = SASRec(8, max_len=6, num_layers=2, num_heads=2, ffn_size=8, dropout=0.0, style=style).eval()
    items = torch.randn(1, 3, 8)
    left = torch.cat([torch.zeros(1, 3, 8), items], 1)
    right = torch.cat([items, torch.zeros(1, 3, 8)], 1)
    mask_left = torch.tensor([[0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.allclose(model(left, mask_left), model(right, mask_left.flip(1)), atol=1e-5)


def test_llm2rec_gru_has_no_biases_and_no_dense_layer():
    gru = GRU4Rec(8, 2, 0.3, style="llm2rec")
    assert not any("bias" in name for name, _ in gru.gru.named_parameters())
    assert isinstance(gru.dense, torch.nn.Identity) and gru.gru.dropout == 0.0
    assert any("bias" in name for name, _ in GRU4Rec(8, 2, 0.3).gru.named_parameters())


def test_llmemb_adapter_is_linear_through_half_the_width():
    adapter = Adapter(12, 4, "llmemb", init="xavier")
    assert [(m.in_features, m.out_features) for m in adapter.net] == [(12, 6), (6, 4)]
    a, b = torch.randn(12), torch.randn(12)
    zero = adapter(torch.zeros(12))
    assert torch.allclose(adapter(a + b) - zero, (adapter(a) - zero) + (adapter(b) - zero), atol=1e-5)
    assert all(float(m.bias.abs().sum()) == 0 for m in adapter.net)  # xavier: zero biases


def test_presets_are_the_papers_and_validate():
    llm2rec, llmemb = SRSConfig.preset("llm2rec"), SRSConfig.preset("llmemb")
    assert (llm2rec.sasrec_style, llm2rec.ffn_size, llm2rec.layer_norm_eps, llm2rec.eval_every, llm2rec.patience,
            llm2rec.batch_size, llm2rec.train_targets) == ("post-ln", 256, 1e-12, 5, 20, 256, "last")
    assert SRSConfig.preset("llm2rec", backbone="gru4rec").lr == 1e-4
    assert (llmemb.sasrec_style, llmemb.num_heads, llmemb.dropout, llmemb.max_len, llmemb.loss,
            llmemb.early_stop_metric, llmemb.adapter) == ("original", 1, 0.5, 200, "bce", "sampled/ndcg@10", "llmemb")
    assert SRSConfig.preset("project") == SRSConfig() and set(PRESETS) == {"project", "llm2rec", "llmemb"}
    assert SRSConfig.preset("llmemb", max_len=50).max_len == 50
    with pytest.raises(ValueError, match="unknown SRS preset"):
        SRSConfig.preset("recbole")


def test_last_windows_hold_each_users_last_training_items(planted_data):
    inputs, targets, owners = planted_data.train.windows(5, last_only=True)
    every_in, _, _ = planted_data.train.windows(5)
    assert sorted(owners.tolist()) == sorted({int(s) for s in planted_data.train.seq_index})
    assert len(inputs) == len({int(s) for s in planted_data.train.seq_index}) < len(every_in)
    last = {}
    for s, p in zip(planted_data.train.seq_index.tolist(), planted_data.train.position.tolist(), strict=True):
        last[s] = max(last.get(s, 0), p)
    expected = sorted(tuple(planted_data.sequences[s][max(1, p - 4):p + 1].tolist()) for s, p in last.items())
    got = sorted(tuple(int(t) for t in row if t) for row in targets)
    assert got == expected


def test_negatives_are_redrawn_outside_the_users_training_items(planted_data):
    gen = torch.Generator().manual_seed(0)
    inside = torch.zeros(2, 10, dtype=torch.bool)
    inside[0, [1, 2, 3, 6]] = True
    inside[1, [4, 5, 7]] = True
    rows = torch.tensor([0, 0, 0, 1, 1])
    negatives = torch.tensor([[1], [6], [9], [4], [8]])
    out = redraw_inside(negatives, inside, rows, num_items=9, generator=gen)
    assert all(not inside[int(r), int(n)] for r, n in zip(rows, out[:, 0], strict=True))
    assert out[2, 0] == 9 and out[4, 0] == 8  # those were outside already: kept
    # a user's training items: every item up to the last training position, whatever the window
    items = planted_data.train.training_items(planted_data.num_items)
    for s in range(3):
        last = max(p for q, p in zip(planted_data.train.seq_index, planted_data.train.position, strict=True) if q == s)
        assert set(np.flatnonzero(items[s])) == set(planted_data.sequences[s][:last + 1].tolist())


def test_llmemb_redraws_its_validation_negatives_at_every_evaluation(planted_data, monkeypatch):
    """The planted catalogue is too small for two draws to differ (every unseen item is a negative), so the seed
    each validation draws its negatives with is what is checked."""
    import train.srs.trainer as trainer
    from train.srs.model import SequentialRecommender

    seeds = []

    def recording(*args, seed=0, **kwargs):
        seeds.append(seed)
        return sampled_ranking(*args, seed=seed, **kwargs)

    from train.eval.ranking import sampled_ranking

    monkeypatch.setattr(trainer, "sampled_ranking", recording)
    for redraw in (True, False):
        config = SRSConfig.preset("llmemb", hidden_size=8, ffn_size=8, max_len=5, redraw_valid_negatives=redraw)
        model = SequentialRecommender(config, planted_data.num_items)
        for epoch in (1, 2):
            trainer.validate(model, planted_data, config, torch.device("cpu"), epoch)
    assert seeds == [1, 2, 0, 0]


def test_llmemb_tail_groups_count_users_over_all_splits(planted_data):
    from train.eval.ranking import breakdown

    counts = planted_data.user_counts()
    by_hand = np.zeros(planted_data.num_items + 1, dtype=np.int64)
    for seq in planted_data.sequences:
        for item in set(seq.tolist()):
            by_hand[item] += 1
    assert np.array_equal(counts, by_hand)
    head = counts >= 20
    ranks = np.zeros(len(planted_data.test), dtype=np.int64)
    groups = breakdown(ranks, planted_data.test, planted_data.train_item_counts(), head=head, long_threshold=9)
    targets = planted_data.test.targets
    assert groups["tail_items"]["count"] == int((counts[targets] < 20).sum())
    assert groups["short_history"]["count"] == int((planted_data.test.history_lengths < 10).sum())


def test_validation_every_n_epochs_and_patience_in_epochs(planted_data, tmp_path):
    from train.srs.trainer import train_one_seed

    config = SRSConfig(hidden_size=8, num_heads=1, ffn_size=8, max_len=5, batch_size=64, max_epochs=7, eval_every=2,
                       patience=2, lr=0.0, early_stop_metric="ndcg@10", max_grad_norm=1.0)
    result = train_one_seed(planted_data, config, 0, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in records if "valid" in r]
    # lr 0: nothing improves after epoch 2, so at epoch 4 (2 epochs later) training stops
    assert validated == [2, 4] and result.best_epoch == 2 and result.epochs_run == 4


def test_sampled_ndcg_early_stopping_reads_sampled_validation(planted_data, tmp_path):
    from train.srs.trainer import train_one_seed

    config = SRSConfig.preset("llmemb", hidden_size=8, ffn_size=8, max_len=5, max_epochs=2, batch_size=64)
    train_one_seed(planted_data, config, 0, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("sampled/ndcg@10" in r["valid"] and "recall@20" in r["valid"] for r in records)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["breakdown"]["tail_items"]["count"] + metrics["test"]["breakdown"]["head_items"][
        "count"] == len(planted_data.test)
