"""Item embedder export: parity with torch, attention modes, pooling, padding, dynamic axes, LoRA, adapter, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.onnx import __main__ as cli
from export.onnx.artifact import read_manifest, verify_files
from export.onnx.validate import compare, embed_texts_onnx, load_tokenizer, make_session, token_ids

ATOL = 1e-4
# texts of the tiny vocabulary (word-level tokenizer), of different lengths
TEXTS = ["toy story", "star wars return of the jedi", "a", "the movie title list star", "kalo mitu re sa",
         "return of the jedi 1 9 8 3", "b story", "wars", "the star of the movie list kalo kalo mitu", "jedi"]


def onnx_vectors(folder: Path, manifest: dict, texts=TEXTS, side: str = "right", batch_size: int = 32) -> np.ndarray:
    return embed_texts_onnx(folder / "model.onnx", folder / "tokenizer", texts, manifest, batch_size=batch_size,
                            padding_side=side)


def with_hidden_output(folder: Path):
    """A session on a copy of the graph that also outputs the decoder's last_hidden_state."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(folder / "model.onnx"))
    model.graph.output.append(helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, None))
    return make_session(model.SerializeToString())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_export_matches_torch_and_writes_the_contract(exported, arch):
    folder, manifest, embedder = exported(arch)
    expected = embedder.encode(TEXTS, progress=False)
    for side in ("right", "left"):
        np.testing.assert_allclose(onnx_vectors(folder, manifest, side=side), expected, atol=ATOL)
    on_disk = read_manifest(folder, "embedder")
    assert on_disk == manifest
    assert manifest["inputs"] == [{"name": "input_ids", "dtype": "int64", "dims": [-1, -1]},
                                  {"name": "attention_mask", "dtype": "int64", "dims": [-1, -1]}]
    assert manifest["outputs"] == [{"name": "item_vector", "dtype": "float32", "dims": [-1, 32]}]
    assert manifest["dim"] == 32 and manifest["pooling"] == "mean" and manifest["attention"] == "bidirectional"
    assert manifest["adapter"] is None and manifest["normalize"] is False
    assert (manifest["eos_token_id"], manifest["pad_token_id"], manifest["bos_token_id"]) == (2, 2, 1)
    assert manifest["source"]["sha256"] and manifest["validation"]["passed"]
    assert manifest["validation"]["min_cosine"] >= 0.9999
    assert {"model.onnx", "tokenizer/tokenizer.json"} <= set(manifest["files"])
    assert not (folder / "model.onnx_data").exists()
    assert verify_files(folder) == []
    session = make_session(folder / "model.onnx")
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["item_vector"]
    # the tokenizer step of the contract reproduces the torch tokenisation, truncation included
    long_text = " ".join(["star"] * 300)
    assert token_ids(load_tokenizer(folder / "tokenizer"), [*TEXTS, long_text], manifest) == \
        embedder.token_ids([*TEXTS, long_text])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_attention_mode_survives_export(exported, arch, attention):
    folder, manifest, embedder = exported(arch, attention=attention)
    session = with_hidden_output(folder)
    ids = np.array([[1, 10, 11, 12, 13], [1, 10, 11, 12, 14]], dtype=np.int64)  # differ in the last token only
    mask = np.ones_like(ids)
    vectors, hidden = session.run(["item_vector", "last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    first_tokens_moved = np.abs(hidden[0, :4] - hidden[1, :4]).max()
    if attention == "bidirectional":
        assert first_tokens_moved > 1e-3  # earlier positions see the later token
    else:
        assert first_tokens_moved < 1e-6  # causal: earlier positions cannot
    with torch.no_grad():
        expected = embedder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        other = embedder.forward_hidden(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(vectors, expected, atol=ATOL)
    np.testing.assert_allclose(hidden, other, atol=ATOL)


def test_bidirectional_export_differs_from_a_causal_one(exported):
    bi_folder, bi_manifest, _ = exported("llama")
    causal_folder, causal_manifest, _ = exported("llama", attention="causal")
    bi, causal = onnx_vectors(bi_folder, bi_manifest), onnx_vectors(causal_folder, causal_manifest)
    assert np.abs(bi - causal).max() > 1e-3


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("pooling", ["mean", "last", "eos"])
def test_pooling_under_left_and_right_padding(exported, arch, pooling):
    folder, manifest, embedder = exported(arch, pooling=pooling)
    assert manifest["pooling"] == pooling and manifest["append_eos"] == (pooling == "eos")
    expected = embedder.encode(TEXTS, progress=False)
    right = onnx_vectors(folder, manifest, side="right")
    left = onnx_vectors(folder, manifest, side="left")
    np.testing.assert_allclose(right, expected, atol=ATOL)
    np.testing.assert_allclose(left, expected, atol=ATOL)
    if pooling == "eos":
        rows = token_ids(load_tokenizer(folder / "tokenizer"), TEXTS, manifest)
        assert all(row[-1] == manifest["eos_token_id"] for row in rows)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("batch,length", [(1, 3), (17, 3), (1, 200), (17, 200)])
def test_dynamic_batch_and_sequence_axes(exported, arch, batch, length):
    folder, _, embedder = exported(arch)
    rng = np.random.default_rng(batch * 1000 + length)
    ids = rng.integers(4, 200, size=(batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    for row in range(batch):  # mixed left and right padding in one batch
        cut = int(rng.integers(0, length - 1))
        if row % 2:
            mask[row, :cut] = 0
        else:
            mask[row, length - cut :] = 0
    ids[mask == 0] = 2
    got = make_session(folder / "model.onnx").run(["item_vector"], {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        expected = embedder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert got.shape == (batch, 32)
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_checkpoints_export_merged(tiny_embedder, tmp_path, arch):
    from export.onnx.embedder import export_embedder
    from train.embedder import LoraSettings

    embedder = tiny_embedder(arch, lora=LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():  # make the adapters matter (lora_B starts at zero)
        for name, param in embedder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    unmerged = embedder.encode(TEXTS, progress=False)
    base = tiny_embedder(arch).encode(TEXTS, progress=False)
    assert np.abs(unmerged - base).max() > 1e-3
    merged_ckpt = embedder.save(tmp_path / "merged", merge=True)
    adapter_ckpt = embedder.save(tmp_path / "adapter", merge=False)
    for checkpoint, out in ((merged_ckpt, tmp_path / "onnx-merged"), (adapter_ckpt, tmp_path / "onnx-adapter")):
        manifest = export_embedder(checkpoint, out)
        assert manifest["source"]["lora_merged"] is True
        np.testing.assert_allclose(onnx_vectors(out, manifest), unmerged, atol=ATOL)


def test_adapter_gives_the_srs_item_vectors_and_normalize(embedder_checkpoint, srs_checkpoint, tmp_path):
    from export.onnx.embedder import export_embedder

    checkpoint, embedder = embedder_checkpoint("llama")
    frozen = torch.zeros(len(TEXTS) + 1, 32)
    frozen[1:] = torch.from_numpy(embedder.encode(TEXTS, progress=False))
    srs = srs_checkpoint(tmp_path / "srs", frozen=frozen, adapter="mlp", standardize=True, hidden=24)
    ids = torch.arange(1, len(TEXTS) + 1)
    with torch.no_grad():
        expected = srs.items(ids).numpy()
    manifest = export_embedder(checkpoint, tmp_path / "onnx", adapter=tmp_path / "srs")
    assert manifest["dim"] == 24 and manifest["outputs"][0]["dims"] == [-1, 24]
    assert manifest["adapter"]["kind"] == "mlp" and manifest["adapter"]["standardize"] is True
    got = onnx_vectors(tmp_path / "onnx", manifest)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    report = compare(expected, got, metric="inner_product")
    assert report["min_cosine"] > 0.99999 and report["topk_overlap"] == 1.0

    normed = export_embedder(checkpoint, tmp_path / "onnx-norm", adapter=tmp_path / "srs", normalize=True)
    assert normed["normalize"] is True
    got = onnx_vectors(tmp_path / "onnx-norm", normed)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, F.normalize(torch.from_numpy(expected), dim=-1).numpy(), atol=ATOL)


def test_an_upserted_item_gets_the_vector_of_a_cold_item_of_llm_initialised_ids(embedder_checkpoint, srs_checkpoint,
                                                                                 tmp_path):
    """fusion "init": warm items are trained IDs, a cold one keeps its text projection; the exported item
    encoder computes that projection from the text, so a new item lands where the SRS puts a cold one."""
    from export.onnx.embedder import export_embedder

    checkpoint, embedder = embedder_checkpoint("llama")
    frozen = torch.zeros(len(TEXTS) + 1, 32)
    frozen[1:] = torch.from_numpy(embedder.encode(TEXTS, progress=False))
    warm = torch.ones(len(TEXTS) + 1, dtype=torch.bool)
    warm[[3, 7]] = False
    srs = srs_checkpoint(tmp_path / "srs", frozen=frozen, warm=warm, fusion="init", hidden=6)
    manifest = export_embedder(checkpoint, tmp_path / "onnx", adapter=tmp_path / "srs")
    assert manifest["adapter"]["kind"] == "linear" and manifest["adapter"]["fusion"] == "init"
    got = onnx_vectors(tmp_path / "onnx", manifest)
    with torch.no_grad():
        table = srs.item_vectors().numpy()
        text = srs.items.text(torch.arange(1, len(TEXTS) + 1)).numpy()
    np.testing.assert_allclose(got, text, atol=ATOL)
    np.testing.assert_allclose(got[[2, 6]], table[[3, 7]], atol=ATOL)  # the cold items' rows of the SRS table
    assert np.abs(got[0] - table[1]).max() > 10 * ATOL  # a warm item has moved away from its start


def test_normalize_without_adapter(exported):
    folder, manifest, embedder = exported("qwen2", normalize=True)
    got = onnx_vectors(folder, manifest)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    expected = F.normalize(torch.from_numpy(embedder.encode(TEXTS, progress=False)), dim=-1).numpy()
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_cli_rejects_bad_input_with_exit_2(embedder_checkpoint, srs_checkpoint, tmp_path, capsys):
    checkpoint, _ = embedder_checkpoint("llama")
    srs_checkpoint(tmp_path / "id-srs")
    cases = [
        (["embedder", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "--checkpoint"),
        (["embedder", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--min-cosine", "1.5"],
         "--min-cosine"),
        (["embedder", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--adapter",
          str(tmp_path / "id-srs")], "--adapter"),
        (["embedder", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--adapter",
          str(tmp_path / "nope")], "--adapter"),
    ]
    for argv, field in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err
        assert not (tmp_path / "o").exists()
    for argv in (["embedder", "--out", "x"], ["embedder", "--checkpoint", "x", "--out", "y", "--min-cosine", "hi"],
                 ["quantize"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2


def test_real_smollm2_export_matches_torch(tmp_path):
    """The real default model (SmolLM2-135M, causal Llama, 576-d): export and parity on a few texts."""
    from export.onnx.embedder import export_embedder
    from train.embedder import EmbedderConfig, ItemEmbedder

    embedder = ItemEmbedder.from_base(EmbedderConfig(), device="cpu", dtype=torch.float32)
    checkpoint = embedder.save(tmp_path / "smollm2")
    texts = ["Toy Story (1995)", "Star Wars: Episode V - The Empire Strikes Back (1980)", "Heat", "Fargo"]
    manifest = export_embedder(checkpoint, tmp_path / "onnx", texts=texts)
    assert manifest["dim"] == 576 and manifest["architecture"] == "LlamaForCausalLM"
    assert manifest["eos_token_id"] == 2
    got = onnx_vectors(tmp_path / "onnx", manifest, texts=texts, side="left")
    expected = embedder.encode(texts, progress=False)
    report = compare(expected, got)
    assert report["min_cosine"] > 0.99999 and report["max_abs_diff"] < 1e-3
    print(json.dumps({"smollm2_parity": report, "validation": manifest["validation"]["min_cosine"]}))


def test_weights_in_an_external_data_file_travel_with_the_graph(embedder_checkpoint, tmp_path, monkeypatch):
    """Decoders past protobuf's 2 GB limit come out of Optimum with their weights in a side file: the spliced
    graph must reference it, validation must read it, and the Triton repository must carry it."""
    import onnx

    from export.onnx import embedder as module
    from export.onnx.artifact import DATA_FILE
    from export.triton.repository import RepositoryOptions, write_repository

    original = module.export_decoder

    def external_decoder(*args, **kwargs):
        path = original(*args, **kwargs)
        model = onnx.load(str(path))
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA_FILE,
                  size_threshold=0)
        return path

    monkeypatch.setattr(module, "export_decoder", external_decoder)
    checkpoint, embedder = embedder_checkpoint("qwen2")
    out = tmp_path / "onnx"
    manifest = module.export_embedder(checkpoint, out)
    assert (out / DATA_FILE).stat().st_size > (out / "model.onnx").stat().st_size
    assert {"model.onnx", DATA_FILE} <= set(manifest["files"]) and verify_files(out) == []
    np.testing.assert_allclose(onnx_vectors(out, manifest), embedder.encode(TEXTS, progress=False), atol=ATOL)
    repository = tmp_path / "repository"
    write_repository(out, None, repository, RepositoryOptions(flavour="python"))
    version = repository / "item_embedder" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", DATA_FILE, "model.py"]
    feed = {"input_ids": np.array([[1, 10, 11]]), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    served = make_session(version / "model.onnx").run(["item_vector"], feed)[0]
    with torch.no_grad():
        expected = embedder(torch.tensor([[1, 10, 11]]), torch.ones(1, 3, dtype=torch.long)).numpy()
    np.testing.assert_allclose(served, expected, atol=ATOL)
