"""The serving-load floors and the export bench's per-call scan, on hand-made numbers: the bars they bound are
read from these, so their arithmetic is checked here (the benchmarks themselves run in bench/, not in tests)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"llmrec_bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def row(mode: str, concurrency: int, p50: float, throughput: float, method: str = "Recommend") -> dict:
    return {"mode": mode, "method": method, "concurrency": concurrency, "calls": 100, "p50_ms": p50,
            "throughput": throughput, "index_backend": "faiss"}


def test_floors_add_the_echo_to_the_hosted_pipeline_and_cap_throughput_by_the_slower_bound():
    serving_load = load("serving_load")
    rows = [row("inproc-direct", 1, 2.0, 500.0), row("grpc-echo", 1, 0.5, 2000.0, "Echo"),
            row("inproc-triton", 1, 4.5, 220.0), row("grpc", 1, 6.0, 160.0),
            row("inproc-pipeline", 32, 40.0, 800.0), row("grpc-echo", 32, 20.0, 1500.0, "Echo"),
            row("inproc-triton", 32, 50.0, 600.0), row("grpc", 32, 90.0, 350.0)]
    latency, throughput = serving_load.floors(rows)
    assert latency["floor"] == pytest.approx(5.0) and latency["floor_ratio"] == pytest.approx(2.5)
    assert latency["parts"] == {"direct_p50_ms": 2.0, "on_triton_p50_ms": 4.5, "echo_p50_ms": 0.5}
    assert throughput["concurrency"] == 32 and throughput["floor"] == pytest.approx(600.0)  # Triton, not echo
    assert throughput["floor_ratio"] == pytest.approx(0.75) and throughput["bar_value"] == 0.7
    # without the hosted rows there is no floor to state
    assert serving_load.floors([r for r in rows if r["mode"] != "inproc-triton"]) == []


def test_per_call_scan_separates_the_fixed_cost_from_the_cost_per_item():
    common = load("common")

    def run(batch):  # 20 ms per call plus 5 ms per item
        time.sleep(0.020 + 0.005 * len(batch))

    scan = common.per_call_scan(run, [[1, 2]] * 8, repeats=3)
    assert list(scan["ms_per_call"]) == ["1", "2", "4", "8"]
    assert scan["fixed_ms"] == pytest.approx(20.0, abs=4.0) and scan["ms_per_item"] == pytest.approx(5.0, abs=1.0)
