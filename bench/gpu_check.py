"""The GPU check: what the training side does on one CUDA GPU, measured in one short run (<= 8 minutes on an H200).

    python bench/gpu_check.py --prepare   # here (CPU): SmolLM2's config + tokenizer, ML-100k -> .gpu_check/
    python bench/gpu_check.py             # on the GPU machine (the checkout with .gpu_check/ carried)

Measures, each part on its own (a failing part is recorded with its error, the others still run):
  - item-embedding throughput of the embedder (bidirectional + mean, the attribute item text, every ML-100k item) at
    batch 64 and batch 1: CUDA bf16, CUDA fp32, and the CPU fp32 of the same machine, side by side;
  - CUDA/CPU parity of those embeddings: cosine per item and top-10 neighbour overlap against CPU fp32;
  - one short run (4 optimizer steps, the cpu-small budget's batch) of each embedder stage on CUDA: seconds per
    step after the first; and CSFT under FSDP stopped with a sharded checkpoint and resumed (accelerate runs
    FSDP on GPUs only, so this is where that path runs);
  - one SASRec epoch on ML-100k (the bench/srs_baselines.py setting) on CUDA and on the CPU.
Writes bench/results/gpu_check.json (machine, versions and command included). Without CUDA every CUDA part is
recorded as skipped, so the script is tested on CPU (tests/test_gpu_check.py, with a tiny model).

The GPU machine has no network and nothing installable, and at most 64 MiB travel with the checkout: SmolLM2's
weights (540 MB in fp32) do not. `--prepare` writes the model's config and tokenizer; without weights the check
builds the same architecture with random weights (seed 0), which costs the same FLOPs and memory traffic: throughput
and step times hold, parity is measured on those weights, quality is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / ".gpu_check"
STAGES = ("csft", "mntp", "item-contrastive", "co-occurrence", "scft")
STAGE_STEPS = 4
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                   "generation_config.json")
ITEM_TEXT = "attributes"


# ------------------------------------------------------------------------------------------------ preparation
def prepare(out: Path) -> None:
    """SmolLM2's config and tokenizer (no weights) and the ML-100k atomic files, for the GPU machine."""
    from train.data.sources import movielens_100k_dir
    from train.embedder.base import resolve_base

    model = resolve_base("smollm2")
    (out / "smollm2").mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model / name).is_file():
            shutil.copy2(model / name, out / "smollm2" / name)
    (out / "ml-100k").mkdir(parents=True, exist_ok=True)
    for path in movielens_100k_dir().glob("ml-100k.*"):
        if path.suffix in (".inter", ".item"):  # interactions and titles; not the knowledge graph
            shutil.copy2(path, out / "ml-100k" / path.name)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MiB): carry it with the checkout")


def model_folder(source: Path, work: Path) -> tuple[Path, str]:
    """`source` as a loadable HF folder: as is when it holds weights, else its architecture with random weights."""
    if any(source.glob("*.safetensors")) or any(source.glob("*.bin")):
        return source, "as given"
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(source), local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = work / "random-model"
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and name != "config.json":
            shutil.copy2(source / name, folder / name)
    return folder, f"random (seed 0) with {source.name}'s architecture: its weights do not travel"


# ------------------------------------------------------------------------------------------------ parts
def part(results: dict, name: str, fn: Callable[[], dict], needs_cuda: bool = False) -> None:
    """Run one part into results[name]; its failure is recorded, never fatal."""
    if needs_cuda and not torch.cuda.is_available():
        results[name] = {"status": "skipped", "reason": "no CUDA device"}
        return
    t0 = time.perf_counter()
    try:
        results[name] = {"status": "ok", **fn()}
    except Exception as error:  # noqa: BLE001 - a check records what broke and goes on
        results[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                         "trace": traceback.format_exc(limit=6)[-3000:]}
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"{name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def embed_speed(folder: Path, texts: list[str], device: str, dtype: torch.dtype,
                batch1: int) -> tuple[dict, np.ndarray]:
    from train.embedder import EmbedderConfig, ItemEmbedder

    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(folder)), device=device, dtype=dtype)
    dev = torch.device(device)
    embedder.encode(texts[:64], batch_size=64, progress=False)  # warm-up (kernels, allocator)
    synchronize(dev)
    t0 = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=64, progress=False)
    synchronize(dev)
    b64 = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedder.encode(texts[:batch1], batch_size=1, progress=False)
    synchronize(dev)
    b1 = time.perf_counter() - t0
    row = {"device": device, "dtype": str(dtype).removeprefix("torch."), "items": len(texts),
           "b64_items_per_s": round(len(texts) / b64, 1), "b1_items_per_s": round(batch1 / b1, 1),
           "b1_ms_per_item": round(1000 * b1 / batch1, 2)}
    if dev.type == "cuda":
        row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    del embedder
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row, vectors


def parity(reference: np.ndarray, other: np.ndarray, k: int = 10) -> dict:
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    cos = (a * b).sum(1)

    def neighbours(unit: np.ndarray) -> np.ndarray:
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    na, nb = neighbours(a), neighbours(b)
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)])
    return {"min_cosine": round(float(cos.min()), 6), "mean_cosine": round(float(cos.mean()), 6),
            f"top{k}_overlap": round(float(overlap), 4)}


def stage_step(name: str, folder: Path, data, work: Path) -> dict:
    from train.stages.loop import run_stage
    from train.stages.pipeline import make_stage

    stage = make_stage(name, "paper", "cpu-small", steps=STAGE_STEPS, epochs=0.0, log_every=1, save_every=1000,
                       eval_every=0, patience=0)
    out = work / "stages" / name
    result = run_stage(stage, str(folder), data, out, progress=False)
    steps = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    after_first = [s["seconds"] for s in steps if s["step"] > 1]
    return {"steps": result["steps"], "effective_batch": result["effective_batch"],
            "first_step_s": round(steps[0]["seconds"], 3),
            "step_s_after_first": round(float(np.mean(after_first)), 3) if after_first else None,
            "final_loss": result.get("final_loss"), "wall_seconds": result.get("wall_seconds")}


def fsdp_resume(folder: Path, data_source: str, work: Path) -> dict:
    """CSFT under FSDP (one process: FULL_SHARD over a world of 1 still takes the sharded-checkpoint path):
    stopped after 2 of 4 steps with a sharded checkpoint, then resumed to the end."""
    import subprocess

    out = work / "fsdp-csft"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
               "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
               "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap",
               "LlamaDecoderLayer,Qwen2DecoderLayer", "--fsdp_state_dict_type", "SHARDED_STATE_DICT",
               "-m", "train.stages", "csft", "--embedder", str(folder), "--dataset", data_source,
               "--cache-dir", str(work / "data-cache"), "--budget", "cpu-small", "--steps", str(STAGE_STEPS),
               "--eval-every", "0", "--patience", "0",
               "--quiet", "--out", str(out)]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    first = subprocess.run([*command, "--stop-after", "2"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=300)
    if first.returncode:
        raise RuntimeError(first.stderr[-2000:])
    sharded = (out / "checkpoint" / "sharded").is_dir()
    second = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    if second.returncode:
        raise RuntimeError(second.stderr[-2000:])
    stage = json.loads((out / "stage.json").read_text())
    return {"sharded_checkpoint": sharded, "steps": stage["steps"], "final_loss": stage["final_loss"],
            "embedder_saved": (out / "embedder" / "config.json").is_file()}


def srs_epoch(data, device: str, work: Path) -> dict:
    from bench.srs_baselines import PROFILE
    from train.srs.config import SRSConfig
    from train.srs.trainer import train_one_seed

    t0 = time.perf_counter()
    result = train_one_seed(data, SRSConfig(**PROFILE, max_epochs=1), seed=2024, out_dir=work / f"srs-{device}",
                            progress=False, device=device)
    return {"device": device, "seconds": round(time.perf_counter() - t0, 2),
            "train_seconds": round(result.train_seconds, 2), "epochs": result.epochs_run,
            "valid_recall@10": result.valid.get("full/recall@10")}


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true", help=f"write {ASSETS.name}/ here and stop")
    p.add_argument("--model", default=str(ASSETS / "smollm2"), help="HF folder (weights optional)")
    p.add_argument("--data", default=str(ASSETS / "ml-100k"), help="RecBole atomic folder or built-in name")
    p.add_argument("--batch1-items", type=int, default=64, help="items embedded one at a time")
    p.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    p.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    args = p.parse_args()
    if args.prepare:
        prepare(ASSETS)
        return
    from llmrec.itemtext import ItemText
    from train.data import load_dataset
    from train.data.text import recipe_texts

    results: dict = {"cuda": torch.cuda.is_available(),
                     "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="llmrec-gpu-check-") as tmp:
        work = Path(tmp)
        folder, weights = model_folder(Path(args.model), work)
        results["model"] = {"source": args.model, "weights": weights}
        data = load_dataset(args.data, cache_dir=work / "data-cache")
        texts = recipe_texts(data, ItemText(ITEM_TEXT))[1:]
        results["data"] = {"source": args.data, "users": data.num_users, "items": data.num_items,
                           "item_text": ITEM_TEXT}
        vectors: dict[str, np.ndarray] = {}

        def speed(device: str, dtype: torch.dtype) -> Callable[[], dict]:
            def run() -> dict:
                row, vectors[f"{device}-{dtype}"] = embed_speed(folder, texts, device, dtype, args.batch1_items)
                return row
            return run

        part(results, "embed_cpu_fp32", speed("cpu", torch.float32))
        part(results, "embed_cuda_bf16", speed("cuda", torch.bfloat16), needs_cuda=True)
        part(results, "embed_cuda_fp32", speed("cuda", torch.float32), needs_cuda=True)
        reference = vectors.get(f"cpu-{torch.float32}")
        for name in ("cuda-torch.bfloat16", "cuda-torch.float32"):
            key = f"parity_{name.replace('torch.', '').replace('-', '_')}_vs_cpu_fp32"
            if reference is None or name not in vectors:
                results[key] = {"status": "skipped", "reason": "no CUDA device" if not torch.cuda.is_available()
                                else "an embedding part failed"}
            else:
                part(results, key, lambda n=name: parity(reference, vectors[n]))
        for stage in args.stages:
            part(results, f"stage_{stage}", lambda s=stage: stage_step(s, folder, data, work), needs_cuda=True)
        part(results, "stage_fsdp_resume", lambda: fsdp_resume(folder, args.data, work), needs_cuda=True)
        part(results, "srs_epoch_cuda", lambda: srs_epoch(data, "cuda", work), needs_cuda=True)
        part(results, "srs_epoch_cpu", lambda: srs_epoch(data, "cpu", work))
    ratio = {}
    if results.get("embed_cuda_bf16", {}).get("status") == "ok" and results["embed_cpu_fp32"]["status"] == "ok":
        ratio["embed_b64_cuda_bf16_over_cpu_fp32"] = round(
            results["embed_cuda_bf16"]["b64_items_per_s"] / results["embed_cpu_fp32"]["b64_items_per_s"], 1)
    results["ratios"] = ratio
    path = write_result(Path(args.out).stem, results, Path(args.out).parent)
    print(json.dumps({k: v.get("status") if isinstance(v, dict) and "status" in v else v for k, v in results.items()},
                     indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
