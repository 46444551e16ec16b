"""LLMEmb RAT: alignment with an ID SASRec, alpha 0 = plain frozen training, PCA, refused checkpoints, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.srs.checkpoint import load_checkpoint
from train.srs.config import SRSConfig
from train.srs.rat import AlignmentLoss, fit_pca, info_nce, load_pca, project, run_rat
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
                      overrides={"max_epochs": 4, "patience": 10}, progress=False)
    align = [e["extra_loss"] for e in _epochs(tmp_path / "rat" / "seed-1")]
    assert len(align) == 4 and np.isfinite(align).all() and align[-1] < align[0], align
    assert {"full/recall@10", "sampled/hr@10", "sampled/ndcg@10"} <= set(summary["test"])
    # a standard SRS checkpoint: frozen PCA-reduced table + MLP adapter, reloadable; the PCA beside it
    model, meta = load_checkpoint(tmp_path / "rat" / "seed-1")
    assert model.config.adapter == "mlp" and model.items.frozen.shape == (planted_data.num_items + 1, 8)
    assert meta["items"]["pca"]["dim"] == 8 and meta["rat"]["alpha"] == 1.0
    pca = load_pca(tmp_path / "rat" / "seed-1" / "pca.safetensors")
    raw = np.load(embeddings)
    assert np.allclose(project(raw, pca), model.items.frozen.numpy(), atol=1e-5)


def test_alpha_zero_reproduces_plain_frozen_training(planted_data, id_srs, embeddings, tmp_path):
    rat = run_rat(planted_data, embeddings, id_srs, tmp_path / "rat", [3], alpha=0.0, progress=False)
    config = SRSConfig.from_dict(rat["config"])
    assert config.items == str(embeddings) and config.adapter == "mlp" and config.hidden_size == 16
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
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert info_nce(a, a, 0.5) < info_nce(a, a.flip(0), 0.5)

    class Items(torch.nn.Module):
        def forward(self, ids):
            return a[ids - 1]

    model = torch.nn.Module()
    model.items = Items()
    hook = AlignmentLoss(torch.cat([torch.zeros(1, 2), a]), alpha=0.5, temperature=0.5)
    history, targets = torch.tensor([[0, 1, 2, 1]]), torch.tensor([[1, 2, 1, 0]])
    assert torch.isclose(hook(model, history, targets), 0.5 * info_nce(a, a, 0.5))


def test_mismatched_id_checkpoints_are_refused(planted_data, id_srs, embeddings, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((id_srs / "model.safetensors").read_bytes())
    meta = json.loads((id_srs / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**meta, "num_items": 39}))
    with pytest.raises(ValueError, match="trained on 39 items, dataset .* has 40"):
        run_rat(planted_data, embeddings, wrong, tmp_path / "o", [1], progress=False)
    other = {**meta, "dataset": {"name": "other", "manifest": {"key": "0000"}}}
    (wrong / "config.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="trained on dataset 'other'"):
        run_rat(planted_data, embeddings, wrong, tmp_path / "o", [1], progress=False)
    (wrong / "config.json").write_text(json.dumps({**meta, "srs": {**meta["srs"], "items": "x.npy"}}))
    with pytest.raises(ValueError, match="not an ID-based SRS"):
        run_rat(planted_data, embeddings, wrong, tmp_path / "o", [1], progress=False)
    with pytest.raises(ValueError, match="hidden_size 32 differs"):
        run_rat(planted_data, embeddings, id_srs, tmp_path / "o", [1], overrides={"hidden_size": 32}, progress=False)


def test_rat_cli_trains_and_reports_bad_input_in_one_line(planted_folder, planted_data, id_srs, embeddings,
                                                          tmp_path, capsys):
    common = ["rat", "--dataset", str(planted_folder), "--k-core", "5", "--cache-dir", str(tmp_path / "c"),
              "--embeddings", str(embeddings), "--quiet"]
    assert main([*common, "--id-srs", str(id_srs), "--out", str(tmp_path / "r"), "--seeds", "1", "--pca", "4",
                 "--set", "max_epochs=1"]) == 0
    assert "sampled/hr@10=" in capsys.readouterr().out
    assert (tmp_path / "r" / "seed-1" / "pca.safetensors").is_file()
    for extra, message in [(["--id-srs", str(tmp_path / "nope")], "not an SRS checkpoint"),
                           (["--id-srs", str(id_srs), "--set", "nope=1"], "no such SRS setting"),
                           (["--id-srs", str(id_srs), "--pca", "100"], "--pca must be"),
                           (["--id-srs", str(id_srs), "--alpha", "-1"], "--alpha must be")]:
        code = main([*common, "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
