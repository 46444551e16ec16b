"""Safe by default: model files are verified against the repository manifest before use, no pickle on any load
path of serving/, and the corrupt-state refusals reach the operator as one clear start-up error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from serving.gateway import Gateway, StartupError, config_from_dict

ROOT = Path(__file__).resolve().parents[2]


def test_tampered_model_file_is_refused_before_use(deployment, tmp_path):
    repository = tmp_path / "model_repository"
    shutil.copytree(deployment.repository, repository)
    model = next(repository.glob("user_encoder/*/model.onnx"))
    model.write_bytes(model.read_bytes() + b"\0")
    config = config_from_dict({"port": 0, "metrics_port": None, "backend": "onnxruntime",
                               "model_repository": str(repository), "index": str(deployment.index)})
    with pytest.raises(StartupError, match=r"user_encoder/1/model.onnx differs from its sha256"):
        Gateway(config).start()


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
