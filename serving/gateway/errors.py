"""Errors the gateway answers with: a status code name and a message for the caller.

The pipeline and the service's checks raise `GatewayError` with a gRPC status code
*name* ("INVALID_ARGUMENT", ...) rather than a grpc object, so they run the
same in-process (tests, the load benchmark's baseline) as behind the gRPC
server, which maps the name to `grpc.StatusCode` and never sends a stack trace.
"""

from __future__ import annotations

CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "UNAVAILABLE", "RESOURCE_EXHAUSTED",
         "DEADLINE_EXCEEDED", "INTERNAL", "CANCELLED", "FAILED_PRECONDITION")


class GatewayError(Exception):
    """A failure to report to the caller as `code` with `message` (safe to show: no internals)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def invalid(message: str) -> GatewayError:
    return GatewayError("INVALID_ARGUMENT", message)


class BackendUnavailable(GatewayError):
    """The model server (Triton) cannot be reached or is not ready."""

    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)


class QueueFull(GatewayError):
    """The bounded batching queue is full: the gateway is overloaded, the caller should back off."""

    def __init__(self, message: str) -> None:
        super().__init__("RESOURCE_EXHAUSTED", message)


class DeadlineExceeded(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__("DEADLINE_EXCEEDED", message)
