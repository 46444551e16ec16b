"""Fixtures for the reliability tests: the tiny real deployment of tests/serving, gateways in-process or as a
child process (for kill -9), all on free loopback ports and stopped by PID."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_FILE = ROOT / "tests" / "serving" / "deployment.py"


def deployment_module():
    """tests/serving/deployment.py under the name the serving tests give it (one copy per session)."""
    name = "llmrec_gateway_deployment"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEPLOYMENT_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def deployment(planted_data, tmp_path_factory):
    return deployment_module().build_deployment(tmp_path_factory.getbasetemp() / "llmrec-gateway-deployment",
                                                planted_data.num_items)


@pytest.fixture
def base(tmp_path) -> Path:
    """A 20-item, 8-d index snapshot (items "1".."20", titles "item <n>"): what the write-ahead log tests write
    over."""
    from serving.index import Item, ItemIndex, ItemStore

    rng = np.random.default_rng(0)
    index = ItemIndex(8, use_gpu=False)
    index.upsert(np.arange(1, 21), rng.standard_normal((20, 8)))
    folder = tmp_path / "index"
    index.save(folder, extra={"source": "test"}, store=ItemStore([Item(i, f"item {i}") for i in range(1, 21)]))
    return folder


def gateway_values(deployment, index: Path, **values) -> dict:
    """Config values of a gateway on the in-process onnxruntime backend, free ports, no metrics endpoint."""
    base = {"port": 0, "metrics_port": None, "backend": "onnxruntime", "model_repository": str(deployment.repository),
            "index": str(index), "health_interval_s": 0.2}
    return {**base, **values}


@pytest.fixture
def index_copy(deployment, tmp_path) -> Path:
    """A private copy of the deployment's index snapshot (persisting gateways write beside it)."""
    target = tmp_path / "index"
    shutil.copytree(deployment.index, target)
    return target


class GatewayProcess:
    """`python -m serving gateway` as a child process (so it can be killed with SIGKILL mid-write)."""

    def __init__(self, config: dict, folder: Path) -> None:
        self.path = folder / "serving.yaml"
        self.path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "serving", "gateway", "--config", str(self.path),
                                         "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            raise RuntimeError(f"gateway did not start: {self.process.stderr.read()}")
        self.ready = json.loads(line)
        self.address = self.ready["address"]

    def kill(self) -> None:
        """SIGKILL, no shutdown of any kind (a crash)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return self.process.returncode

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr and self.process.poll() is not None else ""


@pytest.fixture
def spawn_gateway(tmp_path):
    """A factory of GatewayProcess; every process it started is stopped (by its PID) at the end of the test."""
    started: list[GatewayProcess] = []

    def spawn(config: dict) -> GatewayProcess:
        folder = tmp_path / f"gateway-{len(started)}"
        folder.mkdir()
        gateway = GatewayProcess(config, folder)
        started.append(gateway)
        return gateway

    try:
        yield spawn
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def make_config(deployment):
    """gateway_values bound to the deployment: make_config(index, **values) -> dict."""
    return lambda index, **values: gateway_values(deployment, index, **values)
