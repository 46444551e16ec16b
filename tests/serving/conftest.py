"""Fixtures for the serving tests: tiny real exports, a python-flavour repository, a running Triton."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.triton.repository import RepositoryOptions, write_repository
from serving.triton import TritonServer

HERE = Path(__file__).resolve().parent


def _helpers():
    import importlib.util
    import sys

    name = "llmrec_tiny_exports"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "tiny_exports.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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
