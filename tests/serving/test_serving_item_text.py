"""An upserted item is embedded from the text the offline catalogue used: the recipe travels in llmrec.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.itemtext import ItemText
from llmrec.manifests import EmbedderSource, RepositoryManifest
from serving.gateway.backends import item_text_recipe
from serving.gateway.config import LimitsConfig
from serving.gateway.pipeline import NewItem
from serving.gateway.service import check_new_items


def test_an_item_without_a_text_is_embedded_by_the_recipe() -> None:
    recipe = ItemText("title-year-genres")
    items = check_new_items([NewItem(id="", title="Toy Story", text="",
                                     attributes={"class": "Animation, Comedy", "release_year": "1995"}),
                             NewItem(id="", title="Heat", text="an explicit text wins", attributes={})],
                            LimitsConfig(), recipe)
    assert [i.text for i in items] == ["Toy Story (1995); genres: Animation, Comedy", "an explicit text wins"]
    # no recipe (a repository written before recipes): the title, as before
    assert check_new_items([NewItem(id="", title="Heat", text="", attributes={"genres": "Crime"})],
                           LimitsConfig())[0].text == "Heat"


def test_the_recipe_is_read_from_the_repository(tmp_path) -> None:
    assert item_text_recipe(tmp_path) is None  # no llmrec.json
    embedder = EmbedderSource(path="e", export_sha256="0" * 64, dim=8, tokenization={},
                              item_text={"kind": "attributes", "domain": "book"})
    RepositoryManifest(flavour="python", created="", options={}, models=[], files={}, embedder=embedder).write(tmp_path)
    assert item_text_recipe(tmp_path) == ItemText("attributes", "book")
    (tmp_path / "llmrec.json").write_text(json.dumps({"sources": {}}))  # no format: not guessed at
    with pytest.raises(ValueError, match="llmrec.json: format None, expected 'llmrec.triton-repository/1'"):
        item_text_recipe(tmp_path)


def test_export_records_the_recipe_of_the_srs_embeddings(tmp_path) -> None:
    """The SRS checkpoint names its embedding file; that file's manifest names the recipe; export carries it."""
    from export.onnx.embedder import load_adapter
    from train.srs.checkpoint import save_checkpoint
    from train.srs.config import SRSConfig
    from train.srs.model import SequentialRecommender

    emb = tmp_path / "embeddings"
    emb.mkdir()
    (emb / "manifest.json").write_text(json.dumps({"item_text": {"kind": "title-year", "domain": "movie"}}))
    torch.manual_seed(0)
    frozen = torch.from_numpy(np.random.default_rng(0).normal(size=(11, 8)).astype(np.float32))
    config = SRSConfig(items=str(emb / "items.safetensors"), hidden_size=8, num_heads=2, fusion="init")
    model = SequentialRecommender(config, 10, frozen, torch.ones(11, dtype=torch.bool))
    save_checkpoint(model, tmp_path / "srs", {"items": {"kind": "frozen", "path": str(emb / "items.safetensors")}})
    adapter, info = load_adapter(tmp_path / "srs", 8)
    assert info["item_text"] == {"kind": "title-year", "domain": "movie"} and info["fusion"] == "init"
    # the exported adapter is the model's text path (its text -> ID map): a cold item's vector
    with torch.no_grad():
        x = torch.randn(3, 8)
        torch.testing.assert_close(adapter(x), model.items.text.adapter((x - model.items.text.mean)
                                                                        / model.items.text.std))
