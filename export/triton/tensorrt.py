"""TensorRT engines (plans) for the native Triton flavour, built with `trtexec` on the GPU that serves them.

Two ways to run the exported graphs under TensorRT in Triton:
  * `--tensorrt`: the model stays ONNX (`platform: "onnxruntime_onnx"`) and onnxruntime's TensorRT execution
    provider builds the engine when the model loads, caching it (`trt_engine_cache_path`); nothing is built
    at export time, and a machine without TensorRT can write the repository;
  * `--tensorrt-plan`: the repository holds a serialized engine (`platform: "tensorrt_plan"`, `model.plan`)
    built here by trtexec with one optimisation profile over the dynamic axes. A plan belongs to the GPU
    model and TensorRT version it was built with, so this runs on the serving host or an identical one
    (NVIDIA's Triton container ships trtexec at /usr/src/tensorrt/bin/trtexec).

Both take the same profile: min / opt / max shape of every input, written in trtexec's `name:AxB` syntax,
which is also what onnxruntime's TensorRT provider reads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from export.onnx.artifact import ExportInputError, ExportValidationError

PLAN_FILE = "model.plan"
TRTEXEC_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec",)  # NVIDIA's containers
PRECISIONS = ("FP32", "FP16")

Shapes = dict[str, tuple[list[int], list[int], list[int]]]  # input name -> (min, opt, max) shape


def shape_list(shapes: Shapes, which: int) -> str:
    """`input_ids:1x1,attention_mask:1x1` for `which` = 0 (min), 1 (opt) or 2 (max)."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims[which])}" for name, dims in shapes.items())


def find_trtexec() -> str | None:
    found = shutil.which("trtexec")
    if found:
        return found
    return next((path for path in TRTEXEC_LOCATIONS if Path(path).is_file()), None)


def trtexec_command(trtexec: str, onnx: Path, plan: Path, shapes: Shapes, precision: str,
                    workspace_bytes: int) -> list[str]:
    """The build command: one profile covering every shape Triton's batcher can send."""
    if precision not in PRECISIONS:
        raise ExportInputError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r}")
    command = [trtexec, f"--onnx={onnx}", f"--saveEngine={plan}",
               f"--minShapes={shape_list(shapes, 0)}", f"--optShapes={shape_list(shapes, 1)}",
               f"--maxShapes={shape_list(shapes, 2)}",
               f"--memPoolSize=workspace:{max(1, workspace_bytes >> 20)}M", "--skipInference"]
    if precision == "FP16":
        command.append("--fp16")
    return command


def build_plan(onnx: Path, plan: Path, shapes: Shapes, precision: str = "FP16", workspace_bytes: int = 1 << 30,
               timeout_s: float = 3600.0) -> Path:
    """Build `plan` from `onnx` with trtexec; ExportInputError when TensorRT is not installed here,
    ExportValidationError (with trtexec's last lines) when the build fails."""
    trtexec = find_trtexec()
    if trtexec is None:
        raise ExportInputError(
            "--tensorrt-plan needs TensorRT's trtexec, found neither on PATH nor at "
            f"{', '.join(TRTEXEC_LOCATIONS)}: write the repository on the GPU host that serves it (e.g. inside "
            "NVIDIA's Triton container), or use --tensorrt, which builds the engine when Triton loads the model")
    plan.parent.mkdir(parents=True, exist_ok=True)
    command = trtexec_command(trtexec, onnx, plan, shapes, precision, workspace_bytes)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not plan.is_file() or plan.stat().st_size == 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ExportValidationError(f"trtexec could not build {plan} from {onnx} (exit {done.returncode}):\n{tail}")
    return plan
