"""`python -m train select`: the validation-best model that can embed a new item, its best seed, and why."""

from __future__ import annotations

import json

from train.select import main, select


def _row(run, row, valid_by_seed, embedder):
    folder = run / "srs" / row
    folder.mkdir(parents=True)
    embeddings = run / "embeddings" / row
    embeddings.mkdir(parents=True)
    (embeddings / "manifest.json").write_text(json.dumps({"embedder": {"source": embedder}}))
    per_seed = [{"seed": seed, "valid": {"recall@20": value}} for seed, value in valid_by_seed.items()]
    summary = {"config": {"items": str(embeddings / "items.safetensors")}, "per_seed": per_seed}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_the_best_mean_validation_wins_and_its_best_seed_is_served(tmp_path):
    _row(tmp_path, "llm2rec-base", {1: 0.20, 2: 0.22}, "runs/demo/embedder/base")
    _row(tmp_path, "llm2rec", {1: 0.25, 2: 0.19}, "runs/demo/embedder/llm2rec/item-contrastive")  # mean .22
    _row(tmp_path, "llmemb", {1: 0.23, 2: 0.24}, "runs/demo/embedder/scft")  # mean .235: the best
    _row(tmp_path, "llm2rec-ids", {1: 0.30}, "-")  # IDs only: never a candidate, however good
    served = select(tmp_path)
    assert served["row"] == "llmemb" and served["srs"] == str(tmp_path / "srs" / "llmemb" / "seed-2")
    assert served["embedder"] == "runs/demo/embedder/scft" and abs(served["value"] - 0.235) < 1e-12
    assert set(served["candidates"]) == {"llm2rec-base", "llm2rec", "llmemb"}
    assert "llm2rec-ids" in served["not_served"] and "0.2350" in served["why"]
    assert json.loads((tmp_path / "served.json").read_text()) == served


def test_a_tie_goes_to_the_earlier_row_and_a_missing_row_is_skipped(tmp_path):
    _row(tmp_path, "llm2rec-base", {1: 0.2}, "base")
    _row(tmp_path, "llmemb", {1: 0.2}, "scft")
    served = select(tmp_path)
    assert served["row"] == "llm2rec-base" and set(served["candidates"]) == {"llm2rec-base", "llmemb"}


def test_no_candidate_is_one_error_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no finished candidate") and len(err.strip().splitlines()) == 1
