"""The Triton Inference Server process: find the bundled binary, start it on a model repository, stop it."""

from .server import TritonBundle, TritonError, TritonServer, check_repository, find_bundle, free_port

__all__ = ["TritonBundle", "TritonError", "TritonServer", "check_repository", "find_bundle", "free_port"]
