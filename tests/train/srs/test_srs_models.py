"""Behaviour of the sequence encoders and item representations."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from train.srs.config import SRSConfig
from train.srs.gru4rec import alignment
from train.srs.losses import full_softmax_ce, sample_negatives, sampled_bce
from train.srs.model import SequentialRecommender

NUM_ITEMS = 30


def model(backbone: str, **kw) -> SequentialRecommender:
    torch.manual_seed(0)
    cfg = SRSConfig(backbone=backbone, hidden_size=16, num_heads=2, ffn_size=32, max_len=8, **kw)
    return SequentialRecommender(cfg, NUM_ITEMS).eval()


def left(ids: list[int], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(ids)) + ids])


def right(ids: list[int], length: int) -> torch.Tensor:
    return torch.tensor([ids + [0] * (length - len(ids))])


def test_sasrec_is_causal():
    m = model("sasrec")
    seq = torch.tensor([[3, 7, 1, 9, 4, 12, 5, 2]])
    changed = seq.clone()
    changed[0, 5] = 20
    with torch.no_grad():
        a = m.encoder.sequence_output(m.items(seq), seq != 0)
        b = m.encoder.sequence_output(m.items(changed), changed != 0)
    # positions before the change see nothing of it ...
    assert torch.equal(a[0, :5], b[0, :5])
    # ... and every position from the change on does
    assert all(not torch.allclose(a[0, t], b[0, t]) for t in range(5, 8))


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_padding_does_not_change_the_representation(backbone):
    m = model(backbone)
    seq = [5, 2, 17, 8]
    with torch.no_grad():
        ref = m.user_vectors(torch.tensor([seq]))
        for hist in (left(seq, 8), right(seq, 8), left(seq, 6), right(seq, 5)):
            torch.testing.assert_close(m.user_vectors(hist), ref, atol=1e-5, rtol=1e-5)
        # a mixed batch: rows do not influence each other
        batch = torch.cat([left(seq, 8), right([1, 2], 8), left([9], 8)])
        torch.testing.assert_close(m.user_vectors(batch)[:1], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_history_order_matters(backbone):
    m = model(backbone)
    with torch.no_grad():
        a = m.user_vectors(torch.tensor([[5, 2, 17, 8]]))
        b = m.user_vectors(torch.tensor([[8, 17, 2, 5]]))
    assert not torch.allclose(a, b)


def test_alignment_moves_valid_items_to_the_front_in_order():
    x = torch.tensor([[0, 0, 4, 5], [6, 7, 0, 0], [0, 8, 0, 9]])
    order = alignment(x != 0)
    assert torch.gather(x, 1, order).tolist() == [[4, 5, 0, 0], [6, 7, 0, 0], [8, 9, 0, 0]]


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_sequence_states_are_the_prefix_representations_under_any_padding(backbone):
    m = model(backbone)
    seq = [3, 7, 1, 9, 4]
    with torch.no_grad():
        for hist in (left(seq, 8), right(seq, 8)):
            states = m.sequence_states(hist)
            valid = (hist != 0)[0]
            assert torch.count_nonzero(states[0, ~valid]) == 0
            for t, s in enumerate(states[0, valid]):
                torch.testing.assert_close(s, m.user_vectors(torch.tensor([seq[: t + 1]]))[0], atol=1e-5, rtol=1e-5)


def test_frozen_embeddings_are_not_trained_and_padding_row_is_zero():
    torch.manual_seed(0)
    frozen = torch.randn(NUM_ITEMS + 1, 24)
    m = SequentialRecommender(SRSConfig(hidden_size=16, adapter="mlp"), NUM_ITEMS, frozen)
    assert not any(p is m.items.frozen for p in m.parameters())
    table = m.item_vectors()
    assert table.shape == (NUM_ITEMS + 1, 16)
    assert torch.count_nonzero(table[0]) == 0
    loss = full_softmax_ce(m.user_vectors(torch.tensor([[1, 2, 3]]), table), table, torch.tensor([4]))
    loss.backward()
    assert m.items.frozen.grad is None
    assert m.items.adapter.net[0].weight.grad is not None
    with pytest.raises(ValueError, match="31"):
        SequentialRecommender(SRSConfig(), NUM_ITEMS, torch.randn(NUM_ITEMS, 8))


def test_full_softmax_ce_matches_hand_computation():
    user = torch.tensor([[1.0, 0.0]])
    table = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # row 0 = padding, ignored
    # logits over items 1..3 = [1, 0, 2]; target item 1 -> -log(e^1 / (e^1 + e^0 + e^2))
    expected = -np.log(np.e / (np.e + 1 + np.e**2))
    assert float(full_softmax_ce(user, table, torch.tensor([1]))) == pytest.approx(expected, rel=1e-6)
    # item 3 unseen in training: out of the softmax, and no gradient reaches its row
    unseen = torch.tensor([False, False, False, True])
    table.requires_grad_(True)
    loss = full_softmax_ce(user, table, torch.tensor([1]), unseen)
    assert float(loss) == pytest.approx(-np.log(np.e / (np.e + 1)), rel=1e-6)
    loss.backward()
    assert table.grad[3].abs().sum() == 0 and table.grad[2].abs().sum() > 0


def test_sampled_bce_matches_hand_computation_and_negatives_avoid_target():
    user = torch.tensor([[1.0, 0.0]])
    table = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    # pos score 2, neg score -1: softplus(-2) + softplus(-1)
    expected = np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))
    loss = sampled_bce(user, table, torch.tensor([1]), torch.tensor([[2]]))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(1, 6, (2000,), generator=gen)
    neg = sample_negatives(targets, 5, 3, gen)
    assert neg.min() >= 1 and neg.max() <= 5
    assert not (neg == targets.unsqueeze(1)).any()
    assert set(neg.unique().tolist()) == {1, 2, 3, 4, 5}


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="backbone"):
        SRSConfig(backbone="bert4rec")
    with pytest.raises(ValueError, match="num_heads"):
        SRSConfig(hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="unknown SRSConfig keys"):
        SRSConfig.from_dict({"hiden_size": 3})


def test_fast_dropout_rate_scale_and_eval_identity():
    from train.srs.dropout import FastDropout

    d = FastDropout(0.3)
    assert d.p == pytest.approx(77 / 256)
    x = torch.ones(200_000)
    torch.manual_seed(0)
    y = d(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - d.p) < 0.005
    assert float(y.mean()) == pytest.approx(1.0, abs=0.01)  # kept values are rescaled
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - d.p))
    torch.manual_seed(0)
    assert torch.equal(d(x), y)  # reproducible from the seed
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(ValueError, match="dropout"):
        FastDropout(1.0)


def test_fusion_needs_an_embedding_file_and_a_warm_item_mask():
    with pytest.raises(ValueError, match="fusion"):
        SRSConfig(fusion="init")  # needs an embedding file
    with pytest.raises(ValueError, match="fusion"):
        SRSConfig(items="x.npy", fusion="gated")  # removed (docs/decisions.md)
    with pytest.raises(ValueError, match="warm-item mask"):
        SequentialRecommender(SRSConfig(items="x.npy", fusion="init"), NUM_ITEMS, torch.randn(NUM_ITEMS + 1, 4))


def test_standardized_frozen_embeddings_feed_zero_mean_unit_std_inputs_to_the_adapter():
    torch.manual_seed(0)
    frozen = torch.randn(NUM_ITEMS + 1, 6) * 5 + 3
    frozen[0] = 0
    m = SequentialRecommender(SRSConfig(items="x.npy", hidden_size=16, standardize=True), NUM_ITEMS, frozen)
    seen = []
    m.items.adapter.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    m.item_vectors()
    x = seen[0][1:]
    torch.testing.assert_close(x.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(6), atol=1e-5, rtol=0)


def test_a_config_written_before_an_option_was_removed_loads_when_that_option_was_off():
    written = {**SRSConfig(items="x.npy").to_dict(), "id_dropout": 0.0, "input_dropout": 0.0, "cold_map_rank": "scale"}
    assert SRSConfig.from_dict(written) == SRSConfig(items="x.npy", ks=(5, 10, 20))
    for key, value in (("input_dropout", 0.2), ("id_dropout", 0.25), ("cold_map_rank", "scale-pop")):
        with pytest.raises(ValueError, match=f"{key}.*docs/decisions.md"):
            SRSConfig.from_dict({**written, key: value})
    with pytest.raises(TypeError):
        SRSConfig(input_dropout=0.0)  # not a field any more


def test_standardisation_statistics_come_from_warm_items_only():
    from train.srs.items import FrozenItemEmbedding

    frozen = torch.zeros(NUM_ITEMS + 1, 2)
    frozen[1:, 0] = torch.arange(NUM_ITEMS, dtype=torch.float32)
    warm = torch.zeros(NUM_ITEMS + 1, dtype=torch.bool)
    warm[1:11] = True  # items 1..10 hold 0..9
    items = FrozenItemEmbedding(frozen, 4, standardize=True, fit_rows=warm)
    assert items.mean[0] == pytest.approx(4.5)
    assert items.std[0] == pytest.approx(float(torch.arange(10.0).std()))


def test_text_init_starts_the_id_table_on_the_texts_principal_axes():
    from train.srs.checkpoint import load_checkpoint, save_checkpoint
    from train.srs.items import ID_INIT_STD, InitItemEmbedding, text_init

    # items 1..8 on a line along (3, 4), dimension 2 a pattern uncorrelated with it; item 9 is cold, far out
    t = torch.tensor([-4.0, -3, -2, -1, 1, 2, 3, 4, 8])
    frozen = torch.zeros(10, 3)
    frozen[1:, 0], frozen[1:, 1] = 3 * t, 4 * t
    frozen[1:, 2] = 1e-3 * torch.tensor([1.0, -1, -1, 1, 1, -1, -1, 1, 0])
    warm = torch.ones(10, dtype=torch.bool)
    warm[9] = False
    init, projection = text_init(frozen, warm, 1)
    # standardised warm rows: axes 0 and 1 are both t / std(t) (mean 0) and axis 2 has unit variance too, so the
    # first component is (1, 1, 0) / sqrt(2) and reads sqrt(2) t / std(t); the cold item is projected with the
    # warm statistics (8, not re-centred), then every row is scaled to std 0.02
    expected = t / t[:8].std() * torch.sqrt(torch.tensor(2.0))
    expected = expected * ID_INIT_STD / expected.std()
    sign = torch.sign(init[1, 0] * expected[0])
    torch.testing.assert_close(init[1:, 0] * sign, expected, rtol=1e-4, atol=1e-6)
    assert init[0].abs().sum() == 0 and projection.shape == (3, 1)
    with pytest.raises(ValueError, match="at least 4 warm items"):
        text_init(frozen, warm, 4)

    # the fusion: warm items train from that start; a cold item keeps it, computed from its text by a fixed map
    items = InitItemEmbedding(frozen, 1, warm)
    torch.testing.assert_close(items.all_items(), init, rtol=1e-4, atol=1e-7)
    assert not any(p.requires_grad for p in items.text.parameters())
    with torch.no_grad():
        items.ids.table.weight.add_(1.0)  # training moves every ID row it sees
    table = items.all_items()
    torch.testing.assert_close(table[1:9], init[1:9] + 1.0)
    torch.testing.assert_close(table[9], init[9], rtol=1e-4, atol=1e-7)  # the cold item did not move
    assert table[0].abs().sum() == 0

    config = SRSConfig(items="x.npy", fusion="init", hidden_size=2, num_heads=1, ffn_size=4)
    frozen2 = torch.randn(NUM_ITEMS + 1, 6)
    all_warm = torch.ones(NUM_ITEMS + 1, dtype=torch.bool)
    torch.manual_seed(3)
    model = SequentialRecommender(config, NUM_ITEMS, frozen2, all_warm)
    torch.testing.assert_close(model.item_vectors(), text_init(frozen2, all_warm, 2)[0])
    # the start draws the random numbers of a random ID table, no more: the encoder starts as ID-SASRec's
    torch.manual_seed(3)
    ids_model = SequentialRecommender(replace(config, items="ids", fusion="none"), NUM_ITEMS)
    for a, b in zip(model.encoder.parameters(), ids_model.encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(model, d, {})
        loaded, _ = load_checkpoint(d)
    torch.testing.assert_close(loaded.item_vectors(), model.item_vectors())
    # after training, a cold item can be placed by a ridge map text -> trained IDs fitted on the warm items:
    # with ID rows that are exactly linear in the standardised text, a small ridge recovers that map
    warm3 = torch.ones(NUM_ITEMS + 1, dtype=torch.bool)
    warm3[[4, 9]] = False
    items3 = InitItemEmbedding(frozen2, 2, warm3)
    z = (frozen2 - items3.text.mean) / items3.text.std
    truth = torch.randn(6, 2)
    with torch.no_grad():
        items3.ids.table.weight.copy_(z @ truth)
    items3.fit_cold_map(1e-6)
    torch.testing.assert_close(items3.all_items()[[4, 9]], (z @ truth)[[4, 9]], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="cold_map"):
        SRSConfig(items="x.npy", cold_map=10.0)  # only with fusion init
