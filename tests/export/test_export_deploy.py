"""python -m export.onnx all: both exports, the Triton repository and the index in one command; a second run
skips what is unchanged (content hashes), a changed checkpoint redoes what depends on it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from export.onnx.__main__ import main
from export.onnx.artifact import read_manifest
from serving.index import ItemIndex


@pytest.fixture()
def trained(tmp_path, embedder_checkpoint, srs_checkpoint, planted_data):
    """A tiny embedder and an SRS reading its vectors of the planted items through a standardising adapter."""
    checkpoint, embedder = embedder_checkpoint("llama", pooling="mean")
    texts = [f"item {i}" for i in range(1, planted_data.num_items + 1)]
    vectors = embedder.encode(texts, progress=False)
    table = np.concatenate([np.zeros((1, vectors.shape[1]), dtype=np.float32), vectors])
    srs_dir = tmp_path / "srs"
    srs_checkpoint(srs_dir, frozen=torch.from_numpy(table), adapter="linear", standardize=True)
    return checkpoint, srs_dir


def run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys, *extra: str) -> list[str]:
    argv = ["all", "--embedder", str(checkpoint), "--srs", str(srs_dir), "--out", str(tmp_path / "onnx"),
            "--repository", str(tmp_path / "model_repository"), "--index", str(tmp_path / "index"),
            "--dataset", str(planted_folder), "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra]
    assert main(argv) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]


def test_one_command_deployment_and_skipping(tmp_path, trained, planted_folder, planted_data, capsys):
    checkpoint, srs_dir = trained
    first = run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys)
    assert [line.split("]")[0][1:] for line in first] == ["embedder", "user-encoder", "repository", "index"]
    assert not any("up to date" in line for line in first)

    embedder = read_manifest(tmp_path / "onnx" / "item_embedder", "embedder")
    user = read_manifest(tmp_path / "onnx" / "user_encoder")
    assert embedder["adapter"]["output_dim"] == embedder["dim"] == user["hidden_size"]
    repository = json.loads((tmp_path / "model_repository" / "llmrec.json").read_text())
    assert repository["models"] == ["item_embedder", "item_encoder", "tokenizer", "user_encoder"]
    assert repository["flavour"] == "python"
    index = ItemIndex.load(tmp_path / "index")
    assert index.dim == embedder["dim"] and len(index.ids()) == planted_data.num_items

    second = run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys)
    assert all("up to date" in line for line in second) and len(second) == 4

    # an output another run rewrote since (two runs sharing one model_repository/) is written again
    manifest = tmp_path / "model_repository" / "llmrec.json"
    manifest.write_text(manifest.read_text().replace('"created": "', '"created": "1999'))
    rewritten = run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys)
    assert [line.split("]")[0][1:] for line in rewritten if "up to date" not in line] == ["repository"]

    # a retrained SRS (same files, new bytes) invalidates everything downstream of it
    weights = srs_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the lowest bits of the last weight
    weights.write_bytes(bytes(data))
    third = run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys, "--int8", "dynamic")
    ran = [line.split("]")[0][1:] for line in third if "up to date" not in line]
    assert ran == ["embedder", "user-encoder", "int8", "int8-gate", "repository", "index"]
    int8 = tmp_path / "onnx" / "item_embedder_int8" / "model.onnx"
    gate = json.loads((int8.parent / "gate.json").read_text())
    assert gate["recipe"] == "dynamic" and gate["variant_sha256"] == hashlib.sha256(int8.read_bytes()).hexdigest()
    assert 0.0 <= gate["overlap"] <= 1.0 and gate["recall_reference"] is not None and gate["k"] == 10
    assert gate["passed"] == (gate["overlap"] >= 0.8 and gate["recall_drop_bound"] <= 0.02 + 1e-12)
    assert gate["recall_interval"]["examples"] == 2 * planted_data.num_users  # validation + test users, paired
    assert gate["extra"]["items"] == planted_data.num_items and gate["extra"]["texts"] == "title"
    fourth = run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys, "--int8", "dynamic")
    assert all("up to date" in line for line in fourth) and len(fourth) == 6
    manifest = tmp_path / "model_repository" / "llmrec.json"
    assert json.loads(manifest.read_text())["sources"]["embedder"]["graph"] == {"variant": "fp32"}  # unless asked
    run_all(tmp_path, checkpoint, srs_dir, planted_folder, capsys, "--int8", "dynamic", "--serve-int8")
    served = json.loads(manifest.read_text())["sources"]["embedder"]["graph"]["variant"]
    assert served == ("int8" if gate["passed"] else "fp32")


def test_srs_hits_of_its_own_table_are_its_hits(srs_checkpoint, planted_data, tmp_path):
    """The gate's downstream metric: the SRS scored with an item table handed in equals the SRS itself when
    that table is its own (so a variant's drop is the variant's, not the harness's), per example, on
    validation then test users."""
    from export.onnx.quantize import load_srs, srs_hits_of_table
    from train.srs.trainer import evaluate_test, validate

    table = torch.randn(planted_data.num_items + 1, 12)
    table[0] = 0
    srs_checkpoint(tmp_path / "srs", frozen=table, adapter="mlp", standardize=True)
    model, _ = load_srs(tmp_path / "srs")
    with torch.no_grad():
        own = model.item_vectors()[1:].numpy()
    cpu = torch.device("cpu")
    hits = srs_hits_of_table(model, planted_data, own)
    valid, test = hits[:len(planted_data.valid)], hits[len(planted_data.valid):]
    assert len(test) == len(planted_data.test)
    assert valid.mean() == pytest.approx(validate(model, planted_data, model.config, cpu)["recall@10"], abs=1e-12)
    assert test.mean() == pytest.approx(evaluate_test(model, planted_data, model.config, cpu)["full"]["recall@10"],
                                        abs=1e-12)
    assert test.mean() > 0  # and a table of zeros scores every item alike: ties count against the target
    assert not srs_hits_of_table(model, planted_data, np.zeros_like(own)).any()
    assert model.item_vectors().shape[0] == planted_data.num_items + 1  # the method is back afterwards


def test_bad_input_names_the_flag(tmp_path, trained, capsys):
    checkpoint, srs_dir = trained
    argv = ["all", "--embedder", str(checkpoint), "--srs", str(srs_dir), "--out", str(tmp_path / "onnx"),
            "--repository", str(tmp_path / "repo"), "--quiet"]
    assert main([*argv, "--int8", "int3"]) == 2
    assert "--int8 must be one of" in capsys.readouterr().err
    assert main(["all", "--embedder", str(tmp_path / "missing"), *argv[3:]]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()
