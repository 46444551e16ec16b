"""TLS on the gateway's gRPC and metrics ports, with a CA, server and client certificates made here by openssl:
plaintext and untrusted clients are refused, client certificates are required when configured, and a gateway
listening beyond loopback without TLS or auth says so at start-up."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from serving.client import open_channel
from serving.gateway import Gateway, config_from_dict
from serving.gateway.config import ConfigError, GatewayConfig
from serving.gateway.server import is_loopback, warn_if_exposed
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc


def openssl(*args: str, cwd: Path) -> None:
    assert shutil.which("openssl"), "the TLS tests make their certificates with the openssl command"
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(folder: Path, name: str, ca: str, subject: str, extensions: str) -> None:
    """A key and a certificate for `subject`, signed by the CA `ca` (files <ca>.pem / <ca>.key)."""
    (folder / f"{name}.ext").write_text(extensions)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject, "-out",
            f"{name}.csr", cwd=folder)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):  # the gateway's CA and one it does not know
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=llmrec test {ca}", cwd=folder)
    issue(folder, "server", "ca", "/CN=localhost",
          "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    issue(folder, "client", "ca", "/CN=a client", "extendedKeyUsage=clientAuth\n")
    issue(folder, "stranger", "other-ca", "/CN=a stranger", "extendedKeyUsage=clientAuth\n")
    return folder


def _values(deployment, certs: Path, **tls) -> dict:
    return {"port": 0, "metrics_port": 0, "backend": "onnxruntime", "model_repository": str(deployment.repository),
            "index": str(deployment.index), "persist": False,
            "tls": {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key"), **tls}}


def config(deployment, certs: Path, **tls) -> GatewayConfig:
    return config_from_dict(_values(deployment, certs, **tls))


def get_items(channel: grpc.Channel) -> list[str]:
    stub = pb_grpc.RecommenderStub(channel)
    return [i.id for i in stub.GetItems(pb.GetItemsRequest(ids=["i0", "i1"]), timeout=10).items]


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info, channel:
        get_items(channel)
    return info.value.code()


def metrics_status(port: int, context: ssl.SSLContext | None) -> int | str:
    try:
        scheme = "https" if context is not None else "http"
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/metrics", timeout=10, context=context) as r:
            return r.status
    except (urllib.error.URLError, ConnectionError, ssl.SSLError) as exc:
        return type(exc).__name__


def client_context(certs: Path, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if cert:
        context.load_cert_chain(str(certs / f"{cert}.pem"), str(certs / f"{cert}.key"))
    return context


def test_tls_serves_trusting_clients_and_refuses_plaintext_and_strangers(deployment, certs):
    with Gateway(config(deployment, certs)) as running:
        with open_channel(running.address, str(certs / "ca.pem")) as channel:
            assert get_items(channel) == ["i0", "i1"]
        assert refused(grpc.insecure_channel(running.address)) == grpc.StatusCode.UNAVAILABLE
        assert refused(open_channel(running.address, str(certs / "other-ca.pem"))) == grpc.StatusCode.UNAVAILABLE
        assert metrics_status(running.metrics_port, client_context(certs)) == 200
        assert metrics_status(running.metrics_port, None) != 200  # no plaintext /metrics either


def test_the_health_port_answers_plaintext_probes_and_nothing_else(deployment, certs):
    """Kubernetes' native gRPC probes cannot speak TLS: health_port serves grpc.health.v1 alone, in plaintext."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with Gateway(config_from_dict({**_values(deployment, certs), "health_port": 0})) as running:
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("liveness", "llmrec.v2.Recommender"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as info:
                get_items(channel)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the recommender is not on this port


def test_client_certificates_are_required_when_a_client_ca_is_set(deployment, certs):
    with Gateway(config(deployment, certs, client_ca_file=str(certs / "ca.pem"))) as running:
        ca = str(certs / "ca.pem")
        with open_channel(running.address, ca, str(certs / "client.pem"), str(certs / "client.key")) as channel:
            assert get_items(channel) == ["i0", "i1"]
        assert refused(open_channel(running.address, ca)) == grpc.StatusCode.UNAVAILABLE
        stranger = open_channel(running.address, ca, str(certs / "stranger.pem"), str(certs / "stranger.key"))
        assert refused(stranger) == grpc.StatusCode.UNAVAILABLE
        assert metrics_status(running.metrics_port, client_context(certs, "client")) == 200
        assert metrics_status(running.metrics_port, client_context(certs)) != 200


def test_tls_config_errors_name_the_key(deployment, certs, tmp_path):
    with pytest.raises(ConfigError, match="tls.cert_file and tls.key_file go together"):
        config_from_dict({"tls": {"cert_file": str(certs / "server.pem")}})
    with pytest.raises(ConfigError, match="tls.client_ca_file needs tls.cert_file"):
        config_from_dict({"tls": {"client_ca_file": str(certs / "ca.pem")}})
    missing = config(deployment, certs, client_ca_file=str(tmp_path / "nowhere.pem"))
    with pytest.raises(ConfigError, match=r"tls.client_ca_file .*nowhere.pem: cannot be read"):
        Gateway(missing).start()
    with pytest.raises(ValueError, match="--cert and --key need --ca"):
        open_channel("127.0.0.1:1", None, str(certs / "client.pem"), str(certs / "client.key"))


def test_listening_beyond_loopback_without_tls_or_auth_is_a_warning(certs, caplog):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("gateway.internal")
    tls = {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key")}
    cases = [({"host": "127.0.0.1"}, False, None), ({"host": "0.0.0.0"}, False, "TLS"),
             ({"host": "0.0.0.0", "tls": tls}, False, "auth"), ({"host": "0.0.0.0", "tls": tls}, True, None),
             ({"host": "0.0.0.0"}, True, "TLS")]
    for values, auth, expected in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmrec.gateway"):
            warn_if_exposed(config_from_dict(values), auth)
        warned = [caplog.handler.format(r) for r in caplog.records if r.getMessage() == "gateway_exposed"]
        assert (expected in warned[0]) if expected else not warned, (values, auth, warned)
