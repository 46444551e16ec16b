"""Fixtures for the serving tests: tiny real exports, a python-flavour repository, a running Triton, and the tiny
gateway deployment of deployment.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.triton.repository import RepositoryOptions, write_repository
from serving.triton import TritonServer

HERE = Path(__file__).resolve().parent


def _load(name: str, file: str):
    """A helper module of this folder, once per session under `name` (the tests import it under that name)."""
    import importlib.util
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _helpers():
    return _load("llmrec_tiny_exports", "tiny_exports.py")


@pytest.fixture(scope="session")
def deployment(planted_data, tmp_path_factory):
    return _load("llmrec_gateway_deployment", "deployment.py").build_deployment(
        tmp_path_factory.getbasetemp() / "llmrec-gateway-deployment", planted_data.num_items)


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    return _helpers().build_tiny_exports(tmp_path_factory.getbasetemp() / "llmrec-tiny-exports")


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    return list(_helpers().TEXTS)


@pytest.fixture(scope="session")
def python_repository(tiny_exports, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "model_repository"
    # one onnxruntime thread per instance: the test machine is shared
    write_repository(tiny_exports.embedder, tiny_exports.user_encoder, out,
                     RepositoryOptions(flavour="python", threads=1, max_queue_delay_us=20000))
    return out


@pytest.fixture(scope="session")
def triton(python_repository):
    """A real Triton serving the python-flavour repository; stopped (and checked gone) at the end."""
    server = TritonServer(python_repository, exit_timeout=5, startup_timeout=90)
    server.start()
    process = server._process
    try:
        yield server
    finally:
        server.stop()
        assert process.poll() is not None, "tritonserver still running after stop()"
