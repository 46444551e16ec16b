"""bench/gpu_check.py on the CPU: the script runs end to end with a tiny model and the planted dataset, records
every CUDA part as skipped, and its stage and SRS parts (which only run on CUDA there) work when called here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def gpu_check():
    spec = importlib.util.spec_from_file_location("llmrec_gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only record")
def test_runs_on_cpu_with_cuda_parts_skipped_and_random_weights(tiny_dir, planted_folder, tmp_path):
    weightless = tmp_path / "architecture-only"
    shutil.copytree(tiny_dir("llama"), weightless, ignore=shutil.ignore_patterns("*.safetensors"))
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--model", str(weightless),
                           "--data", str(planted_folder), "--batch1-items", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["cuda"] is False and result["environment"]["command"].endswith(str(out))
    assert result["model"]["weights"].startswith("random (seed 0)")
    cpu = result["embed_cpu_fp32"]
    assert cpu["status"] == "ok" and cpu["items"] == result["data"]["items"] == 40 and cpu["b64_items_per_s"] > 0
    cuda_parts = [k for k in result if k.startswith(("embed_cuda", "parity_", "stage_", "srs_epoch_cuda"))]
    assert len(cuda_parts) == 2 + 2 + 5 + 1 + 1
    assert all(result[k]["status"] == "skipped" and result[k]["reason"] == "no CUDA device" for k in cuda_parts)
    assert result["srs_epoch_cpu"]["status"] == "ok" and result["srs_epoch_cpu"]["epochs"] == 1
    assert result["ratios"] == {}


def test_parts_that_run_on_cuda_there_work_here(tiny_dir, planted_data, tmp_path):
    check = gpu_check()
    for stage in check.STAGES:
        row = check.stage_step(stage, tiny_dir("llama"), planted_data, tmp_path)
        assert row["steps"] == check.STAGE_STEPS and row["step_s_after_first"] > 0, stage
    row, vectors = check.embed_speed(tiny_dir("llama"), [f"item {i}" for i in range(10)], "cpu", torch.float32, 3)
    assert vectors.shape[0] == 10 and row["b1_items_per_s"] > 0
    same = check.parity(vectors, vectors.copy())
    assert same == {"min_cosine": 1.0, "mean_cosine": 1.0, "top10_overlap": 1.0}
    noisy = check.parity(vectors, vectors + np.random.default_rng(0).normal(0, 10, vectors.shape))
    assert noisy["min_cosine"] < 0.99
