"""A real Triton (the binary bundled in nvidia-pytriton) serving the python-flavour repository.

The tokenizer, item_embedder, user_encoder and the item_encoder ensemble must
answer exactly what onnxruntime answers when run directly on the exported
graphs (1e-5), and the process manager must start, report and stop cleanly.
The native flavour cannot run here (no onnxruntime backend, no GPU): its
configuration is tested in tests/export/test_export_repository.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from export.onnx.validate import embed_texts_onnx
from serving.triton import TritonError, TritonServer, find_bundle
from serving.triton import server as server_module
from serving.triton.server import check_repository

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-5


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _http_input(name: str, array: np.ndarray, datatype: str) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.fixture(scope="module")
def client(triton):
    """An HTTP client, closed before Triton stops (an open connection delays Triton's shutdown)."""
    c = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"), concurrency=4)
    yield c
    c.close()


def test_all_models_ready_with_the_written_configs(triton, client):
    assert triton.model_states() == {"item_embedder": "READY", "item_encoder": "READY", "tokenizer": "READY",
                                     "user_encoder": "READY"}
    config = client.get_model_config("item_embedder")
    assert [i["name"] for i in config["input"]] == ["input_ids", "attention_mask"]
    assert config["dynamic_batching"]["preferred_batch_size"] == [8, 16]
    assert client.get_model_config("item_encoder")["platform"] == "ensemble"
    assert triton.load_errors() == []


def test_item_embedder_equals_onnxruntime(triton, client, tiny_exports):
    manifest = json.loads((tiny_exports.embedder / "export.json").read_text())
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 200, size=(5, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, length in enumerate([9, 7, 3, 1, 5]):  # right padding, as the tokenizer produces it
        mask[row, length:] = 0
        ids[row, length:] = manifest["pad_token_id"]
    result = client.infer("item_embedder", [_http_input("input_ids", ids, "INT64"),
                                            _http_input("attention_mask", mask, "INT64")])
    served = result.as_numpy("item_vector")
    direct = _session(tiny_exports.embedder / "model.onnx").run(["item_vector"],
                                                                {"input_ids": ids, "attention_mask": mask})[0]
    assert served.shape == (5, manifest["dim"]) and served.dtype == np.float32
    np.testing.assert_allclose(served, direct, atol=ATOL, rtol=0)


def test_item_encoder_texts_equal_tokenizer_plus_onnxruntime(triton, tiny_exports, tiny_texts):
    """Texts through the ensemble (tokenizer model + item_embedder) over gRPC == the export's own text path."""
    texts = np.array([[t.encode()] for t in tiny_texts], dtype=object)
    tensor = grpcclient.InferInput("text", list(texts.shape), "BYTES")
    tensor.set_data_from_numpy(texts)
    with grpcclient.InferenceServerClient(triton.grpc_url) as grpc:
        served = grpc.infer("item_encoder", [tensor]).as_numpy("item_vector")
    direct = embed_texts_onnx(_session(tiny_exports.embedder / "model.onnx"), tiny_exports.embedder / "tokenizer",
                              tiny_texts, tiny_exports.embedder)
    np.testing.assert_allclose(served, direct, atol=ATOL, rtol=0)


def test_tokenizer_model_output(triton, client, tiny_exports):
    """The tokenizer step alone: BOS, template, truncation to max_length with EOS last, right padding."""
    manifest = json.loads((tiny_exports.embedder / "export.json").read_text())
    long_text = " ".join(["toy"] * 40)
    texts = np.array([[b"toy story"], [long_text.encode()]], dtype=object)
    result = client.infer("tokenizer", [_http_input("text", texts, "BYTES")])
    ids, mask = result.as_numpy("input_ids"), result.as_numpy("attention_mask")
    assert ids.shape == (2, manifest["max_length"])
    assert mask[1].sum() == manifest["max_length"] and ids[1, -1] == manifest["eos_token_id"]
    short = int(mask[0].sum())
    assert ids[0, short - 1] == manifest["eos_token_id"] and (ids[0, short:] == manifest["pad_token_id"]).all()
    assert ids[0, 0] == manifest["bos_token_id"]


def test_user_encoder_equals_onnxruntime(triton, client, tiny_exports):
    from safetensors.numpy import load_file

    table = load_file(str(tiny_exports.user_encoder / "item_vectors.safetensors"))["embeddings"]
    rng = np.random.default_rng(1)
    history = rng.integers(1, table.shape[0], size=(4, 10))
    mask = np.ones((4, 10), dtype=np.int64)
    for row, length in enumerate([10, 6, 2, 1]):  # left padding, as the SRS was trained
        mask[row, : 10 - length] = 0
        history[row, : 10 - length] = 0
    vectors = table[history].astype(np.float32)
    served = client.infer("user_encoder", [_http_input("item_vectors", vectors, "FP32"),
                                           _http_input("attention_mask", mask, "INT64")]).as_numpy("user_vector")
    direct = _session(tiny_exports.user_encoder / "model.onnx").run(
        ["user_vector"], {"item_vectors": vectors, "attention_mask": mask})[0]
    np.testing.assert_allclose(served, direct, atol=ATOL, rtol=0)


def test_concurrent_requests_of_different_lengths(triton, client, tiny_exports):
    """Requests the dynamic batcher queues together come back as if each ran alone (grouped by length)."""
    session = _session(tiny_exports.embedder / "model.onnx")
    rng = np.random.default_rng(2)
    batches = []
    for length in [4, 6, 4, 9, 6, 4, 2, 9]:
        ids = rng.integers(3, 200, size=(int(rng.integers(1, 4)), length)).astype(np.int64)
        batches.append((ids, np.ones_like(ids)))
    pending = [client.async_infer("item_embedder", [_http_input("input_ids", ids, "INT64"),
                                                    _http_input("attention_mask", mask, "INT64")])
               for ids, mask in batches]
    for (ids, mask), request in zip(batches, pending, strict=True):
        served = request.get_result().as_numpy("item_vector")
        direct = session.run(["item_vector"], {"input_ids": ids, "attention_mask": mask})[0]
        np.testing.assert_allclose(served, direct, atol=ATOL, rtol=0)


def test_bad_request_gets_an_error_not_a_crash(triton, client):
    ids = np.full((1, 3), 10_000_000, dtype=np.int64)  # far outside the vocabulary
    with pytest.raises(Exception, match="onnxruntime"):
        client.infer("item_embedder", [_http_input("input_ids", ids, "INT64"),
                                       _http_input("attention_mask", np.ones_like(ids), "INT64")])
    assert triton.is_running()


def test_failed_model_load_is_reported_and_the_process_stopped(python_repository, tmp_path):
    broken = tmp_path / "broken"
    (broken / "user_encoder" / "1").mkdir(parents=True)
    source = python_repository / "user_encoder"
    (broken / "user_encoder" / "config.pbtxt").write_text((source / "config.pbtxt").read_text())
    (broken / "user_encoder" / "1" / "model.py").write_text((source / "1" / "model.py").read_text())
    (broken / "user_encoder" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(TritonError, match="has no llmrec.json, so its files cannot be verified"):
        TritonServer(broken, exit_timeout=5, startup_timeout=60).start()  # fails closed: no manifest, no start
    server = TritonServer(broken, exit_timeout=5, startup_timeout=60, allow_unverified=True)
    with pytest.raises(TritonError) as caught:
        server.start()
    message = str(caught.value)
    assert "user_encoder" in message and "failed to load" in message, message
    assert not server.is_running()


def test_a_port_taken_before_triton_binds_it_is_replaced(python_repository, monkeypatch):
    """The free-port race: another process takes the gRPC port between the pick and Triton's bind. Triton exits
    ("already in use"); start() picks new ports and Triton comes up."""
    import socket

    from serving.triton import server as triton_server

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = iter([None, taken.getsockname()[1]])  # http: a real free port, grpc: the taken one, then real ones
    real = triton_server.free_port
    monkeypatch.setattr(triton_server, "free_port", lambda host: next(picks, None) or real(host))
    server = TritonServer(python_repository, exit_timeout=5, startup_timeout=90)
    try:
        server.start()
        assert server.ports["grpc"] != taken.getsockname()[1] and server.is_running()
        assert any("already in use" in line for line in server.logs()) is False  # the new run's log
    finally:
        server.stop()
        taken.close()


def test_edited_model_file_is_refused_before_triton_starts(python_repository, tmp_path):
    """Every start (a supervisor's restart too) checks the files against the sha256 export recorded."""
    import shutil

    copy = tmp_path / "repository"
    shutil.copytree(python_repository, copy)
    assert json.loads((copy / "llmrec.json").read_text())["files"]
    config = copy / "user_encoder" / "config.pbtxt"
    config.write_text(config.read_text() + "\n# edited\n")
    server = TritonServer(copy, exit_timeout=5, startup_timeout=60)
    with pytest.raises(TritonError, match=r"user_encoder/config.pbtxt differs from its sha256 in llmrec.json"):
        server.start()
    assert server._process is None


def test_a_served_repository_stays_verifiable(triton, client, python_repository):
    """The Python backend wrote bytecode beside every model.py it ran; the next start's check deletes it (a
    planted .pyc would run instead of the verified source) and passes."""
    assert client.is_server_ready()
    assert list(python_repository.rglob("__pycache__/*.pyc"))
    assert check_repository(python_repository) == ["item_embedder", "item_encoder", "tokenizer", "user_encoder"]
    assert not list(python_repository.rglob("__pycache__"))


def test_an_unlisted_file_is_refused_before_triton_starts(python_repository, tmp_path):
    """Triton executes what a model folder holds: a file llmrec.json does not list is refused too."""
    import shutil

    copy = tmp_path / "repository"
    shutil.copytree(python_repository, copy)
    (copy / "tokenizer" / "1" / "helper.py").write_text("import os\n")
    with pytest.raises(TritonError, match=r"tokenizer/1/helper.py is not listed in llmrec.json"):
        TritonServer(copy, exit_timeout=5, startup_timeout=60).start()


def test_missing_bundle_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(server_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TritonError, match="pip install nvidia-pytriton"):
        find_bundle()


def test_cli_missing_repository_is_one_line_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "serving", "triton", "--model-repository", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "error: model repository" in done.stderr and "Traceback" not in done.stderr


def test_cli_serves_until_sigterm(python_repository):
    """`python -m serving triton`: a ready line on stdout, health 200, a clean exit 0 on SIGTERM."""
    process = subprocess.Popen([sys.executable, "-m", "serving", "triton", "--model-repository",
                                str(python_repository), "--exit-timeout", "5", "--quiet"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "triton_ready"
        with urllib.request.urlopen(f"{ready['http']}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(ready["pid"], 0)  # the tritonserver child is gone too
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serving_never_imports_torch():
    code = ("import sys, serving.__main__, serving.triton, serving.triton.cli, serving.gateway.server, llmrec.logs\n"
            "import importlib.util as u\n"
            "for f in ['tokenizer_model', 'onnx_model']:\n"
            "    s = u.spec_from_file_location(f, 'serving/triton/models/' + f + '.py')\n"
            "    s.loader.exec_module(u.module_from_spec(s))\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
