"""Two CSFT steps with LoRA on the real SmolLM2-135M and MovieLens-100k (batch 2, 32 tokens)."""

from __future__ import annotations

import json

import pytest
import torch

from train.data import load_dataset
from train.embedder import resolve_base
from train.stages import make_stage, run_stage


@pytest.mark.slow
def test_smollm2_csft_two_lora_steps(tmp_path):
    base = resolve_base("smollm2")
    data = load_dataset("ml-100k")
    stage = make_stage("csft", "paper", "cpu-small", steps=2, batch_size=2, max_length=32, log_every=1, eval_every=1,
                       eval_samples=4, patience=1)
    result = run_stage(stage, str(base), data, tmp_path / "csft", device="cpu", dtype=torch.float32, progress=False)
    assert result["status"] == "finished" and result["steps"] == 2
    assert torch.isfinite(torch.tensor(result["final_loss"])) and 0 < result["final_loss"] < 20
    assert max(json.loads(line)["step"] for line in (tmp_path / "csft" / "log.jsonl").read_text().splitlines()) == 2
    assert [e["step"] for e in result["evaluations"]] == [1, 2] and result["held_out"] == 4  # validation targets
    saved = json.loads((tmp_path / "csft" / "embedder" / "config.json").read_text())
    assert saved["weights"] == "model" and saved["lora_merged"] and saved["embedder"]["attention"] == "causal"
