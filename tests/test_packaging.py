"""The wheel a user installs carries the files the code and the docs point to: the protocol, the example
gateway config, the accelerate launch configs and the Python models Triton runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ["serving/proto/llmrec/v2/recommend.proto", "serving/serving.example.yaml", "train/accelerate/ddp.yaml",
        "train/accelerate/fsdp.yaml", "serving/triton/models/onnx_model.py", "serving/triton/models/tokenizer_model.py"]


def test_the_wheel_ships_the_package_data(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("llmrec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in DATA if name not in names] == []
    assert not [n for n in names if n.startswith(("tests/", "bench/", "runs/"))]  # only the libraries
