"""Data-parallel stage training: two CPU processes (gloo) launched with `accelerate launch` train the same steps as
one process, on a tiny random Llama.

Why the runs are comparable step for step: the loop gives micro-batch `(step x grad_accum + micro) x processes +
rank` to each process, so 1 process with grad_accum 2 and 2 processes with grad_accum 1 see the same two
micro-batches at every step; the one process averages their gradients by accumulation, DDP by all-reduce, and the
logged loss is their mean either way. CSFT with full fine-tuning has no dropout and seeds its batches by index,
so the only difference left is the order of floating-point sums. The tolerance (1e-3 relative per step) is far
above that (observed: equal to the 6 decimals log.jsonl keeps) and far below what a wrong split would cause
(other micro-batches: per-step losses here differ by 2-5% from one step to the next).

On CPU, `accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is used (accelerate's CPU
launcher expects MPI); `--multi_gpu` selects torch's elastic launcher, which starts both, and the stage's
`--device cpu` makes accelerate use gloo on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.stages.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


def _tiny_words() -> list[str]:
    spec = importlib.util.spec_from_file_location("_embedder_fixtures_dist", ROOT / "tests" / "train" / "embedder" /
                                                  "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_words()


def write_worded_atomic(folder: Path, num_users: int = 60, num_items: int = 30, seed: int = 0) -> Path:
    """RecBole atomic files: users walk the item cycle; titles are 2-4 words the tiny tokenizer knows."""
    rng = np.random.default_rng(seed)
    words = _tiny_words()[23:]
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(num_users):
        start, length = int(rng.integers(num_items)), int(rng.integers(8, 14))
        inter += [f"u{u}\ti{(start + t) % num_items}\t5\t{1000 + 10 * t}" for t in range(length)]
    items = ["item_id:token\tmovie_title:token_seq"]
    items += [f"i{i}\t" + " ".join(words[(7 * i + k) % len(words)] for k in range(2 + i % 3)) for i in range(num_items)]
    (folder / f"{folder.name}.inter").write_text("\n".join(inter) + "\n")
    (folder / f"{folder.name}.item").write_text("\n".join(items) + "\n")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate launcher is not installed")
def test_two_processes_train_the_same_curve_as_one(tiny_dir, tmp_path):
    data = write_worded_atomic(tmp_path / "worded")
    common = ["csft", "--embedder", str(tiny_dir("llama")), "--dataset", str(data), "--k-core", "5",
              "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet", "--budget", "demo",
              "--steps", str(STEPS), "--batch-size", "4", "--lr", "2e-3", "--no-lora", "--seed", "7",
              "--log-every", "1", "--warmup-steps", "0", "--history", "3", "--eval-every", "0", "--patience", "0"]
    # one process, two micro-batches per step (also fills the dataset cache the two processes then read)
    assert main([*common, "--grad-accum", "2", "--out", str(tmp_path / "one")]) == 0
    # two processes, one micro-batch each per step
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              "-m", "train.stages", *common, "--grad-accum", "1", "--out", str(tmp_path / "two")]
    run = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]

    one, two = (json.loads((tmp_path / n / "stage.json").read_text()) for n in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["effective_batch"] == two["effective_batch"] == 8 and one["steps"] == two["steps"] == STEPS
    curve_one, curve_two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(curve_one) == len(curve_two) == STEPS  # only the main process logs: one line per step
    # the same shape: both learn (a tiny random model, 12 steps: the loss falls ~10% and is noisy, so compare the
    # mean of the first and last three steps)...
    for curve in (curve_one, curve_two):
        assert np.mean(curve[-3:]) < 0.95 * np.mean(curve[:3]), curve
    # ...and step for step the same numbers (see the module docstring for the tolerance)
    np.testing.assert_allclose(curve_two, curve_one, rtol=1e-3)
    # only the main process wrote the embedder, and both runs saved the same weights up to that tolerance
    from safetensors.numpy import load_file

    w_one = load_file(str(tmp_path / "one" / "embedder" / "model" / "model.safetensors"))
    w_two = load_file(str(tmp_path / "two" / "embedder" / "model" / "model.safetensors"))
    assert w_one.keys() == w_two.keys()
    for name in w_one:
        np.testing.assert_allclose(w_two[name], w_one[name], rtol=1e-3, atol=1e-4, err_msg=name)
    assert not (tmp_path / "two" / "checkpoint").exists()


def test_accelerate_configs_load_and_name_real_layer_classes():
    """The configs of train/accelerate/ parse with accelerate's own loader; FSDP wraps decoder layer classes that
    exist in transformers (accelerate runs FSDP on GPUs only: see fsdp.yaml)."""
    from accelerate.commands.config.config_args import load_config_from_file

    folder = ROOT / "train" / "accelerate"
    configs = {p.stem: load_config_from_file(str(p)) for p in sorted(folder.glob("*.yaml"))}
    assert set(configs) == {"single_gpu_bf16", "ddp", "multi_node", "fsdp"}
    kinds = {name: (c.distributed_type.value, c.mixed_precision, c.num_machines) for name, c in configs.items()}
    assert kinds["single_gpu_bf16"] == ("NO", "bf16", 1) and kinds["ddp"][0] == "MULTI_GPU"
    assert kinds["multi_node"] == ("MULTI_GPU", "bf16", 2) and configs["multi_node"].main_process_ip
    fsdp = configs["fsdp"].fsdp_config
    assert kinds["fsdp"] == ("FSDP", "bf16", 1)
    assert (fsdp["fsdp_sharding_strategy"], fsdp["fsdp_auto_wrap_policy"], fsdp["fsdp_state_dict_type"]) == \
        ("FULL_SHARD", "TRANSFORMER_BASED_WRAP", "SHARDED_STATE_DICT")
    modeling = [importlib.import_module(f"transformers.models.{f}.modeling_{f}") for f in ("llama", "qwen2", "mistral")]
    for name in fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert any(isinstance(getattr(m, name, None), type) for m in modeling), name


@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate launcher is not installed")
def test_fsdp_on_the_cpu_is_refused_instead_of_two_lone_runs(tiny_dir, tmp_path):
    """accelerate runs FSDP on GPUs only: launched with FSDP on a CPU machine, each process would come up as a
    lone 1-process run and both would train into the same folder. The stage refuses, naming the way that works
    here (DDP); FSDP's sharded checkpoints (save_sharded_checkpoint) run on CUDA machines (bench/gpu_check.py)."""
    data = write_worded_atomic(tmp_path / "worded")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}
    command = [ACCELERATE, "launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--num_machines",
               "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--fsdp_cpu_ram_efficient_loading", "false",
               "--main_process_port", str(free_port()), "-m", "train.stages", "csft", "--embedder",
               str(tiny_dir("llama")), "--dataset", str(data), "--k-core", "5", "--cache-dir", str(tmp_path / "c"),
               "--quiet", "--budget", "demo", "--steps", "2", "--batch-size", "4", "--history", "3",
               "--eval-every", "0", "--patience", "0", "--out", str(tmp_path / "out")]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "accelerate runs FSDP on GPUs only" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "out" / "stage.json").exists() and not (tmp_path / "out" / "log.jsonl").exists()
