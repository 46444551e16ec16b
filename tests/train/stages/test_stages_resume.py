"""Stop and resume equals an uninterrupted run; other settings in the same out folder are refused; batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from train.stages import make_stage, run_stage
from train.stages.common import StageError
from train.stages.sampling import LengthGroupedBatches


def _weights(folder):
    return load_file(str(folder / "embedder" / "model" / "model.safetensors"))


@pytest.mark.parametrize(("name", "arch", "lora", "extra"), [
    ("item-contrastive", "llama", True, {"dropout": 0.2}),  # dropout + LoRA dropout: RNG re-seeded per step
    ("mntp", "qwen2", False, {"grad_accum": 2}),  # random masks, full fine-tuning, accumulation
])
def test_stop_and_resume_gives_the_same_weights(tiny_dir, worded_data, tmp_path, name, arch, lora, extra):
    def stage():
        return make_stage(name, "paper", "demo", steps=6, batch_size=4, lora=lora, lr=1e-3, log_every=1, save_every=100,
                          **extra)
    source = str(tiny_dir(arch))
    straight = run_stage(stage(), source, worded_data, tmp_path / "straight", device="cpu", progress=False)
    stopped = run_stage(stage(), source, worded_data, tmp_path / "resumed", device="cpu", progress=False,
                        stop_after=4)
    assert stopped["status"] == "stopped" and stopped["steps"] == 4
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["config"]["steps"] == 6 and "param_groups" in state["optimizer"]
    with open(tmp_path / "resumed" / "log.jsonl", "a") as f:  # a line logged after the checkpoint: dropped on resume
        f.write(json.dumps({"step": 5, "loss": 0.0}) + "\n")
    resumed = run_stage(stage(), source, worded_data, tmp_path / "resumed", device="cpu", progress=False)
    assert resumed["status"] == "finished" and resumed["steps"] == 6
    assert resumed["final_loss"] == straight["final_loss"]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    logs = [(tmp_path / d / "log.jsonl").read_text() for d in ("straight", "resumed")]
    steps = [[json.loads(line)["step"] for line in text.splitlines() if "loss" in json.loads(line)] for text in logs]
    assert steps[0] == steps[1] == [1, 2, 3, 4, 5, 6]
    again = run_stage(stage(), source, worded_data, tmp_path / "resumed", device="cpu", progress=False)
    assert again["status"] == "skipped"


def test_other_settings_in_the_same_out_folder_are_refused(tiny_dir, worded_data, tmp_path):
    source = str(tiny_dir("llama"))
    make = lambda **kw: make_stage("mntp", "paper", "demo", steps=4, batch_size=4, lora=True, **kw)  # noqa: E731
    run_stage(make(), source, worded_data, tmp_path / "m", device="cpu", progress=False, stop_after=1)
    with pytest.raises(StageError, match=r"config.lr"):
        run_stage(make(lr=1e-2), source, worded_data, tmp_path / "m", device="cpu", progress=False)
    run_stage(make(), source, worded_data, tmp_path / "m", device="cpu", progress=False)
    with pytest.raises(StageError, match="finished mntp run"):
        run_stage(make(seed=7), source, worded_data, tmp_path / "m", device="cpu", progress=False)


def test_batches_are_length_grouped_seeded_and_cover_each_epoch():
    lengths = np.random.default_rng(0).integers(1, 100, size=103)
    batches = LengthGroupedBatches(lengths, batch_size=8, seed=1, bucket_batches=4)
    epoch = [batches.batch(i) for i in range(batches.per_epoch)]
    assert batches.per_epoch == 12 and all(len(b) == 8 for b in epoch)
    flat = np.concatenate(epoch)
    assert len(set(flat.tolist())) == 96
    spread = np.mean([np.ptp(lengths[b]) for b in epoch])
    assert spread < 0.5 * np.ptp(lengths)  # sorted within buckets of 32
    again = LengthGroupedBatches(lengths, batch_size=8, seed=1, bucket_batches=4)
    assert all((again.batch(i) == batches.batch(i)).all() for i in (0, 5, 11, 12, 30))
    assert not (batches.batch(12) == batches.batch(0)).all()  # a new epoch is shuffled anew
    assert len(LengthGroupedBatches([3, 4], batch_size=8, seed=0).batch(5)) == 2
