"""Resumable training checkpoints without pickle.

Layout of `<out>/checkpoint/` (written into a temporary sibling and renamed into place):
  trainable.safetensors  the trainable parameters by their `ItemEmbedder.named_parameters()` name
                         (LoRA adapters, or every weight when fully fine-tuned)
  optimizer.safetensors  every tensor of the optimizer state, key "state.<param index>.<name>"
                         (AdamW: step, exp_avg, exp_avg_sq)
  best.safetensors       with early stopping: the trainable parameters of the best evaluation so far
  state.json             step, config, seeds, the run's identity (stage, input embedder, dataset key),
                         last loss, the optimizer's param_groups and non-tensor state, the scheduler state
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmrec.files import replace_folder, write_json_atomic

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
SHARDED = "sharded"  # an FSDP run's checkpoint: accelerate's save_state folder (every process writes its shard)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a JSON checkpoint")


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = _jsonable(value)
    return tensors, {"param_groups": _jsonable(state_dict["param_groups"]), "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """A LambdaLR state without its (unpicklable, rebuilt on resume) lambdas."""
    state = dict(scheduler.state_dict())
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))
    return _jsonable(state)


def save_training_checkpoint(folder: Path, trainable: dict[str, torch.Tensor], optimizer: Any, scheduler: Any,
                             state: dict[str, Any], extra: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write the checkpoint; `extra` maps further safetensors file names to tensors (e.g. the best weights)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / TRAINABLE))
        tensors, rest = flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / OPTIMIZER))
        for name, extra_tensors in (extra or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}, str(tmp / name))
        full = {**state, "optimizer": rest, "scheduler": scheduler_state(scheduler)}
        write_json_atomic(tmp / STATE, full)
        tmp.chmod(0o755)
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_state(folder: Path) -> dict[str, Any] | None:
    """`state.json` of a complete checkpoint (plain or FSDP-sharded), or None when there is none."""
    plain = all((folder / name).is_file() for name in (TRAINABLE, OPTIMIZER))
    if not (folder / STATE).is_file() or not (plain or (folder / SHARDED).is_dir()):
        return None
    return json.loads((folder / STATE).read_text())


def save_sharded_checkpoint(folder: Path, accelerator: Any, scheduler: Any, state: dict[str, Any]) -> Path:
    """An FSDP checkpoint: every process saves its shard of the model and optimizer through accelerate's sharded
    state dict (no full gather) into a folder beside `folder`, which the main process completes with state.json
    (step, seeds, scheduler) and renames into place. Call it on every process."""
    staging = folder.with_name(f".{folder.name}-next")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging / SHARDED))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(staging / STATE, {**state, "scheduler": scheduler_state(scheduler)})
        staging.chmod(0o755)
        replace_folder(staging, folder)
    accelerator.wait_for_everyone()
    return folder


def load_sharded_checkpoint(folder: Path, accelerator: Any, scheduler: Any) -> dict[str, Any]:
    """Restore an FSDP checkpoint on every process (its shard); returns state.json."""
    state = read_state(folder)
    if state is None or not (folder / SHARDED).is_dir():
        raise FileNotFoundError(f"{folder} is not a complete FSDP training checkpoint")
    accelerator.load_state(str(folder / SHARDED))
    scheduler.load_state_dict(dict(state["scheduler"]))
    return state


def load_training_checkpoint(folder: Path, parameters: dict[str, torch.nn.Parameter], optimizer: Any,
                             scheduler: Any) -> dict[str, Any]:
    """Restore weights into `parameters` (name -> trainable parameter), the optimizer and scheduler; returns
    state.json."""
    state = read_state(folder)
    if state is None:
        raise FileNotFoundError(f"{folder} is not a complete training checkpoint")
    weights = load_file(str(folder / TRAINABLE))
    missing, unknown = sorted(set(parameters) - set(weights)), sorted(set(weights) - set(parameters))
    if missing or unknown:
        raise ValueError(f"{folder}: checkpoint weights do not match the trainable parameters "
                         f"(missing {missing[:3]}, unexpected {unknown[:3]})")
    with torch.no_grad():
        for name, param in parameters.items():
            param.copy_(weights[name].to(param.dtype))
    device = next(iter(parameters.values())).device
    tensors = {k: v.to(device) if not k.endswith(".step") else v for k, v in load_file(str(folder / OPTIMIZER)).items()}
    optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
    scheduler.load_state_dict(dict(state["scheduler"]))
    return state
