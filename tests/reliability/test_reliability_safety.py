"""Safe by default: model files are verified against the repository manifest before use, no pickle on any load
path of serving/, and the corrupt-state refusals reach the operator as one clear start-up error."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.gateway import Gateway, StartupError, config_from_dict
from serving.index import Item, ItemIndex, ItemStore

ROOT = Path(__file__).resolve().parents[2]


def test_tampered_model_file_is_refused_before_use(deployment, tmp_path):
    repository = tmp_path / "model_repository"
    shutil.copytree(deployment.repository, repository)
    model = next(repository.glob("user_encoder/*/model.onnx"))
    model.write_bytes(model.read_bytes() + b"\0")
    config = config_from_dict({"port": 0, "metrics_port": None, "backend": "onnxruntime",
                               "model_repository": str(repository), "index": str(deployment.index),
                               "persist": False})
    with pytest.raises(StartupError, match=r"user_encoder/1/model.onnx differs from its sha256"):
        Gateway(config).start()


def test_the_repository_check_fails_closed(deployment, tmp_path):
    """No llmrec.json: refused unless allow_unverified; a file llmrec.json does not list: refused."""
    repository = tmp_path / "model_repository"
    shutil.copytree(deployment.repository, repository)
    values = {"port": 0, "metrics_port": None, "backend": "onnxruntime", "model_repository": str(repository),
              "index": str(deployment.index), "persist": False}
    with Gateway(config_from_dict(values)):
        pass
    assert not list(repository.rglob("__pycache__"))  # loading model.py in-process wrote no bytecode
    extra = repository / "user_encoder" / "1" / "evil.so"
    extra.write_bytes(b"\x7fELF")
    with pytest.raises(StartupError, match=r"user_encoder/1/evil.so is not listed in llmrec.json"):
        Gateway(config_from_dict(values)).start()
    extra.unlink()
    manifest = json.loads((repository / "llmrec.json").read_text())
    (repository / "llmrec.json").unlink()
    with pytest.raises(StartupError, match="has no llmrec.json.*allow_unverified: true"):
        Gateway(config_from_dict({**values, "max_len": manifest["sources"]["user_encoder"]["max_len"]})).start()
    with Gateway(config_from_dict({**values, "allow_unverified": True,
                                   "max_len": manifest["sources"]["user_encoder"]["max_len"]})) as running:
        assert running.is_ready()


def test_index_built_for_other_models_is_refused(index_copy, make_config):
    manifest_path = index_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["item_vectors_sha256"]) == 64
    with Gateway(config_from_dict(make_config(index_copy))):
        pass  # the index of this export is served
    manifest["item_vectors_sha256"] = "0" * 64  # same size, another run's item table
    manifest_path.write_text(json.dumps(manifest))
    for persist in (False, True):
        values = make_config(index_copy, persist=persist, state_dir=str(index_copy) + "-s")
        with pytest.raises(StartupError, match=r"item_vectors_sha256 is 000000000000\.\.\. .* built for other models"):
            Gateway(config_from_dict(values)).start()


def test_index_of_another_size_is_refused(deployment, tmp_path, make_config):
    other = ItemIndex(dim=8, metric="inner_product", factory="Flat", use_gpu=False)
    other.upsert(np.arange(1, 4, dtype=np.int64), np.ones((3, 8), dtype=np.float32))
    other.save(tmp_path / "small", store=ItemStore([Item(i, f"item {i}") for i in range(1, 4)]))
    with pytest.raises(StartupError, match="holds 8-d vectors but the user encoder reads 16-d ones"):
        Gateway(config_from_dict(make_config(tmp_path / "small"))).start()


def test_corrupt_log_is_one_clear_startup_error(deployment, index_copy, make_config):
    config = config_from_dict(make_config(index_copy, persist=True))
    with Gateway(config):
        pass
    state = index_copy.with_name("index-state")
    segment = sorted(state.glob("wal-*.log"))[-1]
    segment.write_bytes(b"\x05\0\0\0garbage" + segment.read_bytes())  # damage the start, valid data after it
    (state / "wal-999999999999.log").write_bytes(segment.read_bytes())  # so the damaged one is not the last
    with pytest.raises(StartupError, match="write-ahead log .* is corrupt"):
        Gateway(config).start()


def test_no_pickle_on_any_load_path():
    for path in sorted((ROOT / "serving").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib)\b", text, re.M), path
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (path, call)
