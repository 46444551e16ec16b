"""Extraction: a file the SRS loader accepts, rows equal to `encode`, a manifest naming its inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.data import title_texts
from train.embed import extract, main
from train.embedder import EmbedderConfig, ItemEmbedder
from train.srs.items import load_item_embeddings


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_extract_rows_equal_encode(tiny_dir, worded_data, tmp_path, arch):
    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir(arch))), device="cpu", dtype=torch.float32)
    manifest = extract(embedder, worded_data, tmp_path, text="title", batch_size=7, progress=False,
                       embedder_info={"dir": "x"})
    table, info = load_item_embeddings(tmp_path / "items.safetensors", worded_data.item_ids)
    expected = embedder.encode(title_texts(worded_data)[1:], batch_size=5, progress=False)
    assert table.shape == (worded_data.num_items + 1, 32) and info["dim"] == 32
    assert torch.equal(table[0], torch.zeros(32))
    np.testing.assert_allclose(table[1:].numpy(), expected, atol=1e-5)
    assert manifest["count"] == worded_data.num_items and manifest["dataset"]["key"] == worded_data.manifest["key"]
    assert manifest["sha256"] == info["sha256"] and manifest["text"] == "title"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.safetensors", "manifest.json"]  # no temp left


def test_cli_extracts_from_a_stage_checkpoint(tiny_dir, planted_folder, tmp_path, capsys):
    from train.data import DataConfig, load_dataset
    from train.stages import make_stage, run_stage

    data = load_dataset(planted_folder, DataConfig(k_core=5), cache_dir=tmp_path / "cache")
    stage = make_stage("mntp", "paper", "demo", steps=2, batch_size=4, lora=True)
    run_stage(stage, str(tiny_dir("llama")), data, tmp_path / "mntp", device="cpu", progress=False)
    out = tmp_path / "emb"
    code = main(["--embedder", str(tmp_path / "mntp"), "--dataset", str(planted_folder), "--out", str(out),
                 "--k-core", "5", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--text", "attributes"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embedder"]["dir"] == str((tmp_path / "mntp" / "embedder").resolve())
    assert len(manifest["embedder"]["sha256"]) == 64 and manifest["text"] == "attributes"
    assert manifest["item_text"] == {"kind": "attributes", "domain": "movie"}
    table, _ = load_item_embeddings(out / "items.safetensors", data.item_ids)
    assert table.shape[0] == data.num_items + 1
    # without --text: the text the stage trained on (LLM2Rec's stages: titles)
    again = tmp_path / "emb-default"
    assert main(["--embedder", str(tmp_path / "mntp"), "--dataset", str(planted_folder), "--out", str(again),
                 "--k-core", "5", "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert json.loads((again / "manifest.json").read_text())["item_text"] == {"kind": "title", "domain": "movie"}
    assert main(["--embedder", str(tmp_path / "nope"), "--dataset", str(planted_folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_cli_saves_the_base_model_it_embedded_with(tiny_dir, planted_folder, tmp_path):
    """--save-embedder: a raw base model becomes a checkpoint export can read, and the manifest names it."""
    from llmrec.itemtext import ItemText
    from train.data import DataConfig, load_dataset
    from train.data.text import recipe_texts
    from train.stages.common import embedder_checkpoint_dir, embedder_hash

    out, saved = tmp_path / "emb", tmp_path / "embedder" / "base"
    code = main(["--embedder", str(tiny_dir("llama")), "--dataset", str(planted_folder), "--out", str(out),
                 "--k-core", "5", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--attention", "causal",
                 "--pooling", "last", "--text", "title-year-genres", "--save-embedder", str(saved)])
    assert code == 0 and embedder_checkpoint_dir(saved) == saved
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embedder"]["sha256"] == embedder_hash(str(saved))
    reloaded = ItemEmbedder.load(saved, device="cpu", dtype=torch.float32)
    assert (reloaded.config.attention, reloaded.config.pooling) == ("causal", "last")
    data = load_dataset(planted_folder, DataConfig(k_core=5), cache_dir=tmp_path / "cache")
    table, _ = load_item_embeddings(out / "items.safetensors", data.item_ids)
    again = reloaded.encode(recipe_texts(data, ItemText("title-year-genres"))[1:6], progress=False)
    np.testing.assert_allclose(table[1:6].numpy(), again, atol=1e-5)
