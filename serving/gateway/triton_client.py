"""Thin adapter from the gateway's two model calls to Triton's gRPC API (the KServe v2 protocol).

One channel, shared by the batch workers (gRPC stubs are thread-safe). Requests are built directly as
`ModelInferRequest` messages with their tensors in `raw_input_contents` (tritonclient.grpc's generated stub):
tritonclient's `InferInput` objects cost ~0.2 ms of gateway CPU per call and add nothing for two fixed inputs.
A batch larger than the model's `max_batch_size` (read from Triton's model config once) is sent as several
requests. Failures become GatewayErrors: Triton unreachable or not ready -> UNAVAILABLE at once (the channel
does not wait for the server to come back), a call past its deadline -> DEADLINE_EXCEEDED, anything else ->
INTERNAL with the model named. A Triton that stops and comes back is picked up again without a restart of the
gateway: the channel reconnects with a backoff capped at 1 s (CHANNEL_ARGS).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as kserve
from tritonclient.grpc import service_pb2_grpc as kserve_grpc

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


def _error(model: str, exc: grpc.RpcError) -> GatewayError:
    code, detail = exc.code(), str(exc.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE or "unavailable" in detail.lower():
        return BackendUnavailable(f"Triton is unavailable (model {model})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"Triton did not answer before the deadline (model {model})")
    return GatewayError("INTERNAL", f"Triton failed on model {model} (see the gateway log)")


def _tensor(request: kserve.ModelInferRequest, name: str, datatype: str, shape: Sequence[int]) -> None:
    tensor = request.inputs.add()
    tensor.name = name
    tensor.datatype = datatype
    tensor.shape.extend(shape)


def _bytes_tensor(values: Sequence[str]) -> bytes:
    """Triton's BYTES serialisation: each element as a 4-byte little-endian length and its UTF-8 bytes."""
    parts = []
    for value in values:
        data = value.encode("utf-8")
        parts += [len(data).to_bytes(4, "little"), data]
    return b"".join(parts)


class TritonBackend:
    """`encode_users` / `encode_texts` on a Triton server at `url` (host:port of its gRPC endpoint)."""

    name = "triton"

    def __init__(self, url: str, user_model: str = USER_ENCODER, item_model: str = ITEM_ENCODER,
                 timeout_s: float = 10.0) -> None:
        self.url = url
        self.user_model = user_model
        self.item_model = item_model
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(url, options=list(CHANNEL_ARGS))
        self.stub = kserve_grpc.GRPCInferenceServiceStub(self.channel)
        self._max_batch: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Server and both models ready (a short timeout: this runs in the health loop)."""
        try:
            return bool(self.stub.ServerReady(kserve.ServerReadyRequest(), timeout=READY_TIMEOUT_S).ready
                        and all(self.stub.ModelReady(kserve.ModelReadyRequest(name=model),
                                                     timeout=READY_TIMEOUT_S).ready
                                for model in (self.user_model, self.item_model)))
        except grpc.RpcError:
            return False

    def max_batch_size(self, model: str) -> int:
        """The model's max_batch_size from Triton (0 = no batching: one row per request is not assumed; use 1)."""
        with self._lock:
            if model not in self._max_batch:
                try:
                    config = self.stub.ModelConfig(kserve.ModelConfigRequest(name=model), timeout=self.timeout_s)
                except grpc.RpcError as exc:
                    raise _error(model, exc) from None
                self._max_batch[model] = max(1, int(config.config.max_batch_size))
            return self._max_batch[model]

    def _infer(self, request: kserve.ModelInferRequest, timeout_s: float | None) -> np.ndarray:
        """One request with one requested FP32 output; the output as float32 [rows, D]."""
        timeout = self.timeout_s if timeout_s is None else max(0.001, min(self.timeout_s, timeout_s))
        try:
            response = self.stub.ModelInfer(request, timeout=timeout)
        except grpc.RpcError as exc:
            error = _error(request.model_name, exc)
            logger.warning("triton_call_failed", extra={"model": request.model_name, "code": error.code,
                                                        "status": exc.code().name, "error": str(exc.details())[:500]})
            raise error from None
        output = response.outputs[0]
        if output.datatype != "FP32" or len(response.raw_output_contents) != 1:
            raise GatewayError("INTERNAL", f"Triton answered model {request.model_name} with an unexpected output "
                                           f"({output.name}: {output.datatype})")
        return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(tuple(output.shape))

    def encode_users(self, item_vectors: np.ndarray, attention_mask: np.ndarray,
                     timeout_s: float | None = None) -> np.ndarray:
        step = self.max_batch_size(self.user_model)
        parts = []
        for start in range(0, len(item_vectors), step):
            vectors = np.ascontiguousarray(item_vectors[start:start + step], dtype=np.float32)
            mask = np.ascontiguousarray(attention_mask[start:start + step], dtype=np.int64)
            request = kserve.ModelInferRequest(model_name=self.user_model)
            _tensor(request, ITEM_VECTORS, "FP32", vectors.shape)
            _tensor(request, ATTENTION_MASK, "INT64", mask.shape)
            request.raw_input_contents.extend([vectors.tobytes(), mask.tobytes()])
            request.outputs.add().name = USER_VECTOR
            parts.append(self._infer(request, timeout_s))
        return np.concatenate(parts) if parts else np.zeros((0, item_vectors.shape[-1]), np.float32)

    def encode_texts(self, texts: Sequence[str], timeout_s: float | None = None) -> np.ndarray:
        step = self.max_batch_size(self.item_model)
        parts = []
        for start in range(0, len(texts), step):
            chunk = list(texts[start:start + step])
            request = kserve.ModelInferRequest(model_name=self.item_model)
            _tensor(request, TEXT, "BYTES", (len(chunk), 1))
            request.raw_input_contents.append(_bytes_tensor(chunk))
            request.outputs.add().name = ITEM_VECTOR
            parts.append(self._infer(request, timeout_s))
        return np.concatenate(parts)

    def close(self) -> None:
        try:
            self.channel.close()
        except Exception:  # closing a broken channel must not mask the reason for shutting down
            pass
