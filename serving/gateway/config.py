"""Gateway configuration: nested dataclasses whose field names are the YAML keys.

`load_config(path)` reads `serving.yaml` (see serving/serving.example.yaml);
unknown keys are refused with the key's name, so a typo does not silently
leave a default in place. The auth token itself never appears in the file:
the config names an environment variable or a file that holds it, and the
token is read at start-up by `serving.gateway.auth.load_token`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrec.cli import read_yaml_mapping
from llmrec.names import ITEM_ENCODER, USER_ENCODER

DEFAULT_TOKEN_ENV = "LLMREC_GATEWAY_TOKEN"
BACKENDS = ("triton", "onnxruntime")
INDEX_BACKENDS = ("faiss", "milvus")


class ConfigError(ValueError):
    """A configuration value out of range or of the wrong type (the message names the key)."""


@dataclass
class TritonConfig:
    """Where the models run: an external Triton (`url`) or the bundled one started on `model_repository`."""

    # an external Triton: http://host:port (its HTTP endpoint, the faster path here) or host:port (its gRPC
    # endpoint); None = start the bundled tritonserver (called over HTTP)
    url: str | None = None
    user_encoder: str = USER_ENCODER
    item_encoder: str = ITEM_ENCODER
    timeout_s: float = 10.0  # per Triton call (shortened to the caller's deadline)
    startup_timeout_s: float = 120.0  # managed server: how long to wait for readiness
    # managed server (url: null) only: when the tritonserver process dies on its own (crash, kill -9, OOM) the
    # gateway starts it again on the same ports and repository, after restart_backoff_s doubled for each further
    # restart within restart_window_s (capped at restart_backoff_max_s); after max_restarts restarts within the
    # window it gives up: Triton stays down, health NOT_SERVING, an error in the log. 0 = never restart.
    max_restarts: int = 5
    restart_window_s: float = 600.0
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0


@dataclass
class MilvusConfig:
    """The catalogue on Milvus (index_backend: milvus; serving/index/milvus_catalog.py). A collection that does not
    exist yet is created and filled from the index snapshot at `index`."""

    uri: str = "runs/demo/milvus.db"  # a local file = Milvus Lite in the gateway's process; or http://host:19530
    collection: str = "llmrec_items"
    token_env: str | None = None  # environment variable holding "user:password" or an API key, if the server asks


@dataclass
class BatchingConfig:
    """The coalescing queues: concurrent calls within `max_wait_ms` become one Triton call / index search."""

    max_batch_size: int = 32  # requests per batch (Triton calls are also split at the model's max_batch_size)
    max_wait_ms: float = 2.0  # how long a forming batch waits for more (a call alone in the queue goes at once)
    max_queue: int = 1024  # queued requests per queue; beyond it calls get RESOURCE_EXHAUSTED
    workers: int = 2  # batches in flight per queue (one gathers while another runs)


@dataclass
class LimitsConfig:
    """Per-request limits; a request beyond one gets INVALID_ARGUMENT naming the field and the limit."""

    max_history: int = 512
    max_k: int = 100
    max_texts: int = 64  # texts per EmbedItems call
    max_items: int = 256  # items per UpsertItems / DeleteItems / GetItems call
    max_text_bytes: int = 4096  # per text, title, attribute key or value (UTF-8 bytes)
    max_attributes: int = 32
    max_filter_ids: int = 4096
    default_timeout_s: float = 30.0  # deadline for calls that set none


@dataclass
class AuthConfig:
    """Bearer-token auth from the `authorization` metadata; the token comes from an env var or a file."""

    enabled: bool = False
    token_env: str = DEFAULT_TOKEN_ENV
    token_file: str | None = None  # read instead of the env var when given


@dataclass
class TLSConfig:
    """TLS for the gRPC port and the metrics port: the server's certificate chain and key (PEM files), and,
    when `client_ca_file` is given, client certificates signed by that CA are required (mutual TLS)."""

    cert_file: str | None = None  # both or neither with key_file; none = plaintext (a warning off loopback)
    key_file: str | None = None
    client_ca_file: str | None = None
    metrics: bool = True  # serve /metrics over TLS with the same certificate (and client CA) when TLS is on

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0 = a free port
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464  # Prometheus /metrics; 0 = a free port, None = no endpoint
    # plaintext grpc.health.v1 only, on its own port: for probes that cannot speak TLS (Kubernetes' native gRPC
    # probes) when `tls` is on; it serves nothing else. None = no such port (health is on the main port anyway)
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    grpc_workers: int = 32  # threads answering calls (each waits on its batch); more calls wait for a thread
    # calls in flight beyond which grpc answers RESOURCE_EXHAUSTED; None = what the batching queues can hold
    # (grpc_workers + 2 x batching.max_queue), so a call is refused for the queue's room, never for threads
    max_concurrent_rpcs: int | None = None
    max_message_bytes: int = 4 * 1024 * 1024  # receive and send limit
    backend: str = "triton"  # "triton" or "onnxruntime" (the same models in-process, no Triton)
    model_repository: str = "model_repository"  # read for max_len; the managed Triton and onnxruntime run it
    # serve a repository without llmrec.json, whose files cannot be verified (serving/repository.py); a
    # repository with one is always verified, extra files included
    allow_unverified: bool = False
    index: str = "runs/demo/index"  # folder written by `python -m export.index` (item index + item store)
    # where the catalogue lives: "faiss" (the snapshot at `index` in this process, with the write-ahead log below)
    # or "milvus" (a Milvus collection shared by every gateway, `milvus`; persist and state_dir do not apply)
    index_backend: str = "faiss"
    milvus: MilvusConfig = field(default_factory=MilvusConfig)
    max_len: int | None = None  # history window of the user encoder; None = from the repository's llmrec.json
    # durable writes: every UpsertItems / DeleteItems is fsynced to a write-ahead log in `state_dir` before it is
    # answered, replayed over the last snapshot on start, compacted into a new snapshot every `compact_every`
    # writes and at shutdown (serving/index/catalog.py); `index` itself is never modified. false: writes live in
    # memory only and are gone at the next start (a demo, a benchmark); a warning says so at start-up
    persist: bool = True
    # a read replica: UpsertItems / DeleteItems are refused with FAILED_PRECONDITION (they go to the one writer),
    # no state folder is opened, the snapshot at `index` is served as it is
    read_only: bool = False
    state_dir: str | None = None  # None = `<index>-state` beside the index folder
    compact_every: int = 1000  # logged writes between two snapshots
    health_interval_s: float = 1.0
    triton: TritonConfig = field(default_factory=TritonConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def concurrent_rpcs(self) -> int:
        """The calls in flight the server admits (see max_concurrent_rpcs)."""
        return self.max_concurrent_rpcs or self.grpc_workers + 2 * self.batching.max_queue


def _positive(section: Any, prefix: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(section, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{prefix}{name} must be a number > 0, got {value!r}")


def validate_config(config: GatewayConfig) -> None:
    """Raise ConfigError for the first value out of range (the message names the key)."""
    if config.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {config.backend!r}")
    if config.index_backend not in INDEX_BACKENDS:
        raise ConfigError(f"index_backend must be one of {INDEX_BACKENDS}, got {config.index_backend!r}")
    if not (isinstance(config.milvus.collection, str) and config.milvus.collection.replace("_", "").isalnum()):
        raise ConfigError(f"milvus.collection must be letters, digits and _, got {config.milvus.collection!r}")
    for name in ("port",):
        value = getattr(config, name)
        if not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError(f"{name} must be a port number (0 = a free port), got {value!r}")
    for name in ("metrics_port", "health_port"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535):
            raise ConfigError(f"{name} must be a port number, 0 (a free port) or null, got {value!r}")
    _positive(config, "", ("grpc_workers", "max_message_bytes", "health_interval_s", "compact_every"))
    if config.max_concurrent_rpcs is not None:
        _positive(config, "", ("max_concurrent_rpcs",))
    if config.max_len is not None:
        _positive(config, "", ("max_len",))
    url = config.triton.url
    host = r"(\[[0-9a-fA-F:.]+\]|[^/:\s\[\]]+)"  # a name, an IPv4 address or a bracketed IPv6 address
    if url is not None and not (isinstance(url, str) and re.fullmatch(rf"(http://|grpc://)?{host}:\d{{1,5}}/?", url)):
        raise ConfigError(f"triton.url must be http://host:port (Triton's HTTP endpoint), host:port (its gRPC "
                          f"endpoint) or null (start the bundled Triton), got {url!r}")
    _positive(config.triton, "triton.", ("timeout_s", "startup_timeout_s", "restart_window_s"))
    restarts = config.triton.max_restarts
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 0:
        raise ConfigError(f"triton.max_restarts must be an integer >= 0 (0 = never restart), got {restarts!r}")
    for name in ("restart_backoff_s", "restart_backoff_max_s"):
        value = getattr(config.triton, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"triton.{name} must be a number >= 0, got {value!r}")
    if config.triton.restart_backoff_max_s < config.triton.restart_backoff_s:
        raise ConfigError(f"triton.restart_backoff_max_s ({config.triton.restart_backoff_max_s!r}) must be >= "
                          f"triton.restart_backoff_s ({config.triton.restart_backoff_s!r})")
    _positive(config.batching, "batching.", ("max_batch_size", "max_queue", "workers"))
    if not config.batching.max_wait_ms >= 0:
        raise ConfigError(f"batching.max_wait_ms must be >= 0, got {config.batching.max_wait_ms!r}")
    _positive(config.limits, "limits.", tuple(f.name for f in dataclasses.fields(LimitsConfig)))
    tls = config.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError("tls.cert_file and tls.key_file go together: give both (TLS) or neither (plaintext)")
    if tls.client_ca_file is not None and not tls.enabled:
        raise ConfigError("tls.client_ca_file needs tls.cert_file and tls.key_file (client certificates are "
                          "checked inside a TLS connection)")


def _build(cls: type, values: Any, prefix: str) -> Any:
    """A dataclass from a mapping, recursing into nested dataclass fields; unknown keys are refused."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: "
                          f"{[prefix + k for k in known]}")
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        kwargs[name] = _build(nested, value, f"{prefix}{name}.") if nested else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


_NESTED: dict[tuple[type, str], type] = {
    (GatewayConfig, "triton"): TritonConfig,
    (GatewayConfig, "batching"): BatchingConfig,
    (GatewayConfig, "limits"): LimitsConfig,
    (GatewayConfig, "auth"): AuthConfig,
    (GatewayConfig, "tls"): TLSConfig,
    (GatewayConfig, "milvus"): MilvusConfig,
}


def config_from_dict(values: dict[str, Any] | None) -> GatewayConfig:
    return _build(GatewayConfig, values or {}, "")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GatewayConfig:
    """Read a YAML config; relative paths in it (index, model_repository, state_dir, auth.token_file, the tls
    files and a Milvus Lite file) are taken from the file's folder. `overrides` (dotted keys, e.g. {"port": 0})
    are applied on top."""
    path = Path(path)
    try:
        values = read_yaml_mapping(path, "gateway config")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for dotted, value in (overrides or {}).items():
        target = values
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    base = path.resolve().parent
    for key in ("index", "model_repository", "state_dir"):
        if isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
            values[key] = str(base / values[key])
    for section, keys in (("auth", ("token_file",)), ("tls", ("cert_file", "key_file", "client_ca_file")),
                          ("milvus", ("uri",))):
        mapping = values.get(section)
        for key in keys if isinstance(mapping, dict) else ():
            value = mapping.get(key)
            if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():  # a file, not a URL
                mapping[key] = str(base / value)
    return config_from_dict(values)


def config_to_dict(config: GatewayConfig) -> dict[str, Any]:
    """Plain values (for logging: holds no secret, only where the token comes from)."""
    return dataclasses.asdict(config)
