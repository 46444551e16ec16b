"""Prometheus metrics of the gateway, served on their own port (never on the gRPC port).

Each gateway owns a registry (so several gateways in one process, as in tests,
do not collide). Label values come from a fixed set only (the service's own
method names, status codes, queue/model/operation names of the code), never
from what a caller sends: a call to an invented method counts as `unknown`, so
no caller can grow the registry. Exposed (prefix `llmrec_gateway_`):
  requests_total{method, code}        calls answered, by gRPC method (or "unknown") and status code
  request_seconds{method}             latency histogram of answered calls
  batch_size{queue}                   requests per coalesced batch ("recommend", "embed")
  batch_wait_seconds{queue}           time the oldest request of a batch waited in the queue
  queue_depth{queue}                  requests waiting now
  triton_seconds{model}               model call latency (Triton or in-process onnxruntime)
  index_seconds{operation}            index search / vectors / upsert / delete latency
  request_stage_seconds_total{queue, stage}
                                      stage time as the requests felt it: a batch's model call ("model")
                                      or index search ("index") counted once per request in the batch, so
                                      dividing by the requests gives the mean time a call spent in the stage
                                      (triton_seconds / index_seconds count each batch once: a cost, not a
                                      latency share)
  index_items                         items in the index
  ready                               1 when Triton and the index are ready (the health status)
  triton_exits_total                  deaths of the Triton this gateway started (crash, kill -9, OOM)
  triton_restarts_total               restarts of that Triton that brought it back to ready
  triton_restart_failures_total       restart attempts that failed (each counts against the budget)
  triton_restart_gave_up              1 once the restart budget is spent: Triton stays down, NOT_SERVING
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

UNKNOWN_METHOD = "unknown"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def method_label(path: str, known: frozenset[str]) -> str:
    """The label of a call's gRPC method path ("/llmrec.v2.Recommender/Recommend" -> "Recommend"): its name when
    it is one of `known`, else UNKNOWN_METHOD."""
    name = path.rsplit("/", 1)[-1]
    return name if name in known else UNKNOWN_METHOD


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmrec_gateway_requests", "Calls answered, by method and status code",
                                ["method", "code"], registry=r)
        self.latency = Histogram("llmrec_gateway_request_seconds", "Latency of answered calls", ["method"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("llmrec_gateway_batch_size", "Requests per coalesced batch", ["queue"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_wait = Histogram("llmrec_gateway_batch_wait_seconds", "Queue wait of a batch's oldest request",
                                    ["queue"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("llmrec_gateway_queue_depth", "Requests waiting in a batching queue", ["queue"],
                                 registry=r)
        self.model_seconds = Histogram("llmrec_gateway_triton_seconds", "Model call latency (one batched call)",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.index_seconds = Histogram("llmrec_gateway_index_seconds", "Index operation latency", ["operation"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.request_stage = Counter("llmrec_gateway_request_stage_seconds",
                                     "Batched stage time summed over the requests of each batch",
                                     ["queue", "stage"], registry=r)
        self.index_items = Gauge("llmrec_gateway_index_items", "Items in the index", registry=r)
        self.ready = Gauge("llmrec_gateway_ready", "1 when Triton and the index are ready", registry=r)
        self.triton_exits = Counter("llmrec_gateway_triton_exits",
                                    "Unexpected exits of the Triton started by this gateway", registry=r)
        self.triton_restarts = Counter("llmrec_gateway_triton_restarts",
                                       "Restarts of the managed Triton that brought it back to ready", registry=r)
        self.triton_restart_failures = Counter("llmrec_gateway_triton_restart_failures",
                                               "Restart attempts of the managed Triton that failed", registry=r)
        self.triton_gave_up = Gauge("llmrec_gateway_triton_restart_gave_up",
                                    "1 once the managed Triton's restart budget is spent (it stays down)",
                                    registry=r)
        self._http = None

    def track_queue_depth(self, queue: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(queue).set_function(depth)

    def serve(self, host: str, port: int, certfile: str | None = None, keyfile: str | None = None,
              client_cafile: str | None = None) -> int:
        """Start the /metrics endpoint (HTTPS with `certfile` and `keyfile`, client certificates of
        `client_cafile` required when given); returns the bound port (a free one when `port` is 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry, certfile=certfile,
                                            keyfile=keyfile, client_cafile=client_cafile,
                                            client_auth_required=client_cafile is not None)
        self._http = server
        return int(server.server_address[1])

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def text(self) -> str:
        return generate_latest(self.registry).decode("utf-8")
