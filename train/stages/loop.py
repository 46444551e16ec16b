"""The training loop every embedder stage runs: resumable, logged, the same code with or without `accelerate launch`.

A stage (csft.py, mntp.py, contrastive.py) supplies samples, a collate
function and a loss; this loop does the rest:
  - AdamW, linear warm-up then linear decay (the HF Trainer's default schedule, over `steps`
    or over `epochs` passes: StageConfig.schedule), gradient accumulation up to the effective
    batch, gradient clipping, a tqdm bar;
  - random batches (or length-grouped ones, sampling.py), each a pure function of (seed, index);
  - a held-out loss (the stage's `evaluate`) every `eval_every` steps; with `patience`, training
    stops after that many evaluations without a lower loss and the best weights are kept;
  - torch's RNG re-seeded from (seed, step, process) before every step, so dropout and
    masking do not depend on what ran before: a resumed run equals an uninterrupted one;
  - `<out>/log.jsonl`: one JSON line per logging step (step, loss, lr, seconds);
  - `<out>/checkpoint/` (see checkpoint.py) every `save_every` steps and when stopped early;
    a re-run with the same out folder, stage, config, input and dataset resumes from it,
    anything else is refused (StageError);
  - at the end `<out>/embedder/` (`ItemEmbedder.save(merge=True)`) and `<out>/stage.json`;
    the checkpoint is then deleted (stage.json marks the stage finished; a re-run skips it).

Distributed: `accelerate.Accelerator` prepares the model and optimizer, so `accelerate launch
--config_file train/accelerate/ddp.yaml -m train.stages ...` runs data-parallel (process p takes
every p-th micro-batch); files are written by the main process only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from llmrec.files import write_json_atomic

from ..data.dataset import SequenceData
from ..embedder import ItemEmbedder
from .checkpoint import (
    SHARDED,
    load_sharded_checkpoint,
    load_training_checkpoint,
    read_state,
    save_sharded_checkpoint,
    save_training_checkpoint,
)
from .common import StageError, input_identity, load_input_embedder, prepare_trainable, trainable_parameters
from .config import StageConfig
from .sampling import LengthGroupedBatches

BEST = "best.safetensors"  # in the checkpoint folder: the trainable weights of the best evaluation

logger = logging.getLogger("llmrec.stages")

LOG_FILE = "log.jsonl"
STAGE_FILE = "stage.json"
CHECKPOINT_DIR = "checkpoint"
EMBEDDER_DIR = "embedder"
OUT_MARKERS = (LOG_FILE, STAGE_FILE, CHECKPOINT_DIR, EMBEDDER_DIR)  # what a stage's out folder holds


class Stage(Protocol):
    """What a training stage provides to `run_stage`."""

    name: str
    config: StageConfig

    def setup(self, embedder: ItemEmbedder, data: SequenceData) -> None:
        """Build the samples (after the embedder exists: tokenisation) and switch the embedder to the stage's mode."""

    def lengths(self) -> list[int]:
        """A length per sample (tokens or characters), for length-grouped batches."""

    def collate(self, indices: np.ndarray, seed: list[int]) -> dict[str, torch.Tensor]:
        """The CPU tensors of one micro-batch; `seed` seeds any randomness in it (masking)."""

    def loss(self, embedder: ItemEmbedder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of one micro-batch."""

    def finish(self, embedder: ItemEmbedder) -> None:
        """Undo training-only changes (dropout, attention mode) before the embedder is saved."""

    def describe(self) -> dict[str, Any]:
        """Facts for stage.json (sample counts, mask token, ...)."""

    def evaluate(self, embedder: ItemEmbedder) -> float | None:
        """Loss on the stage's held-out samples (None: the stage holds none out)."""


class _StageModule(torch.nn.Module):
    """Puts the stage's loss in `forward`, so DDP/FSDP wrappers see the whole computation."""

    def __init__(self, embedder: ItemEmbedder, stage: Stage) -> None:
        super().__init__()
        self.embedder = embedder
        self.stage = stage

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.stage.loss(self.embedder, batch)


def final_embedder(accelerator: Any, module: torch.nn.Module, stage: Stage, source: str | Path, data: SequenceData,
                   config: StageConfig, cache_dir: str | Path | None) -> ItemEmbedder:
    """Under FSDP: the trained weights gathered into one full state dict (a collective: every process calls it)
    and loaded, on the main process only, into a fresh embedder of the same shape on the CPU, which is what gets
    saved. The other processes return their (sharded, unsaved) embedder."""
    full = accelerator.get_state_dict(module)  # full tensors on the main process
    if not accelerator.is_main_process:
        return accelerator.unwrap_model(module).embedder
    embedder = load_input_embedder(source, device="cpu", cache_dir=cache_dir)
    prepare_trainable(embedder, config)
    stage.setup(embedder, data)  # the stage's own trainable modules (e.g. SCFT's temperature)
    weights = {k.removeprefix("embedder."): v for k, v in full.items() if k.startswith("embedder.")}
    missing, unexpected = embedder.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "lora_" in k]:
        raise StageError(f"FSDP state dict does not fit the embedder (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    return embedder


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """LR multiplier of optimizer step s (0-based), as transformers' get_linear_schedule_with_warmup: s/warmup
    during warm-up, then linear decay to 0 at `total`."""
    def factor(s: int) -> float:
        if s < warmup:
            return s / warmup
        return max(0.0, (total - s) / max(1, total - warmup))
    return factor


def step_seed(seed: int, step: int, process: int) -> int:
    return int(np.random.default_rng([seed, step, process]).integers(2**62))


def identity(stage: Stage, source: str | Path, data: SequenceData) -> dict[str, Any]:
    return {"stage": stage.name, "config": stage.config.to_dict(), "input_embedder": input_identity(source),
            "dataset": {"name": data.name, "key": data.manifest.get("key")}}


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    out = []
    for key in ("stage", "input_embedder", "dataset"):
        if found.get(key) != expected[key]:
            out.append(f"{key} {found.get(key)!r} != {expected[key]!r}")
    old, new = found.get("config", {}), expected["config"]
    out += [f"config.{k} {old.get(k)!r} != {new.get(k)!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out


def finished(out: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """stage.json when `out` holds this exact run, finished; StageError if it holds another run."""
    path = out / STAGE_FILE
    if not path.is_file() or not (out / EMBEDDER_DIR / "config.json").is_file():
        return None
    done = json.loads(path.read_text())
    diff = _differences(expected, done)
    if diff:
        raise StageError(f"{out} already holds a finished {done.get('stage')} run with other settings "
                         f"({'; '.join(diff[:4])}); use another --out or delete it")
    return done


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint being resumed (they are trained again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:  # a line cut short by a crash
            continue
    path.write_text("".join(line + "\n" for line in keep))


def run_stage(stage: Stage, source: str | Path, data: SequenceData, out: str | Path, stop_after: int | None = None,
              progress: bool = True, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
              cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train `stage` starting from embedder `source` into `out`; returns stage.json's content.

    Resumes from `<out>/checkpoint/`; returns at once when `<out>` already holds this finished run.
    `stop_after` ends this call after that many steps with a checkpoint (status "stopped"), for tests
    and time-sliced runs.
    """
    from accelerate import Accelerator

    out = Path(out)
    config = stage.config
    expected = identity(stage, source, data)
    done = finished(out, expected)
    if done is not None:
        logger.info("stage_skipped", extra={"stage": stage.name, "out": str(out)})
        return {**done, "status": "skipped"}
    checkpoint_dir = out / CHECKPOINT_DIR
    resume = read_state(checkpoint_dir)
    if resume is not None:
        diff = _differences(expected, resume)
        if diff:
            raise StageError(f"{checkpoint_dir} is a checkpoint of another run ({'; '.join(diff[:4])}); "
                             "re-run with the same settings to resume, or use another --out / delete it")

    accelerator = Accelerator(cpu=device is not None and torch.device(device).type == "cpu")
    # FSDP: each process holds a shard, so checkpoints go through accelerate's sharded state dict and the final
    # embedder through a gathered full state dict (see save_sharded_checkpoint and `final_embedder`)
    fsdp = accelerator.distributed_type.name == "FSDP"
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes or (os.environ.get("ACCELERATE_USE_FSDP") == "true" and not fsdp):
        raise StageError(f"launched as {launched} processes{' with FSDP' if not fsdp and launched > 1 else ''}, but "
                         f"accelerate runs this as {accelerator.num_processes} {accelerator.distributed_type.name} "
                         "process(es): accelerate runs FSDP on GPUs only (on the CPU use train/accelerate/ddp.yaml "
                         "with --device cpu); every process would train alone into the same folder")
    if resume is not None and fsdp != (checkpoint_dir / SHARDED).is_dir():
        raise StageError(f"{checkpoint_dir} was written {'without' if fsdp else 'under'} FSDP: resume it the way it "
                         "was started, or use another --out / delete it")
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)  # LoRA initialisation
    embedder = load_input_embedder(source, device=device or accelerator.device, dtype=dtype, cache_dir=cache_dir)
    prepare_trainable(embedder, config)
    stage.setup(embedder, data)
    batches = LengthGroupedBatches(stage.lengths(), config.batch_size, config.seed, config.bucket_batches)
    processes, rank = accelerator.num_processes, accelerator.process_index
    effective = config.effective_batch(processes)
    schedule_steps, total = config.schedule(len(stage.lengths()), processes)
    if config.patience and fsdp:
        raise StageError(f"{stage.name}: early stopping (patience > 0) keeps the best weights, which is not "
                         "supported under FSDP; set patience 0")
    params = trainable_parameters(embedder)
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(schedule_steps, config.warmup_steps))
    embedder.train()
    module, optimizer = accelerator.prepare(_StageModule(embedder, stage), optimizer)
    if fsdp:  # the wrapper replaced the parameters by their shards
        clipped = [p for p in module.parameters() if p.requires_grad]
    else:
        clipped = list(params.values())

    step, seconds, last_loss = 0, 0.0, float("nan")
    evals: list[dict[str, Any]] = []  # {"step", "loss"} of every evaluation
    best: dict[str, torch.Tensor] | None = None  # the trainable weights at the best evaluation (patience > 0)
    if resume is not None:
        if fsdp:
            state = load_sharded_checkpoint(checkpoint_dir, accelerator, scheduler)
        else:
            state = load_training_checkpoint(checkpoint_dir, params, optimizer, scheduler)
        step, seconds, last_loss = int(state["step"]), float(state["seconds"]), float(state["loss"])
        evals = list(state.get("evaluations", []))
        if (checkpoint_dir / BEST).is_file():
            best = load_file(str(checkpoint_dir / BEST))
        logger.info("stage_resumed", extra={"stage": stage.name, "step": step, "out": str(out)})
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(out / LOG_FILE, step)
    logger.info("stage_started", extra={"stage": stage.name, "out": str(out), "steps": total, "from_step": step,
                                        "samples": len(stage.lengths()), "effective_batch": effective,
                                        "trainable_parameters": sum(p.numel() for p in params.values()),
                                        "lora": config.lora, "processes": processes})

    def save_checkpoint() -> None:
        state = {**expected, "step": step, "loss": last_loss, "seconds": seconds + time.perf_counter() - t_run,
                 "evaluations": evals,
                 "seeds": {"seed": config.seed, "torch_seed_of_next_step": step_seed(config.seed, step, rank)}}
        if fsdp:
            save_sharded_checkpoint(checkpoint_dir, accelerator, scheduler, state)
            return
        if main:
            save_training_checkpoint(checkpoint_dir, params, optimizer, scheduler, state,
                                     extra={BEST: best} if best is not None else None)
        accelerator.wait_for_everyone()

    def evaluate() -> bool:
        """Evaluate the held-out loss, keep the best weights; True when patience has run out."""
        nonlocal best
        held_out = getattr(stage, "evaluate", None)
        loss = held_out(accelerator.unwrap_model(module).embedder) if held_out is not None else None
        if loss is None:
            return False
        loss = float(accelerator.reduce(torch.tensor(loss, device=accelerator.device), reduction="mean"))
        improved = all(loss < e["loss"] for e in evals)
        evals.append({"step": step, "loss": round(loss, 6)})
        if main:
            with open(out / LOG_FILE, "a") as f:
                f.write(json.dumps({"step": step, "eval_loss": round(loss, 6)}) + "\n")
        logger.info("eval", extra={"stage": stage.name, "step": step, "eval_loss": loss})
        if not config.patience:
            return False
        if improved:
            best = {k: p.detach().to("cpu", copy=True) for k, p in params.items()}
        since = len(evals) - 1 - min(range(len(evals)), key=lambda i: evals[i]["loss"])
        return since >= config.patience

    t_run = time.perf_counter()
    first = step
    window: list[float] = []
    bar = tqdm(total=total, initial=step, disable=not (progress and main), desc=stage.name, unit="step")
    try:
        while step < total:
            torch.manual_seed(step_seed(config.seed, step, rank))
            t_step = time.perf_counter()
            losses = []
            for micro in range(config.grad_accum):
                index = (step * config.grad_accum + micro) * processes + rank
                batch = stage.collate(batches.batch(index), [config.seed, index])
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                sync = micro == config.grad_accum - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(module):
                    loss = module(**batch)
                    accelerator.backward(loss / config.grad_accum)
                losses.append(loss.detach().float())
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(clipped, config.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = float(accelerator.reduce(torch.stack(losses).mean(), reduction="mean"))
            if not math.isfinite(last_loss):
                raise StageError(f"{stage.name}: loss is {last_loss} at step {step}; lower --lr or check the data")
            window.append(last_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if main and (step % config.log_every == 0 or step == total or step == first + 1):
                record = {"step": step, "loss": round(float(np.mean(window)), 6), "lr": lr,
                          "seconds": round(time.perf_counter() - t_step, 3),
                          "elapsed": round(seconds + time.perf_counter() - t_run, 3)}
                with open(out / LOG_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
                logger.info("train_step", extra={"stage": stage.name, **record})
                window = []
            if config.eval_every and (step % config.eval_every == 0 or step == total) and evaluate():
                logger.info("early_stop", extra={"stage": stage.name, "step": step})
                break
            stopping = stop_after is not None and step - first >= stop_after
            if step < total and (step % config.save_every == 0 or stopping):
                save_checkpoint()
                if stopping:
                    logger.info("stage_stopped", extra={"stage": stage.name, "step": step})
                    return {**expected, "status": "stopped", "steps": step, "final_loss": last_loss}
    finally:
        bar.close()

    if fsdp:
        embedder = final_embedder(accelerator, module, stage, source, data, config, cache_dir)
    else:
        embedder = accelerator.unwrap_model(module).embedder
    best_eval = min(evals, key=lambda e: e["loss"]) if evals else None
    if best is not None and best_eval is not None and best_eval["step"] != step:  # keep the best, as HF's
        with torch.no_grad():                                                     # load_best_model_at_end
            for name, value in best.items():
                params[name].copy_(value.to(params[name].device))
    embedder.eval()
    stage.finish(embedder)
    wall = seconds + time.perf_counter() - t_run
    result = {**expected, "status": "finished", "steps": step, "final_loss": last_loss,
              "wall_seconds": round(wall, 3), "load_seconds": round(t_run - t_start, 3),
              "samples": len(stage.lengths()), "effective_batch": effective, "processes": processes,
              "schedule_steps": schedule_steps, "evaluations": evals,
              "kept_step": best_eval["step"] if best is not None and best_eval is not None else step,
              **stage.describe(), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    if main:
        embedder.save(out / EMBEDDER_DIR, merge=True)
        write_json_atomic(out / STAGE_FILE, result)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    logger.info("stage_finished", extra={"stage": stage.name, "out": str(out), "steps": step, "final_loss": last_loss,
                                         "wall_seconds": round(wall, 3)})
    return result
