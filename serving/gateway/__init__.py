"""The gRPC recommendation gateway (`python -m serving gateway --config serving.yaml`).

One module per concern, as in text-embeddings-inference:
  ../proto/llmrec/v2/recommend.proto   the protocol (and its generated stubs)
  config.py       dataclass config = the YAML keys
  service.py      the Recommender service on the wire: requests parsed, every field checked (the refusal
                  naming the field and its limit), the pipeline called, answers built
  pipeline.py     the operators: history -> user vector -> top-k -> titles; texts -> vectors -> catalogue;
                  and the bounded coalescing queue they run on (one model call / index search per batch)
  backends.py     the model runtimes' interface, and the in-process onnxruntime backend
  triton_client.py the Triton adapter (KServe v2 gRPC, tritonclient's generated stub)
  server.py       the process: catalogue, backend, gRPC server, health, reflection, TLS; Gateway start/stop
  metrics.py      Prometheus metrics on their own port
  auth.py         optional bearer token
  cli.py          the `gateway` subcommand
"""

from __future__ import annotations

import importlib
from typing import Any

# imported on first use, so `python -m serving client` does not load FAISS and the server
_EXPORTS = {"ConfigError": ".config", "GatewayConfig": ".config", "config_from_dict": ".config",
            "load_config": ".config", "GatewayError": ".errors", "Recommendation": ".pipeline",
            "RecommendationPipeline": ".pipeline", "SERVICE_NAME": ".service", "Gateway": ".server",
            "StartupError": ".server"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
