"""Training end to end: learning a planted pattern, determinism, checkpoints, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from train.srs.checkpoint import load_checkpoint
from train.srs.config import SRSConfig
from train.srs.runs import run_seeds
from train.srs.trainer import evaluate_test, train_one_seed

SMALL = dict(hidden_size=32, num_heads=2, ffn_size=32, max_len=5, dropout=0.1, batch_size=16, max_epochs=15,
             patience=15, lr=3e-3, early_stop_metric="ndcg@10")  # recall@20 saturates at 1 on this data


@pytest.mark.parametrize("backbone,loss,targets", [("sasrec", "ce", "all"), ("gru4rec", "ce", "all"),
                                                    ("sasrec", "bce", "all"), ("sasrec", "ce", "last")])
def test_learns_the_planted_pattern_far_above_random(planted_data, backbone, loss, targets, tmp_path):
    config = SRSConfig(backbone=backbone, loss=loss, num_negatives=4, train_targets=targets,
                       **{**SMALL, "batch_size": 64 if targets == "last" else 16})
    result = train_one_seed(planted_data, config, seed=7, out_dir=tmp_path, progress=False)
    random_recall = 10 / planted_data.num_items
    assert random_recall == 0.25
    assert result.test["full"]["recall@10"] > 0.9
    assert result.test["full"]["ndcg@10"] > 0.6
    # the files a user relies on
    assert {"model.safetensors", "config.json", "metrics.json", "log.jsonl"} <= {p.name for p in tmp_path.iterdir()}
    epochs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, result.epochs_run + 1))


def test_training_windows_hold_every_training_target_once_with_its_history(planted_data):
    inputs, targets, _ = planted_data.train.windows(5)
    pairs = sorted((int(inputs[w, t]), int(targets[w, t])) for w, t in zip(*np.nonzero(targets), strict=True))
    expected = []
    for i in range(len(planted_data.train)):
        expected.append((int(planted_data.train.history(i)[-1]), int(planted_data.train.targets[i])))
    assert pairs == sorted(expected)
    # within a window the history of a target is everything before it (at most max_len items)
    for w in range(len(inputs)):
        n = int(np.count_nonzero(inputs[w]))
        assert np.array_equal(inputs[w, 1:n], targets[w, : n - 1])


def test_checkpoint_reproduces_metrics_exactly_and_training_is_deterministic(planted_data, tmp_path):
    config = SRSConfig(**{**SMALL, "max_epochs": 2})
    a = train_one_seed(planted_data, config, seed=3, out_dir=tmp_path / "a", progress=False)
    b = train_one_seed(planted_data, config, seed=3, out_dir=tmp_path / "b", progress=False)
    train_one_seed(planted_data, config, seed=4, out_dir=tmp_path / "c", progress=False)
    weights = {name: load_file(str(tmp_path / name / "model.safetensors")) for name in "abc"}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])
    assert a.test == b.test
    model, meta = load_checkpoint(tmp_path / "a")
    assert meta["seed"] == 3 and meta["num_items"] == planted_data.num_items
    assert evaluate_test(model, planted_data, model.config, torch.device("cpu")) == a.test
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["test"] == a.test


def test_frozen_embeddings_with_adapter_train_and_reload(planted_data, tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(planted_data.num_items + 1, 24)).astype(np.float32)
    path = tmp_path / "items.npy"
    np.save(path, emb)
    config = SRSConfig(items=str(path), adapter="mlp", **SMALL)
    summary = run_seeds(planted_data, config, [1], tmp_path / "run", progress=False)
    assert summary["items"]["kind"] == "frozen" and summary["items"]["dim"] == 24
    assert summary["test"]["full/recall@10"]["mean"] > 0.9
    model, _ = load_checkpoint(tmp_path / "run" / "seed-1")
    assert torch.equal(model.items.frozen, torch.from_numpy(emb))


def test_cli_trains_seeds_summarises_and_resumes(planted_folder, tmp_path):
    out = tmp_path / "srs"
    cmd = [sys.executable, "-m", "train.srs", "--dataset", str(planted_folder), "--cache-dir", str(tmp_path / "c"),
           "--seeds", "1", "2", "--out", str(out), "--max-epochs", "2", "--hidden-size", "16", "--ffn-size", "16",
           "--max-len", "4", "--backbone", "gru4rec", "--quiet"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "full/recall@10=" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and len(summary["per_seed"]) == 2
    per_seed = [s["test"]["full"]["recall@10"] for s in summary["per_seed"]]
    assert summary["test"]["full/recall@10"]["mean"] == pytest.approx(np.mean(per_seed))
    assert summary["test"]["full/recall@10"]["std"] == pytest.approx(np.std(per_seed))
    mtime = (out / "seed-1" / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)  # verbose: logs say reused
    assert again.returncode == 0, again.stderr
    assert '"event": "seed_reused"' in again.stderr
    assert (out / "seed-1" / "model.safetensors").stat().st_mtime_ns == mtime


def test_cli_reports_bad_input_without_a_traceback(planted_folder, tmp_path):
    bad = tmp_path / "wrong.npy"
    np.save(bad, np.zeros((3, 4), np.float32))
    for extra, message in [(["--items", str(bad)], "embedding rows"),
                           (["--k-core", "1000"], "1000-core"),
                           (["--backbone", "bert4rec"], "backbone")]:
        r = subprocess.run([sys.executable, "-m", "train.srs", "--dataset", str(planted_folder), "--cache-dir",
                            str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--quiet", *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (extra, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"\xff\xd8")
    r = subprocess.run([sys.executable, "-m", "train.srs", "--dataset", str(planted_folder), "--out", str(foreign),
                        "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "did not write" in r.stderr and "--force" in r.stderr, r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["a.jpg"]


def test_text_initialised_ids_train_reload_and_write_per_example_ranks(planted_data, tmp_path):
    from train.srs.trainer import RANKS_FILE

    emb = np.random.default_rng(1).normal(size=(planted_data.num_items + 1, 48)).astype(np.float32)
    np.save(tmp_path / "items.npy", emb)
    config = SRSConfig(items=str(tmp_path / "items.npy"), fusion="init", standardize=True, adapter="mlp", **SMALL)
    summary = run_seeds(planted_data, config, [1], tmp_path / "run", progress=False)
    assert summary["test"]["full/recall@10"]["mean"] > 0.9
    model, _ = load_checkpoint(tmp_path / "run" / "seed-1")
    assert model.items.warm.dtype == torch.bool and bool(model.items.warm[1:].all())
    assert evaluate_test(model, planted_data, model.config, torch.device("cpu")) == summary["per_seed"][0]["test"]
    ranks = json.loads((tmp_path / "run" / "seed-1" / RANKS_FILE).read_text())
    hits = np.mean(np.asarray(ranks["test"]) < 10)
    assert len(ranks["test"]) == len(planted_data.test)
    assert hits == pytest.approx(summary["test"]["full/recall@10"]["mean"])


def test_a_run_from_before_a_new_config_field_is_reused_when_the_field_is_at_its_default(tmp_path):
    import json

    from train.srs.runs import finished_seed

    config = SRSConfig(items="e.npy", fusion="init").to_dict()
    old = {k: v for k, v in config.items() if k != "cold_map"}  # written before cold_map existed
    (tmp_path / "config.json").write_text(json.dumps({"srs": old, "items": {"kind": "frozen"}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"seed": 1}))
    assert finished_seed(tmp_path, {"srs": config, "items": {"kind": "frozen"}}) == {"seed": 1}
    changed = SRSConfig(items="e.npy", fusion="init", cold_map=100.0).to_dict()
    assert finished_seed(tmp_path, {"srs": changed, "items": {"kind": "frozen"}}) is None


def test_a_run_from_before_an_option_was_removed_is_reused_only_when_that_option_was_off(tmp_path):
    from train.srs.runs import finished_seed

    config = SRSConfig(items="e.npy", adapter="mlp").to_dict()
    (tmp_path / "metrics.json").write_text(json.dumps({"seed": 1}))
    for dropout, reused in ((0.0, True), (0.2, False)):  # input_dropout: removed (docs/decisions.md)
        old = {**config, "input_dropout": dropout, "id_dropout": 0.0, "cold_map_rank": "scale"}
        (tmp_path / "config.json").write_text(json.dumps({"srs": old, "items": {"kind": "frozen"}}))
        found = finished_seed(tmp_path, {"srs": config, "items": {"kind": "frozen"}})
        assert found == ({"seed": 1} if reused else None)
