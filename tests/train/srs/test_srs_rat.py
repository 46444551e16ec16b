"""LLMEmb RAT: its alignment loss by hand, the llmemb preset, alpha 0 = plain frozen training, PCA, refused
checkpoints, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.srs.checkpoint import load_checkpoint
from train.srs.config import SRSConfig
from train.srs.losses import soft_contrastive_loss
from train.srs.rat import AlignmentLoss, fit_pca, load_pca, pca_dim, project, run_rat
from train.srs.runs import run_seeds
from train.stages.__main__ import main

SMALL = dict(hidden_size=16, num_heads=2, ffn_size=16, max_len=5, dropout=0.1, batch_size=32, max_epochs=2,
             patience=5, lr=3e-3, early_stop_metric="ndcg@10")


@pytest.fixture(scope="module")
def id_srs(planted_data, tmp_path_factory):
    """A tiny ID-based SASRec trained 2 epochs on the planted data, saved as run_seeds does."""
    out = tmp_path_factory.mktemp("id_srs")
    run_seeds(planted_data, SRSConfig(**SMALL), [5], out, progress=False)
    return out / "seed-5"


@pytest.fixture(scope="module")
def embeddings(planted_data, tmp_path_factory):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(planted_data.num_items + 1, 24)).astype(np.float32)
    matrix[0] = 0.0
    path = tmp_path_factory.mktemp("emb") / "items.npy"
    np.save(path, matrix)
    return path


def _epochs(seed_dir):
    return [json.loads(line) for line in (seed_dir / "log.jsonl").read_text().splitlines()]


def test_alignment_term_is_finite_and_decreases_with_pca(planted_data, id_srs, embeddings, tmp_path):
    summary = run_rat(planted_data, embeddings, id_srs, tmp_path / "rat", [1], alpha=1.0, pca=8,
                      overrides={**SMALL, "max_epochs": 4, "patience": 10}, progress=False)
    align = [e["extra_loss"] for e in _epochs(tmp_path / "rat" / "seed-1")]
    assert len(align) == 4 and np.isfinite(align).all() and align[-1] < align[0], align
    assert {"full/recall@10", "sampled/hr@10", "sampled/ndcg@10"} <= set(summary["test"])
    # a standard SRS checkpoint: frozen PCA-reduced table + LLMEmb's adapter, reloadable; the PCA beside it
    model, meta = load_checkpoint(tmp_path / "rat" / "seed-1")
    assert model.config.adapter == "llmemb" and model.items.frozen.shape == (planted_data.num_items + 1, 8)
    linears = [m for m in model.items.adapter.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 4), (4, 16)] and len(model.items.adapter.net) == 2
    assert (model.config.sasrec_style, model.config.loss, model.config.train_targets) == ("original", "bce", "tail")
    assert meta["items"]["pca"]["dim"] == 8 and meta["rat"]["alpha"] == 1.0
    pca = load_pca(tmp_path / "rat" / "seed-1" / "pca.safetensors")
    raw = np.load(embeddings)
    assert np.allclose(project(raw, pca), model.items.frozen.numpy(), atol=1e-5)


def test_alpha_zero_reproduces_plain_frozen_training(planted_data, id_srs, embeddings, tmp_path):
    rat = run_rat(planted_data, embeddings, id_srs, tmp_path / "rat", [3], alpha=0.0, overrides=SMALL,
                  progress=False)
    config = SRSConfig.from_dict(rat["config"])
    assert config.items == str(embeddings) and config.adapter == "llmemb" and config.hidden_size == 16
    plain = run_seeds(planted_data, config, [3], tmp_path / "plain", progress=False)
    assert rat["per_seed"][0]["test"] == plain["per_seed"][0]["test"]
    assert rat["per_seed"][0]["valid"] == plain["per_seed"][0]["valid"]
    assert all(e["extra_loss"] == 0.0 for e in _epochs(tmp_path / "rat" / "seed-3"))


def test_pca_components_are_orthonormal_and_round_trip():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(31, 12)).astype(np.float32) @ rng.normal(size=(12, 12)).astype(np.float32)
    matrix[0] = 0.0
    pca = fit_pca(matrix, 5)
    c = pca["components"]
    assert c.shape == (5, 12) and np.allclose(c @ c.T, np.eye(5), atol=1e-5)
    reduced = project(matrix, pca)
    assert reduced.shape == (31, 5) and not reduced[0].any()
    assert np.all(np.diff(pca["explained_variance_ratio"]) <= 1e-7)  # sorted by variance
    full = fit_pca(matrix, 12)  # all components: an exact round trip of the item rows
    back = project(matrix, full) @ full["components"] + full["mean"]
    assert np.allclose(back[1:], matrix[1:], atol=1e-3)
    assert np.array_equal(fit_pca(matrix, 5)["components"], c)  # deterministic signs
    with pytest.raises(ValueError, match="--pca must be"):
        fit_pca(matrix, 13)


def test_alignment_loss_by_hand():
    ids_rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # the ID table's rows of items 1..3
    adapted = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.5]])  # what the adapter gives them

    class Items(torch.nn.Module):
        def forward(self, ids):
            return adapted[ids - 1]

    model = torch.nn.Module()
    model.items = Items()
    hook = AlignmentLoss(torch.cat([torch.zeros(1, 2), ids_rows]), alpha=0.5, temperature=2.0)
    # every target position, repeats kept, padding dropped: items 1, 2, 1, 3
    history, targets = torch.tensor([[0, 3, 1, 2, 3]]), torch.tensor([[0, 1, 2, 1, 3]])
    order = torch.tensor([0, 1, 0, 2])
    x, y = ids_rows[order], adapted[order]
    logits = x @ y.T / 2.0
    soft = torch.softmax((x @ x.T + y @ y.T) / 2 * 2.0, dim=-1)  # LLMEmb multiplies by tau here
    by_hand = (-(soft * logits.log_softmax(-1)).sum(-1).mean() - (soft.T * logits.T.log_softmax(-1)).sum(-1).mean()) / 2
    assert torch.isclose(soft_contrastive_loss(x, y, 2.0), by_hand)
    assert torch.isclose(hook(model, history, targets), 0.5 * by_hand)


def test_pca_is_llmembs_1536_when_wider():
    assert (pca_dim("auto", 4096), pca_dim("auto", 576), pca_dim(8, 576), pca_dim(0, 4096)) == (1536, 0, 8, 0)


def test_mismatched_id_checkpoints_are_refused(planted_data, id_srs, embeddings, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((id_srs / "model.safetensors").read_bytes())
    meta = json.loads((id_srs / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**meta, "num_items": 39}))
    with pytest.raises(ValueError, match="trained on 39 items, dataset .* has 40"):
        run_rat(planted_data, embeddings, wrong, tmp_path / "o", [1], overrides=SMALL, progress=False)
    other = {**meta, "dataset": {"name": "other", "manifest": {"key": "0000"}}}
    (wrong / "config.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="trained on dataset 'other'"):
        run_rat(planted_data, embeddings, wrong, tmp_path / "o", [1], overrides=SMALL, progress=False)
    (wrong / "config.json").write_text(json.dumps({**meta, "srs": {**meta["srs"], "items": "x.npy"}}))
    with pytest.raises(ValueError, match="not an ID-based SRS"):
        run_rat(planted_data, embeddings, wrong, tmp_path / "o", [1], overrides=SMALL, progress=False)
    with pytest.raises(ValueError, match="hidden_size 32 differs"):
        run_rat(planted_data, embeddings, id_srs, tmp_path / "o", [1], overrides={**SMALL, "hidden_size": 32},
                progress=False)


def test_rat_cli_trains_and_reports_bad_input_in_one_line(planted_folder, planted_data, id_srs, embeddings,
                                                          tmp_path, capsys):
    common = ["rat", "--dataset", str(planted_folder), "--k-core", "5", "--cache-dir", str(tmp_path / "c"),
              "--embeddings", str(embeddings), "--quiet"]
    small = ["--hidden-size", "16", "--num-heads", "2", "--ffn-size", "16", "--max-len", "5", "--max-epochs", "1"]
    assert main([*common, "--id-srs", str(id_srs), "--out", str(tmp_path / "r"), "--seeds", "1", "--pca", "4",
                 *small]) == 0
    assert "sampled/hr@10=" in capsys.readouterr().out
    assert (tmp_path / "r" / "seed-1" / "pca.safetensors").is_file()
    for extra, message in [(["--id-srs", str(tmp_path / "nope")], "not an SRS checkpoint"),
                           (["--id-srs", str(id_srs), *small, "--dropout", "1.5"], "dropout must be"),
                           (["--id-srs", str(id_srs), *small, "--pca", "100"], "--pca must be"),
                           (["--id-srs", str(id_srs), "--pca", "x"], "--pca must be"),
                           (["--id-srs", str(id_srs), *small, "--alpha", "-1"], "--alpha must be")]:
        code = main([*common, "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
