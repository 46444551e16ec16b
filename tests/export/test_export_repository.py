"""The Triton repository writer: layout, configs that Triton's own protobuf accepts, tensors that the ONNX graphs
really have, the native flavour's configuration (it cannot run here: no onnxruntime backend, no GPU), checksums,
and a tokenizer step that reproduces the embedder's tokenisation."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.onnx.artifact import ExportInputError, read_manifest
from export.triton.repository import MANIFEST_FILE, RepositoryOptions, write_repository
from llmrec.files import sha256_file

TESTS = Path(__file__).resolve().parents[1]
ONNX_TYPES = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32, onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64}


def _helpers():
    name = "llmrec_tiny_exports"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "serving" / "tiny_exports.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def repo_exports(tmp_path_factory):
    return _helpers().build_tiny_exports(tmp_path_factory.getbasetemp() / "llmrec-tiny-exports")


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def graph_tensors(path: Path) -> tuple[list, list]:
    model = onnx.load(str(path), load_external_data=False)
    return list(model.graph.input), list(model.graph.output)


def assert_matches_graph(config: model_config_pb2.ModelConfig, graph_path: Path) -> None:
    """Names, types and (non-batch) dims in config.pbtxt are the graph's."""
    inputs, outputs = graph_tensors(graph_path)
    for declared, actual in ((config.input, inputs), (config.output, outputs)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for d, a in zip(declared, actual, strict=True):
            assert d.data_type == ONNX_TYPES[a.type.tensor_type.elem_type]
            dims = [x.dim_value if x.HasField("dim_value") else -1 for x in a.type.tensor_type.shape.dim]
            assert list(d.dims) == dims[1:]


@pytest.fixture(scope="module")
def python_repo(repo_exports, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    write_repository(repo_exports.embedder, repo_exports.user_encoder, out, RepositoryOptions(threads=2))
    return out


def test_python_flavour_layout_and_configs(python_repo, repo_exports):
    for name in ("item_encoder", "tokenizer", "item_embedder", "user_encoder"):
        assert (python_repo / name / "config.pbtxt").is_file() and (python_repo / name / "1").is_dir()
    embedder = parse_config(python_repo / "item_embedder" / "config.pbtxt")
    assert embedder.backend == "python" and embedder.max_batch_size == 32
    assert embedder.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert list(embedder.dynamic_batching.preferred_batch_size) == [8, 16]
    assert embedder.dynamic_batching.max_queue_delay_microseconds == 0
    assert embedder.parameters["intra_op_thread_count"].string_value == "2"
    assert embedder.model_warmup[0].inputs["attention_mask"].input_data_file == "attention_mask"
    assert (python_repo / "item_embedder" / "warmup" / "attention_mask").stat().st_size == 8 * 8
    assert_matches_graph(embedder, python_repo / "item_embedder" / "1" / "model.onnx")
    user = parse_config(python_repo / "user_encoder" / "config.pbtxt")
    assert_matches_graph(user, python_repo / "user_encoder" / "1" / "model.onnx")
    assert list(user.input[0].dims) == [-1, 16]
    for name in ("item_embedder", "user_encoder", "tokenizer"):
        assert (python_repo / name / "1" / "model.py").is_file()
    tokenizer = parse_config(python_repo / "tokenizer" / "config.pbtxt")
    assert tokenizer.input[0].data_type == model_config_pb2.TYPE_STRING
    assert [o.name for o in tokenizer.output] == [i.name for i in embedder.input]


def test_item_encoder_ensemble_wires_the_tensors(python_repo):
    ensemble = parse_config(python_repo / "item_encoder" / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tokenizer", "item_embedder"]
    assert dict(steps[0].input_map) == {"text": "text"}
    assert dict(steps[0].output_map) == dict(steps[1].input_map)  # tokenizer outputs feed the embedder inputs
    embedder = parse_config(python_repo / "item_embedder" / "config.pbtxt")
    assert list(ensemble.output) == list(embedder.output)


def test_manifest_names_sources_and_checksums(python_repo, repo_exports):
    manifest = json.loads((python_repo / MANIFEST_FILE).read_text())
    assert manifest["format"] == "llmrec.triton-repository/1" and manifest["flavour"] == "python"
    assert manifest["sources"]["embedder"]["export_sha256"] == sha256_file(repo_exports.embedder / "export.json")
    assert manifest["sources"]["user_encoder"]["item_vectors"]["path"].endswith("item_vectors.safetensors")
    for rel, digest in manifest["files"].items():
        assert sha256_file(python_repo / rel) == digest, rel
    assert manifest["files"]["item_embedder/1/model.onnx"] == sha256_file(repo_exports.embedder / "model.onnx")
    settings = json.loads((python_repo / "tokenizer" / "1" / "tokenization.json").read_text())
    assert settings["template"] == "title: {text}" and settings["append_eos"] is True


def test_native_flavour_with_tensorrt(repo_exports, tmp_path):
    """Configuration only: the native flavour needs Triton's onnxruntime backend and a GPU, absent here."""
    out = tmp_path / "native"
    write_repository(repo_exports.embedder, repo_exports.user_encoder, out,
                     RepositoryOptions(flavour="native", tensorrt=True, instances=2))
    for name in ("item_embedder", "user_encoder"):
        config = parse_config(out / name / "config.pbtxt")
        assert config.platform == "onnxruntime_onnx" and not config.backend
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert config.instance_group[0].count == 2
        assert not (out / name / "1" / "model.py").exists() and (out / name / "1" / "model.onnx").is_file()
        assert_matches_graph(config, out / name / "1" / "model.onnx")
        (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt"
        assert trt.parameters["precision_mode"] == "FP16"
        assert trt.parameters["trt_engine_cache_enable"] == "1"
        assert trt.parameters["trt_engine_cache_path"].endswith(name)
        assert int(trt.parameters["max_workspace_size_bytes"]) > 0
        assert "attention_mask:32x" in trt.parameters["trt_profile_max_shapes"]
    assert parse_config(out / "tokenizer" / "config.pbtxt").backend == "python"  # text work stays on the CPU
    assert json.loads((out / MANIFEST_FILE).read_text())["flavour"] == "native"


STAND_IN_TRTEXEC = """#!{python}
import json, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
flags = [a for a in sys.argv[1:] if "=" not in a]
open(args["saveEngine"], "wb").write(b"engine of " + args["onnx"].encode())
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "flags": flags}}) + "\\n")
"""


def test_native_flavour_with_tensorrt_plans(repo_exports, tmp_path, monkeypatch):
    """What trtexec is asked to build and the tensorrt_plan configs. trtexec needs a GPU, absent here: a
    stand-in records its command line and writes a placeholder engine; the build itself was never run."""
    log = tmp_path / "trtexec.jsonl"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trtexec = bin_dir / "trtexec"
    trtexec.write_text(STAND_IN_TRTEXEC.format(python=sys.executable, log=str(log)))
    trtexec.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out = tmp_path / "plans"
    write_repository(repo_exports.embedder, repo_exports.user_encoder, out,
                     RepositoryOptions(flavour="native", tensorrt_plan=True, max_batch_size=32))
    calls = {Path(c["args"]["onnx"]).parent.name: c for c in map(json.loads, log.read_text().splitlines())}
    assert set(calls) == {repo_exports.embedder.name, repo_exports.user_encoder.name}
    embedder = read_manifest(repo_exports.embedder, "embedder")
    tokens = calls[repo_exports.embedder.name]
    assert tokens["args"]["minShapes"] == "input_ids:1x1,attention_mask:1x1"
    assert tokens["args"]["maxShapes"] == (f"input_ids:32x{embedder['max_length']},"
                                           f"attention_mask:32x{embedder['max_length']}")
    assert tokens["args"]["memPoolSize"] == "workspace:1024M" and {"--fp16", "--skipInference"} <= set(tokens["flags"])
    user = read_manifest(repo_exports.user_encoder)
    hidden, max_len = user["hidden_size"], user["max_len"]
    assert calls[repo_exports.user_encoder.name]["args"]["maxShapes"] == (
        f"item_vectors:32x{max_len}x{hidden},attention_mask:32x{max_len}")
    for name in ("item_embedder", "user_encoder"):
        config = parse_config(out / name / "config.pbtxt")
        assert config.platform == "tensorrt_plan" and not config.parameters
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert not config.optimization.execution_accelerators.gpu_execution_accelerator
        files = sorted(p.name for p in (out / name / "1").iterdir())
        assert files == ["model.plan"]
        assert_matches_graph(config, (repo_exports.embedder if name == "item_embedder"
                                      else repo_exports.user_encoder) / "model.onnx")
    assert "item_embedder/1/model.plan" in json.loads((out / MANIFEST_FILE).read_text())["files"]


def test_tensorrt_plans_need_trtexec_and_the_native_flavour(repo_exports, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtexec anywhere
    monkeypatch.setattr("export.triton.tensorrt.TRTEXEC_LOCATIONS", (str(tmp_path / "none"),))
    with pytest.raises(ExportInputError, match="needs TensorRT's trtexec"):
        write_repository(repo_exports.embedder, None, tmp_path / "r", RepositoryOptions(flavour="native",
                                                                                        tensorrt_plan=True))
    assert not (tmp_path / "r").exists()
    for options in ({"flavour": "python", "tensorrt_plan": True},
                    {"flavour": "native", "tensorrt_plan": True, "tensorrt": True}):
        with pytest.raises(ExportInputError, match="tensorrt_plan must be used with --flavour native only"):
            RepositoryOptions(**options)


def test_refuses_tensorrt_for_python_flavour_and_foreign_folders(repo_exports, tmp_path):
    with pytest.raises(ExportInputError, match="native"):
        RepositoryOptions(flavour="python", tensorrt=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    with pytest.raises(ExportInputError, match="not overwriting"):
        write_repository(repo_exports.embedder, None, foreign)
    assert (foreign / "keep.txt").is_file() and len(list(tmp_path.iterdir())) == 1  # no temporary left behind


def test_rewrites_its_own_repository_and_detects_a_changed_export(repo_exports, tmp_path):
    out = tmp_path / "repo"
    write_repository(None, repo_exports.user_encoder, out)
    write_repository(None, repo_exports.user_encoder, out)  # replacing a repository it wrote is fine
    changed = tmp_path / "changed"
    shutil.copytree(repo_exports.user_encoder, changed)
    manifest = json.loads((changed / "export.json").read_text())
    manifest["files"]["model.onnx"] = "0" * 64  # export.json no longer describes the graph beside it
    (changed / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportInputError, match="sha256"):
        write_repository(None, changed, out)
    with (changed / "model.onnx").open("ab") as handle:
        handle.write(b"\0")  # a damaged graph
    with pytest.raises(ExportInputError, match="not a readable ONNX graph"):
        write_repository(None, changed, out)
    assert parse_config(out / "user_encoder" / "config.pbtxt").name == "user_encoder"  # previous one intact


def test_cli_repository_subcommand(repo_exports, tmp_path):
    from export.onnx.__main__ import main

    out = tmp_path / "cli_repo"
    assert main(["repository", "--embedder", str(repo_exports.embedder), "--user-encoder",
                 str(repo_exports.user_encoder), "--out", str(out), "--flavour", "native", "--quiet"]) == 0
    assert parse_config(out / "item_embedder" / "config.pbtxt").platform == "onnxruntime_onnx"
    assert main(["repository", "--embedder", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 2


def _tokenizer_model(folder: Path):
    spec = importlib.util.spec_from_file_location(f"tokenizer_model_{id(folder)}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ItemTokenizer(folder)


def test_tokenizer_step_reproduces_the_embedder_tokenisation(python_repo, repo_exports):
    """The Triton tokenizer (tokenizers library only) == ItemEmbedder.token_ids (transformers), incl. truncation."""
    import torch

    from train.embedder import ItemEmbedder

    embedder = ItemEmbedder.load(repo_exports.checkpoint, device="cpu", dtype=torch.float32)
    texts = [*_helpers().TEXTS, " ".join(["story"] * 50), "toy  story \t star"]
    step = _tokenizer_model(python_repo / "tokenizer" / "1")
    assert step.token_ids(texts) == embedder.token_ids(texts)
    ids, mask = step(texts)
    reference = embedder.collate(embedder.token_ids(texts))
    assert (ids == reference["input_ids"].numpy()).all() and (mask == reference["attention_mask"].numpy()).all()


def test_tokenizer_step_on_smollm2_tokenizer(tmp_path):
    """The real SmolLM2 tokenizer (BPE, BOS, EOS = <|im_end|>), when its converted folder is in the cache."""
    from train.data.cache import default_cache_dir

    folder = default_cache_dir() / "models" / "smollm2-135m-instruct"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("SmolLM2 not converted in the llmrec cache")
    from transformers import AutoConfig

    from train.embedder.base import load_tokenizer
    from train.embedder.config import EmbedderConfig
    from train.embedder.model import ItemEmbedder

    tokenizer, eos = load_tokenizer(folder, AutoConfig.from_pretrained(str(folder)))
    texts = ["Toy Story (1995)", "Star Wars: Episode VI – Return of the Jedi", "Amélie ☕", "x" * 400, ""]
    step_dir = tmp_path / "1"
    (step_dir / "tokenizer").mkdir(parents=True)
    shutil.copy2(folder / "tokenizer.json", step_dir / "tokenizer" / "tokenizer.json")
    shutil.copy2(Path(__file__).resolve().parents[2] / "serving" / "triton" / "models" / "tokenizer_model.py",
                 step_dir / "model.py")
    for pooling, max_length in (("mean", 32), ("eos", 16)):
        config = EmbedderConfig(base=str(folder), pooling=pooling, max_length=max_length, template="Item: {text}")
        (step_dir / "tokenization.json").write_text(json.dumps({
            "template": config.template, "max_length": max_length, "append_eos": pooling == "eos",
            "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id, "padding_side": "right"}))
        embedder = ItemEmbedder(torch_module(), tokenizer, config, eos)
        assert _tokenizer_model(step_dir).token_ids(texts) == embedder.token_ids(texts)


def torch_module():
    import torch

    return torch.nn.Identity()


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/w.bin", ".."])
def test_an_external_data_location_outside_the_model_folder_is_refused(repo_exports, tmp_path, location):
    """A graph's external weights are copied by name: '../x' would read outside the export, and an absolute
    path would make the copy's source and destination the same file (truncating it)."""
    from onnx.external_data_helper import set_external_data

    changed = tmp_path / "changed"
    shutil.copytree(repo_exports.user_encoder, changed)
    model = onnx.load(str(changed / "model.onnx"))
    tensor = model.graph.initializer[0]
    set_external_data(tensor, location=location)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    onnx.save_model(model, str(changed / "model.onnx"))
    manifest = json.loads((changed / "export.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(changed / "model.onnx")
    (changed / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportInputError, match="plain file name inside the model folder"):
        write_repository(None, changed, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_an_int8_variant_that_passed_its_gate_is_served_and_named(repo_exports, python_repo, tmp_path):
    from export.onnx.quantize import quantize_int8
    from export.triton.repository import ServedVariant

    int8 = quantize_int8(Path(repo_exports.embedder) / "model.onnx", tmp_path / "int8" / "model.onnx", "dynamic")
    gate = {"passed": True, "recipe": "dynamic", "variant_sha256": sha256_file(int8), "overlap": 0.9,
            "recall_drop": 0.004, "recall_drop_bound": 0.015, "max_recall_drop": 0.02}
    out = tmp_path / "model_repository"
    manifest = write_repository(repo_exports.embedder, repo_exports.user_encoder, out, RepositoryOptions(threads=2),
                                variant=ServedVariant(int8.parent, gate))
    graph = manifest["sources"]["embedder"]["graph"]
    assert graph["variant"] == "int8" and graph["recipe"] == "dynamic" and graph["sha256"] == sha256_file(int8)
    assert graph["gate"]["recall_drop_bound"] == 0.015
    assert sha256_file(out / "item_embedder" / "1" / "model.onnx") == sha256_file(int8)
    assert_matches_graph(parse_config(out / "item_embedder" / "config.pbtxt"), int8)
    # the fp32 repository says so; a variant that failed, or another graph than the gated one, is refused
    assert json.loads((python_repo / MANIFEST_FILE).read_text())["sources"]["embedder"]["graph"] == {"variant": "fp32"}
    with pytest.raises(ExportInputError, match="did not pass"):
        write_repository(repo_exports.embedder, None, tmp_path / "r1", variant=ServedVariant(
            int8.parent, gate | {"passed": False}))
    with pytest.raises(ExportInputError, match="not the graph"):
        write_repository(repo_exports.embedder, None, tmp_path / "r2", variant=ServedVariant(
            int8.parent, gate | {"variant_sha256": "0" * 64}))
