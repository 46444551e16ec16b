"""Thin adapter from the gateway's two model calls to Triton's gRPC API (tritonclient.grpc).

One threaded client, shared by the batch workers (its unary calls are
thread-safe). A batch larger than the model's `max_batch_size` (read from
Triton's model config once) is sent as several requests. Failures become
GatewayErrors: Triton unreachable or not ready -> UNAVAILABLE at once (the
channel does not wait for the server to come back), a call past its deadline
-> DEADLINE_EXCEEDED, anything else -> INTERNAL with the model named.
A Triton that stops and comes back is picked up again without a restart of
the gateway: the channel reconnects with a backoff capped at 1 s (CHANNEL_ARGS).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from llmrec.names import ATTENTION_MASK, ITEM_ENCODER, ITEM_VECTOR, ITEM_VECTORS, TEXT, USER_ENCODER, USER_VECTOR

from .errors import BackendUnavailable, DeadlineExceeded, GatewayError

logger = logging.getLogger("llmrec.gateway")

READY_TIMEOUT_S = 1.0
MAX_MESSAGE = 2**31 - 1  # tritonclient's own default
# gRPC's default reconnect backoff grows to 120 s: a Triton that came back would stay unused for up to two
# minutes. Capped at 1 s, the channel (poked by the health loop) reconnects within about a second of its return,
# while a Triton that is down still costs one refused connection attempt per second, not a busy loop.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),  # a failure is reported at once (UNAVAILABLE); the caller decides to retry
]


def _error(model: str, exc: InferenceServerException) -> GatewayError:
    status = str(exc.status() or "")
    if "UNAVAILABLE" in status or "unavailable" in str(exc.message()).lower():
        return BackendUnavailable(f"Triton is unavailable (model {model})")
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in str(exc.message()):
        return DeadlineExceeded(f"Triton did not answer before the deadline (model {model})")
    return GatewayError("INTERNAL", f"Triton failed on model {model} (see the gateway log)")


class TritonBackend:
    """`encode_users` / `encode_texts` on a Triton server at `url` (host:port of its gRPC endpoint)."""

    name = "triton"

    def __init__(self, url: str, user_model: str = USER_ENCODER, item_model: str = ITEM_ENCODER,
                 timeout_s: float = 10.0) -> None:
        self.url = url
        self.user_model = user_model
        self.item_model = item_model
        self.timeout_s = timeout_s
        self.client = grpcclient.InferenceServerClient(url=url, channel_args=list(CHANNEL_ARGS))
        self._max_batch: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Server and both models ready (a short timeout: this runs in the health loop)."""
        try:
            return bool(self.client.is_server_ready(client_timeout=READY_TIMEOUT_S)
                        and self.client.is_model_ready(self.user_model, client_timeout=READY_TIMEOUT_S)
                        and self.client.is_model_ready(self.item_model, client_timeout=READY_TIMEOUT_S))
        except InferenceServerException:
            return False

    def max_batch_size(self, model: str) -> int:
        """The model's max_batch_size from Triton (0 = no batching: one row per request is not assumed; use 1)."""
        with self._lock:
            if model not in self._max_batch:
                try:
                    config = self.client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)
                except InferenceServerException as exc:
                    raise _error(model, exc) from None
                self._max_batch[model] = max(1, int(config.get("config", {}).get("max_batch_size", 0) or 0))
            return self._max_batch[model]

    def _infer(self, model: str, inputs: list, output: str, timeout_s: float | None) -> np.ndarray:
        timeout = self.timeout_s if timeout_s is None else max(0.001, min(self.timeout_s, timeout_s))
        try:
            result = self.client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(output)],
                                       client_timeout=timeout)
        except InferenceServerException as exc:
            error = _error(model, exc)
            logger.warning("triton_call_failed", extra={"model": model, "code": error.code, "status": str(exc.status()),
                                                        "error": str(exc.message())[:500]})
            raise error from None
        return np.asarray(result.as_numpy(output), dtype=np.float32)

    def encode_users(self, item_vectors: np.ndarray, attention_mask: np.ndarray,
                     timeout_s: float | None = None) -> np.ndarray:
        step = self.max_batch_size(self.user_model)
        parts = []
        for start in range(0, len(item_vectors), step):
            vectors = np.ascontiguousarray(item_vectors[start:start + step], dtype=np.float32)
            mask = np.ascontiguousarray(attention_mask[start:start + step], dtype=np.int64)
            inputs = [grpcclient.InferInput(ITEM_VECTORS, list(vectors.shape), "FP32"),
                      grpcclient.InferInput(ATTENTION_MASK, list(mask.shape), "INT64")]
            inputs[0].set_data_from_numpy(vectors)
            inputs[1].set_data_from_numpy(mask)
            parts.append(self._infer(self.user_model, inputs, USER_VECTOR, timeout_s))
        return np.concatenate(parts) if parts else np.zeros((0, item_vectors.shape[-1]), np.float32)

    def encode_texts(self, texts: Sequence[str], timeout_s: float | None = None) -> np.ndarray:
        step = self.max_batch_size(self.item_model)
        parts = []
        for start in range(0, len(texts), step):
            chunk = np.array([t.encode("utf-8") for t in texts[start:start + step]], dtype=np.object_).reshape(-1, 1)
            text = grpcclient.InferInput(TEXT, list(chunk.shape), "BYTES")
            text.set_data_from_numpy(chunk)
            parts.append(self._infer(self.item_model, [text], ITEM_VECTOR, timeout_s))
        return np.concatenate(parts)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a broken channel must not mask the reason for shutting down
            pass
