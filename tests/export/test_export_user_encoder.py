"""User encoder export: parity with the torch SRS for SASRec and GRU4Rec, ID and frozen items, any history length,
left and right padding; the item table; the contract; CLI errors and a failing validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.onnx import __main__ as cli
from export.onnx.artifact import read_manifest, verify_files
from export.onnx.validate import make_session, random_histories

ATOL = 1e-5


@pytest.fixture(scope="module")
def user_exports(srs_checkpoint, tmp_path_factory):
    """Factory: user_exports(backbone, items, preset) -> (export folder, manifest, torch model), each built once;
    `preset` takes the architecture fields of that downstream preset (block style, activation, norms, adapter)."""
    from export.onnx.user_encoder import export_user_encoder
    from train.srs.config import SRSConfig

    root = tmp_path_factory.mktemp("user_encoders")
    built = {}

    def make(backbone: str, items: str, preset: str = "project"):
        key = (backbone, items, preset)
        if key not in built:
            frozen = None
            if items == "frozen":
                torch.manual_seed(3)
                frozen = torch.randn(31, 12)
                frozen[0] = 0
            cache = root / "cache"
            dataset = {"name": "toy", "manifest": {"key": "k1"}}
            folder = cache / "datasets" / "toy-k1"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "items.json").write_text(json.dumps(["[PAD]", *[f"i{i}" for i in range(1, 31)]]))
            chosen = SRSConfig.preset(preset)
            architecture = {f: getattr(chosen, f) for f in ("sasrec_style", "gru_style", "activation",
                                                             "layer_norm_eps")}
            adapter = "mlp" if preset == "project" else chosen.adapter
            name = f"{backbone}-{items}-{preset}"
            model = srs_checkpoint(root / f"srs-{name}", backbone=backbone, frozen=frozen, dataset=dataset,
                                   adapter=adapter, standardize=frozen is not None, **architecture)
            out = root / f"onnx-{name}"
            manifest = export_user_encoder(root / f"srs-{name}", out, cache_dir=cache)
            built[key] = (out, manifest, model)
        return built[key]

    return make


CASES = [("sasrec", "ids"), ("sasrec", "frozen"), ("gru4rec", "ids"), ("gru4rec", "frozen")]
PRESET_CASES = [("sasrec", "frozen", "llm2rec"), ("sasrec", "frozen", "llmemb"), ("gru4rec", "frozen", "llm2rec")]


@pytest.mark.parametrize("backbone,items,preset", [(*case, "project") for case in CASES] + PRESET_CASES)
def test_user_encoder_matches_torch_for_every_length_batch_and_padding(user_exports, backbone, items, preset):
    folder, manifest, model = user_exports(backbone, items, preset)
    session = make_session(folder / "model.onnx")
    with torch.no_grad():
        table = model.item_vectors().numpy()
    rng = np.random.default_rng(0)
    max_len = manifest["max_len"]
    for batch in (1, 17):
        for length in range(1, max_len + 1):
            for side in ("left", "right"):
                lengths = [length] if batch == 1 else list(rng.integers(1, length + 1, size=batch))
                history = random_histories(30, batch, length, rng, side, lengths)
                with torch.no_grad():
                    expected = model.user_vectors(torch.from_numpy(history)).numpy()
                got = session.run(["user_vector"], {"item_vectors": table[history],
                                                    "attention_mask": (history != 0).astype(np.int64)})[0]
                assert got.shape == (batch, 16)
                np.testing.assert_allclose(got, expected, atol=ATOL)
    # padding invariance inside the graph: the same histories padded either way give the same user vectors
    left = random_histories(30, 5, max_len, np.random.default_rng(1), "left", [1, 3, 5, 7, 8])
    right = random_histories(30, 5, max_len, np.random.default_rng(1), "right", [1, 3, 5, 7, 8])
    run = [session.run(None, {"item_vectors": table[h], "attention_mask": (h != 0).astype(np.int64)})[0]
           for h in (left, right)]
    np.testing.assert_allclose(run[0], run[1], atol=ATOL)


@pytest.mark.parametrize("backbone,items", [("sasrec", "frozen"), ("gru4rec", "ids")])
def test_item_table_and_contract(user_exports, backbone, items):
    from safetensors import safe_open

    from train.srs.items import read_embedding_file

    folder, manifest, model = user_exports(backbone, items)
    assert read_manifest(folder, "user_encoder") == manifest
    assert manifest["inputs"] == [{"name": "item_vectors", "dtype": "float32", "dims": [-1, -1, 16]},
                                  {"name": "attention_mask", "dtype": "int64", "dims": [-1, -1]}]
    assert manifest["outputs"] == [{"name": "user_vector", "dtype": "float32", "dims": [-1, 16]}]
    assert (manifest["kind"], manifest["backbone"], manifest["max_len"], manifest["hidden_size"]) == \
        ("user_encoder", backbone, 8, 16)
    assert manifest["score"] == "inner_product" and manifest["items"]["kind"] == items
    assert manifest["validation"]["passed"] and manifest["validation"]["min_cosine"] >= 0.9999
    assert set(manifest["files"]) == {"model.onnx", "item_vectors.safetensors"}
    assert verify_files(folder) == []
    matrix, ids = read_embedding_file(folder / "item_vectors.safetensors")
    with torch.no_grad():
        expected = model.item_vectors().numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-7)
    assert not matrix[0].any() and matrix.shape == (31, 16)
    assert ids == ["[PAD]", *[f"i{i}" for i in range(1, 31)]]
    with safe_open(str(folder / "item_vectors.safetensors"), framework="np") as f:
        assert f.metadata()["score"] == "inner_product"


def test_cli_exit_codes(srs_checkpoint, tmp_path, capsys, monkeypatch):
    srs_checkpoint(tmp_path / "srs")
    assert cli.main(["user-encoder", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    assert cli.main(["user-encoder", "--checkpoint", str(tmp_path / "broken"), "--out", str(tmp_path / "o")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert cli.main(["user-encoder", "--checkpoint", str(tmp_path / "srs"), "--out", str(tmp_path / "o"),
                     "--min-cosine", "0"]) == 2
    assert "--min-cosine" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    import export.onnx.validate as validate

    original = validate.summarise
    monkeypatch.setattr(validate, "summarise", lambda cases, threshold: {**original(cases, threshold),
                                                                         "passed": False})
    assert cli.main(["user-encoder", "--checkpoint", str(tmp_path / "srs"), "--out", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "validation failed" in captured.err and "Traceback" not in captured.err
    assert "FAILED" in captured.out
    assert not (tmp_path / "o").exists()
