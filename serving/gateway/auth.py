"""Optional bearer-token auth: `authorization: Bearer <token>` metadata on every call.

The token is read once at start-up from a file (`auth.token_file`) or an
environment variable (`auth.token_env`); it is never logged or echoed, and is
compared in constant time. Health checks and reflection stay open, so load
balancers and grpcurl can probe the server without the secret.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from .config import AuthConfig, ConfigError

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def load_token(config: AuthConfig) -> str | None:
    """The token when auth is enabled (ConfigError when it cannot be found), None when auth is off."""
    if not config.enabled:
        return None
    if config.token_file:
        path = Path(config.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"auth.token_file {path}: cannot be read ({exc.strerror})") from None
        where = f"auth.token_file {path}"
    else:
        token = os.environ.get(config.token_env, "").strip()
        where = f"environment variable {config.token_env} (auth.token_env)"
    if not token:
        raise ConfigError(f"auth.enabled is true but {where} holds no token")
    return token


def bearer(metadata: tuple | None) -> str | None:
    """The token of an `authorization: Bearer <token>` entry, or None."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without the right token with UNAUTHENTICATED (health and reflection excepted)."""

    def __init__(self, token: str, on_refused: Callable[[str], None] | None = None) -> None:
        self._token = token.encode("utf-8")
        self._on_refused = on_refused

    def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001 - grpc's signature
        method = handler_call_details.method or ""
        if method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        given = bearer(handler_call_details.invocation_metadata)
        if given is not None and hmac.compare_digest(given.encode("utf-8"), self._token):
            return continuation(handler_call_details)
        if self._on_refused is not None:
            self._on_refused(method)
        message = ("missing 'authorization: Bearer <token>' metadata" if given is None
                   else "the bearer token is not valid")

        def deny(_request: bytes, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return grpc.unary_unary_rpc_method_handler(deny)
