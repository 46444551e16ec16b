"""The LLM2Rec stages read items through the item-text recipe that extraction and serving use."""

from __future__ import annotations

import pytest

from llmrec.itemtext import DEFAULT_KIND, ItemText
from train.data.text import recipe_texts
from train.embedder import EmbedderConfig, ItemEmbedder
from train.stages import make_stage


@pytest.mark.parametrize("kind", ["title", DEFAULT_KIND, "title-year-genres"])
def test_stages_read_the_configured_item_text(tiny_dir, worded_data, kind):
    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir("llama"))), device="cpu")
    overrides = {} if kind == "title" else {"item_text": kind}  # LLM2Rec's stages read titles by default
    texts = recipe_texts(worded_data, ItemText(kind))
    assert len(set(texts[1:])) == worded_data.num_items  # distinct: no item is dropped as a duplicate
    for name in ("mntp", "item-contrastive"):
        stage = make_stage(name, "paper", "demo", holdout=0.0, **overrides) if name == "mntp" else make_stage(
            name, "paper", "demo", **overrides)
        stage.setup(embedder, worded_data)
        assert stage.ids == embedder.token_ids(texts[1:])
    csft = make_stage("csft", "paper", "demo", **overrides)
    csft.setup(embedder, worded_data)
    tok = embedder.tokenizer
    targets = {tok.decode(ids[n:-1]) for ids, n in csft.rows}  # the target text, EOS dropped
    assert targets <= {tok.decode(tok(t + "\n", add_special_tokens=False)["input_ids"]) for t in texts[1:]}
    assert len(targets) > 1


def test_an_unknown_item_text_is_refused():
    with pytest.raises(ValueError, match="item text kind"):
        make_stage("csft", "paper", "demo", item_text="plot")
