"""What every benchmark result records (the machine, the versions, the command), and timing helpers shared by
the benchmarks."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "transformers", "numpy", "onnxruntime", "optimum", "faiss-cpu", "grpcio", "tritonclient")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": git_commit(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
                    "gpu": gpu, "platform": platform.platform(), "python": platform.python_version()},
        "versions": versions,
    }


SERVED = Path("runs/demo/served.json")  # the model `make demo` serves (train/select.py)


def served(field: str) -> str:
    """A field ("embedder", "srs") of the model `make demo` serves; SystemExit naming the command when missing."""
    path = RESULTS.parents[1] / SERVED
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `make demo` first, or give --embedder and --srs")
    return str(json.loads(path.read_text())[field])


def write_result(name: str, payload: dict, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2) + "\n")
    return path


SCAN_BATCHES = (1, 2, 4, 8)


def per_call_scan(run: Callable[[list], object], ids: list, repeats: int = 3) -> dict:
    """Median ms per call of `run` at each of SCAN_BATCHES on the first 8 of `ids`, and the intercept and slope of
    a least-squares line through them: the cost of a call that does not grow with the batch, and the cost per
    item."""
    import numpy as np

    sample = ids[:max(SCAN_BATCHES)]
    ms = {}
    for b in SCAN_BATCHES:
        run(sample[:b])
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(sample[:b])
            times.append(time.perf_counter() - t)
        ms[b] = round(1000 * statistics.median(times), 2)
    slope, intercept = np.polyfit(np.array(SCAN_BATCHES, dtype=float), np.array([ms[b] for b in SCAN_BATCHES]), 1)
    return {"ms_per_call": {str(b): v for b, v in ms.items()}, "fixed_ms": round(float(intercept), 1),
            "ms_per_item": round(float(slope), 2)}
