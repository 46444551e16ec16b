"""The gateway process: gRPC server hosting the Recommender service (service.py), health, reflection, metrics, auth.

`Gateway(config).start()` loads the item index and store, connects to Triton
(an external one at `triton.url`, or the bundled server it starts on
`model_repository`, supervised: restarted on the same ports when it dies,
within the `triton.max_restarts` budget; or the in-process onnxruntime
backend), starts the
batching pipeline, the Prometheus endpoint and the gRPC server, and keeps the
standard health service up to date (NOT_SERVING while Triton or the index is
not ready). `stop()` undoes all of it in reverse order.

Health names: "" and "llmrec.v2.Recommender" follow readiness (Triton and the
index); LIVENESS_SERVICE ("liveness") is SERVING from the moment the server
answers calls until shutdown, whatever Triton does, so an orchestrator can
restart a dead gateway without restarting live ones whose Triton is away
(serving/deploy/kubernetes probes both).

The service itself (parsing, checks, answers) is serving/gateway/service.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmrec.manifests import RepositoryManifest

from ..index.catalog import Catalog, DurableCatalog, ItemCatalog, ItemStore
from ..index.item_index import RESERVED as INDEX_FIELDS
from ..index.item_index import ItemIndex
from ..index.snapshot import IndexMismatch
from ..repository import remove_bytecode, verify_repository
from .auth import AuthInterceptor, load_token
from .backends import EncoderBackend, OnnxRuntimeBackend, item_text_of
from .config import ConfigError, GatewayConfig, TLSConfig, config_to_dict
from .metrics import GatewayMetrics, method_label
from .pipeline import RecommendationPipeline
from .service import METHODS, SERVICE_NAME, RecommenderServicer, method_handlers

logger = logging.getLogger("llmrec.gateway")

LIVENESS_SERVICE = "liveness"  # health-check name that is SERVING while the process answers calls
RESERVED_MANIFEST_KEYS = set(INDEX_FIELDS)  # the index's own manifest fields (shards too), not provenance


class StartupError(RuntimeError):
    """The gateway cannot start (bad index, missing repository, Triton failed); the message says why."""


# ---------------------------------------------------------------------------------------------- gateway
def load_catalog(directory: str | Path) -> tuple[ItemIndex, ItemStore, dict[str, Any]]:
    """The index and store of a snapshot folder and the manifest's provenance fields (kept when persisting)."""
    directory = Path(directory)
    try:
        index = ItemIndex.load(directory)
        store = ItemStore.load(directory)
    except IndexMismatch as exc:
        raise StartupError(f"item index: {exc}") from None
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    extra = {k: v for k, v in manifest.items() if k not in RESERVED_MANIFEST_KEYS}
    if index.metric != "inner_product":
        logger.warning("index_metric", extra={
            "metric": index.metric,
            "detail": "the SRS scores with the inner product; an index searched with another metric ranks differently"})
    return index, store, extra


def state_dir(config: GatewayConfig) -> Path:
    """Where the write-ahead log and the compacted snapshots live (persist: true)."""
    if config.state_dir:
        return Path(config.state_dir)
    index = Path(config.index)
    return index.with_name(index.name + "-state")


def open_durable_catalog(config: GatewayConfig) -> DurableCatalog:
    """Recover the catalogue: the last good snapshot + the write-ahead log (serving/index/catalog.py)."""
    try:
        catalog = DurableCatalog.open(config.index, state_dir(config), compact_every=config.compact_every,
                                      reserved=frozenset(RESERVED_MANIFEST_KEYS))
    except IndexMismatch as exc:  # SnapshotError and WalError too: the message says what and where
        raise StartupError(f"item index: {exc}") from None
    except OSError as exc:
        raise StartupError(f"item index state {state_dir(config)}: {exc}") from None
    report = catalog.report
    logger.log(logging.WARNING if report.refused or report.torn_bytes else logging.INFO, "catalog_recovered", extra={
        "snapshot": report.snapshot, "snapshot_seq": report.snapshot_seq, "replayed": report.replayed,
        "last_seq": report.last_seq, "refused": report.refused, "torn_bytes": report.torn_bytes,
        "items": len(catalog.index)})
    return catalog


def open_catalog(config: GatewayConfig) -> ItemCatalog:
    """The catalogue the gateway serves, with `provenance` (the snapshot manifest's fields) set on it: FAISS with
    the write-ahead log (persist), FAISS in memory (persist: false or a read replica), or Milvus."""
    if config.index_backend == "milvus":
        import os

        from ..index.milvus_catalog import MilvusError, MilvusSettings, open_milvus_catalog

        token = os.environ.get(config.milvus.token_env) if config.milvus.token_env else None
        settings = MilvusSettings(config.milvus.uri, config.milvus.collection, token)
        snapshot = Path(config.index) if (Path(config.index) / "manifest.json").is_file() else None
        try:
            live = open_milvus_catalog(settings, snapshot)
        except MilvusError as exc:
            raise StartupError(str(exc)) from None
        live.provenance = load_catalog(snapshot)[2] if snapshot is not None else {}
        logger.info("catalog_opened", extra={"backend": "milvus", "uri": settings.uri,
                                             "collection": settings.collection, "items": len(live)})
        return live
    durable = None
    if config.persist and not config.read_only:
        durable = open_durable_catalog(config)
        index, store, provenance = durable.index, durable.store, durable.extra
    else:
        index, store, provenance = load_catalog(config.index)
        if not config.read_only:
            logger.warning("writes_not_durable", extra={
                "index": config.index, "detail": "persist: false: acknowledged upserts and deletes live in memory only "
                                                 "and are lost when the gateway stops"})
    live = Catalog(index, store, durable)
    live.provenance = provenance
    return live


def check_pairing(dim: int, provenance: dict[str, Any], manifest: RepositoryManifest | None,
                  repository: Path) -> None:
    """The index must hold the item table of the deployed user encoder, not merely vectors of its size.

    Two runs' artifacts of the same size would otherwise be served together and give confident but wrong
    recommendations. Export records the table's sha256 in both llmrec.json and the index manifest; an
    index or repository without that record (built by hand) is accepted on its dimensions with a warning."""
    user = manifest.user_encoder if manifest is not None else None
    if user is not None and user.hidden_size != dim:
        hidden = user.hidden_size
        raise StartupError(f"the item index holds {dim}-d vectors but the user encoder reads {hidden}-d ones "
                           f"({repository}/llmrec.json): build the index from this user encoder's item table")
    expected = ((user.item_vectors or {}) if user is not None else {}).get("sha256")
    found = provenance.get("item_vectors_sha256")
    if expected and found and expected != found:
        raise StartupError(f"item index: item_vectors_sha256 is {found[:12]}... but the user encoder of "
                           f"{repository} was exported with the item table {expected[:12]}...: the index was built "
                           "for other models; rebuild it (python -m export.index) from this export")
    if not (expected and found):
        logger.warning("index_pairing_unchecked", extra={
            "detail": "the index or the repository records no item-table sha256: only dimensions checked"})
    encoder_dim = manifest.embedder.dim if manifest is not None and manifest.embedder is not None else None
    if encoder_dim is not None and int(encoder_dim) != dim:
        logger.warning("item_encoder_dim", extra={
            "item_encoder_dim": encoder_dim, "index_dim": dim,
            "detail": "the item encoder was exported without the SRS adapter: UpsertItems will be refused"})


def _read_pem(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key} {path}: cannot be read ({exc.strerror})") from None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port (client certificates required when `client_ca_file` is set); None
    when TLS is off. ConfigError naming the key when a file cannot be read."""
    if not tls.enabled:
        return None
    pair = (_read_pem(tls.key_file, "tls.key_file"), _read_pem(tls.cert_file, "tls.cert_file"))
    ca = _read_pem(tls.client_ca_file, "tls.client_ca_file") if tls.client_ca_file else None
    try:
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"tls: the certificate or key cannot be used ({exc})") from None


def is_loopback(host: str) -> bool:
    """True when `host` accepts connections from this machine only."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def warn_if_exposed(config: GatewayConfig, auth: bool) -> None:
    """A warning when the gateway listens beyond loopback without TLS or without auth: on a network the calls
    (and a bearer token) would cross in clear text, or anyone reaching the port could write the catalogue."""
    exposed = [name for name, host in (("host", config.host), ("metrics_host", config.metrics_host))
               if not is_loopback(host) and (name == "host" or config.metrics_port is not None)]
    missing = [what for what, on in (("TLS (tls.cert_file, tls.key_file)", config.tls.enabled),
                                     ("auth (auth.enabled)", auth)) if not on]
    if exposed and missing:
        logger.warning("gateway_exposed", extra={
            "listens": [f"{n}={getattr(config, n)}" for n in exposed], "missing": missing,
            "detail": "the gateway listens beyond loopback without " + " and ".join(missing)})


class Gateway:
    """One running gateway (use `with Gateway(config) as g:` or start()/stop())."""

    def __init__(self, config: GatewayConfig, backend: EncoderBackend | None = None) -> None:
        self.config = config
        self._backend = backend
        self.backend: EncoderBackend | None = None
        self.metrics = GatewayMetrics()
        self.pipeline: RecommendationPipeline | None = None
        self.server: grpc.Server | None = None
        self.health = health.HealthServicer(experimental_non_blocking=True,
                                            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2))
        self.triton: Any = None  # serving.triton.TritonServer when this gateway started Triton itself
        self.supervisor: Any = None  # serving.triton.server.TritonSupervisor restarting that Triton when it dies
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.health_server: grpc.Server | None = None  # the plaintext health-only port (config.health_port)
        self.health_port: int | None = None
        self.ready = threading.Event()  # set while Triton and the index are ready (the health loop decides)
        self._stop_health = threading.Event()
        self._wake_health = threading.Event()  # a check now (Triton died or is back), not at the next interval
        self._health_thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def is_ready(self) -> bool:
        return self.ready.is_set()

    # ------------------------------------------------------------------ start
    def _make_backend(self) -> EncoderBackend:
        config = self.config
        if self._backend is not None:
            return self._backend
        if config.backend == "onnxruntime":
            return OnnxRuntimeBackend(config.model_repository)
        from .triton_client import TritonBackend

        url = config.triton.url
        if url is None:
            from ..triton import TritonError, TritonServer
            from ..triton.server import RestartPolicy, TritonSupervisor

            self.triton = TritonServer(config.model_repository, startup_timeout=config.triton.startup_timeout_s,
                                       allow_unverified=config.allow_unverified)
            try:
                self.triton.start()
            except TritonError as exc:
                raise StartupError(str(exc)) from None
            url = self.triton.http_url  # HTTP: the faster of Triton's two endpoints here (triton_client.py)
            policy = RestartPolicy(max_restarts=config.triton.max_restarts, window_s=config.triton.restart_window_s,
                                   backoff_s=config.triton.restart_backoff_s,
                                   backoff_max_s=config.triton.restart_backoff_max_s)
            self.supervisor = TritonSupervisor(self.triton, policy, on_event=self._on_triton_event).start()
        return TritonBackend(url, config.triton.user_encoder, config.triton.item_encoder, config.triton.timeout_s)

    def start(self) -> Gateway:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        config = self.config
        token = load_token(config.auth)
        repository = Path(config.model_repository)
        try:  # a manifest this version cannot read stops the start with its reason
            manifest = RepositoryManifest.read(repository)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        max_len = config.max_len or (manifest.user_encoder.max_len if manifest and manifest.user_encoder else None)
        if max_len is None:
            raise ConfigError(f"max_len is not set and {repository}/llmrec.json does not record the user encoder's "
                              "max_len: set max_len (the SRS history length) in the config")
        if self._backend is None and config.backend == "onnxruntime":
            try:  # this process loads these files: verify them first (a Triton we start verifies them itself)
                remove_bytecode(repository)  # left by a Triton that ran these models (serving/repository.py)
                verify_repository(repository, config.allow_unverified)
            except ValueError as exc:
                raise StartupError(str(exc)) from None
        live = open_catalog(config)
        try:
            check_pairing(live.dim, live.provenance, manifest, repository)
            self.backend = self._make_backend()
        except BaseException:
            live.close(compact=False)
            raise
        self.pipeline = RecommendationPipeline(
            self.backend, live, max_len=max_len, batching=config.batching,
            metrics=self.metrics, user_model=config.triton.user_encoder, item_model=config.triton.item_encoder).start()
        credentials = server_credentials(config.tls)
        warn_if_exposed(config, token is not None)
        if config.metrics_port is not None:
            tls = config.tls if config.tls.enabled and config.tls.metrics else None
            self.metrics_port = self.metrics.serve(
                config.metrics_host, config.metrics_port, certfile=tls and tls.cert_file,
                keyfile=tls and tls.key_file, client_cafile=tls and tls.client_ca_file)
        interceptors = []
        if token is not None:
            interceptors.append(AuthInterceptor(
                token, on_refused=lambda method: self.metrics.requests.labels(method_label(method, METHODS),
                                                                              "UNAUTHENTICATED").inc()))
        options = [("grpc.max_receive_message_length", config.max_message_bytes),
                   ("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.grpc_workers, thread_name_prefix="grpc"),
            interceptors=interceptors, options=options,
            maximum_concurrent_rpcs=config.concurrent_rpcs)
        servicer = RecommenderServicer(self.pipeline, config, self.metrics, self.ready,
                                       item_text_of(manifest))
        self.server.add_generic_rpc_handlers((method_handlers(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        try:
            address = f"{config.host}:{config.port}"
            self.port = (self.server.add_secure_port(address, credentials) if credentials is not None
                         else self.server.add_insecure_port(address))
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc}") from None
        if config.health_port is not None:  # health only, plaintext: for probes that cannot speak TLS
            self.health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                                             options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            try:
                self.health_port = self.health_server.add_insecure_port(f"{config.health_host}:{config.health_port}")
            except RuntimeError as exc:
                raise StartupError(f"cannot listen on {config.health_host}:{config.health_port}: {exc}") from None
        self._check_health()
        self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        self._health_thread = threading.Thread(target=self._health_loop, name="gateway-health", daemon=True)
        self._health_thread.start()
        logger.info("gateway_ready", extra={"address": self.address, "metrics_port": self.metrics_port,
                                            "health_port": self.health_port, "backend": self.backend.name,
                                            "triton": getattr(self.backend, "url", None), "index": str(config.index),
                                            "items": len(live), "index_backend": config.index_backend,
                                            "max_len": max_len, "auth": token is not None, "tls": config.tls.enabled,
                                            "client_certificates": config.tls.client_ca_file is not None,
                                            "serving": self.is_ready(),
                                            "config": {k: v for k, v in config_to_dict(config).items() if k != "auth"}})

    def _on_triton_event(self, event: str, fields: dict[str, Any]) -> None:
        """From the supervisor's thread: count the managed Triton's deaths and restarts, re-check health at once."""
        if event == "exited":
            self.metrics.triton_exits.inc()
        elif event == "restarted":
            self.metrics.triton_restarts.inc()
        elif event == "restart_failed":
            self.metrics.triton_restart_failures.inc()
        elif event == "gave_up":
            self.metrics.triton_gave_up.set(1)
        self._wake_health.set()

    # ------------------------------------------------------------------ health
    def _check_health(self) -> None:
        assert self.pipeline is not None
        try:
            ready = self.pipeline.ready()
        except Exception:  # a health probe must never kill the loop
            ready = False
        was = self.is_ready()
        if ready != was or self._health_thread is None:
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            self.health.set("", status)
            self.health.set(SERVICE_NAME, status)
            if ready != was:
                logger.info("gateway_health", extra={"serving": ready})
        if ready:
            self.ready.set()
        else:
            self.ready.clear()
        self.metrics.ready.set(1 if ready else 0)
        self.metrics.index_items.set(len(self.pipeline.catalog))

    def _health_loop(self) -> None:
        while True:
            self._wake_health.wait(self.config.health_interval_s)
            self._wake_health.clear()
            if self._stop_health.is_set():
                return
            self._check_health()

    # ------------------------------------------------------------------ stop
    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls, let calls in flight finish (up to `grace` s), then stop everything else.

        The Triton supervisor is stopped first: the managed Triton's shutdown below is never taken for a death.
        """
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        self._stop_health.set()
        self._wake_health.set()
        if self.server is not None:
            self.health.enter_graceful_shutdown()
            self.server.stop(grace).wait(grace + 1.0)
            self.server = None
        if self.health_server is not None:
            self.health_server.stop(0).wait(1.0)
            self.health_server = None
        if self._health_thread is not None:
            self._health_thread.join(timeout=self.config.health_interval_s + 2.0)
            self._health_thread = None
        if self.pipeline is not None:
            self.pipeline.stop()
            self.pipeline = None
        self.metrics.stop()
        if self.backend is not None and self._backend is None:
            self.backend.close()
        self.backend = None
        if self.triton is not None:
            self.triton.stop()
            self.triton = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
