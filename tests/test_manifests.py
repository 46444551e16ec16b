"""The typed manifests shared by the layers read back what they wrote and refuse what they cannot read."""

from __future__ import annotations

import json

import pytest

from llmrec.manifests import REPOSITORY_MANIFEST, EmbedderSource, RepositoryManifest, UserEncoderSource


def test_a_repository_manifest_round_trips_and_a_foreign_one_is_refused(tmp_path):
    manifest = RepositoryManifest(
        flavour="python", created="2026-01-01T00:00:00Z", options={"max_batch_size": 32}, models=["user_encoder"],
        files={"user_encoder/1/model.onnx": "ab" * 32},
        embedder=EmbedderSource("e", "cd" * 32, 64, {"max_length": 32}, {"kind": "attributes"}, "ckpt"),
        user_encoder=UserEncoderSource("u", "ef" * 32, 64, 50, {"path": "t", "sha256": "01" * 32}))
    manifest.write(tmp_path)
    on_disk = json.loads((tmp_path / REPOSITORY_MANIFEST).read_text())
    assert on_disk["format"] == "llmrec.triton-repository/1" and set(on_disk["sources"]) == {"embedder", "user_encoder"}
    assert RepositoryManifest.read(tmp_path) == manifest
    assert RepositoryManifest.read(tmp_path / "elsewhere") is None  # a hand-written repository has none
    on_disk["sources"]["user_encoder"].pop("max_len")
    (tmp_path / REPOSITORY_MANIFEST).write_text(json.dumps(on_disk))
    with pytest.raises(ValueError, match=r"llmrec.json: not a repository manifest this version reads .*max_len"):
        RepositoryManifest.read(tmp_path)
    (tmp_path / REPOSITORY_MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="llmrec.json: not valid JSON"):
        RepositoryManifest.read(tmp_path)


def test_embeddings_manifest_reads_what_train_embed_writes(tiny_dir, planted_data, tmp_path):
    """The contract between train.embed (writer) and export (reader): recipe, embedder hash, sizes; older files
    that name the recipe as `text: "kind:domain"` still read; a folder without one reads as None."""
    import json

    from llmrec.manifests import EmbeddingsManifest
    from train.embed import extract
    from train.embedder import EmbedderConfig, ItemEmbedder

    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir("llama"))))
    extract(embedder, planted_data, tmp_path / "e", text="attributes", domain="film", progress=False,
            embedder_info={"sha256": "ab" * 32})
    read = EmbeddingsManifest.read(tmp_path / "e")
    assert read.item_text == {"kind": "attributes", "domain": "film"} and read.embedder_sha256 == "ab" * 32
    assert read.count == planted_data.num_items and read.dim == embedder.model.config.hidden_size
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"text": "title:book", "dim": 4, "count": 2}))
    assert EmbeddingsManifest.read(old).item_text == {"kind": "title", "domain": "book"}
    assert EmbeddingsManifest.read(tmp_path / "nothing") is None
