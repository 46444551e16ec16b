"""serving/deploy: the Kubernetes manifests and the Dockerfile agree with the gateway they deploy.

Ports, health-check names and the token variable are read from the gateway itself (its config defaults, the
ConfigMap loaded with its own loader, the names server.py registers), never typed here a second time."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.gateway.config import DEFAULT_TOKEN_ENV, GatewayConfig, load_config
from serving.gateway.server import LIVENESS_SERVICE
from serving.gateway.service import SERVICE_NAME

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "serving" / "deploy"
KUBE = DEPLOY / "kubernetes"
WORKLOADS = ("Deployment", "StatefulSet")


def load_all() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append({**doc, "_file": path.name})
    return docs


DOCS = load_all()


def objects(kind: str) -> list[dict[str, Any]]:
    return [d for d in DOCS if d.get("kind") == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def gateway_workloads() -> list[dict[str, Any]]:
    found = [w for w in objects("Deployment") + objects("StatefulSet")
             if any("gateway" in (c.get("args") or []) or "--config" in (c.get("args") or [])
                    for c in pod_spec(w)["containers"])]
    assert {w["metadata"]["name"] for w in found} == {"llmrec-gateway", "llmrec-gateway-writer"}
    return found


def container_port(container: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def mounted_config(workload: dict[str, Any], tmp_path: Path) -> tuple[GatewayConfig, dict[str, Any]]:
    """The gateway config a workload's container runs with: its --config path resolved through the ConfigMap
    volume, written to a file and loaded with the gateway's own loader."""
    spec = pod_spec(workload)
    container = spec["containers"][0]
    args = container["args"]
    path = Path(args[args.index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    configmap = one("ConfigMap", volume["configMap"]["name"])
    text = configmap["data"][path.name]
    file = tmp_path / f"{workload['metadata']['name']}-{path.name}"
    file.write_text(text, encoding="utf-8")
    return load_config(file), yaml.safe_load(text)


def key_paths(mapping: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in mapping.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= key_paths(value, f"{prefix}{key}.")
    return out


# ---------------------------------------------------------------------------------------------- files
def test_every_yaml_parses_and_the_kustomization_lists_every_file():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert all(doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name") for doc in DOCS
               if doc["_file"] != "kustomization.yaml")
    kinds = {d["kind"] for d in DOCS}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "PersistentVolumeClaim"} <= kinds
    assert not objects("Secret"), "the auth token is created by hand (README), never committed"


def test_every_container_names_an_image_and_resources():
    for workload in objects("Deployment") + objects("StatefulSet"):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container.get("image"), where
            resources = container.get("resources") or {}
            assert resources.get("requests", {}).get("cpu") and resources["requests"].get("memory"), where
            assert resources.get("limits", {}).get("memory"), where


# ---------------------------------------------------------------------------------------------- gateway
def test_configmap_holds_gateway_configs_its_loader_accepts(tmp_path):
    example = yaml.safe_load((ROOT / "serving" / "serving.example.yaml").read_text())
    configmap = one("ConfigMap", "llmrec-gateway-config")
    assert set(configmap["data"]) == {"serving.yaml", "serving-writer.yaml"}
    triton = one("Service", "llmrec-triton")
    triton_http = next(p["port"] for p in triton["spec"]["ports"] if p["name"] == "http")
    for key, text in configmap["data"].items():
        values = yaml.safe_load(text)
        assert key_paths(values) == key_paths(example), f"{key}: keys differ from serving/serving.example.yaml"
        (tmp_path / key).write_text(text)
        config = load_config(tmp_path / key)
        assert config.host == "0.0.0.0" and config.metrics_host == "0.0.0.0", "a pod must listen beyond localhost"
        assert config.triton.url == f"http://{triton['metadata']['name']}:{triton_http}"
        assert config.backend == "triton" and config.auth.enabled
        assert Path(config.index).is_absolute() and Path(config.model_repository).is_absolute()


def test_gateway_probes_ports_and_annotations_come_from_its_config(tmp_path):
    defaults = GatewayConfig()
    for workload in gateway_workloads():
        config, _ = mounted_config(workload, tmp_path)
        name = workload["metadata"]["name"]
        assert (config.port, config.metrics_port) == (defaults.port, defaults.metrics_port), name
        container = pod_spec(workload)["containers"][0]
        assert container_port(container, "grpc") == config.port
        assert container_port(container, "metrics") == config.metrics_port
        # the kubelet's gRPC probes speak plaintext: they go to the health-only port, the API port is TLS
        assert config.tls.enabled and config.health_port not in (None, config.port), name
        assert container_port(container, "health") == config.health_port
        ready, live, startup = (container[k]["grpc"] for k in ("readinessProbe", "livenessProbe", "startupProbe"))
        assert ready == {"port": config.health_port, "service": SERVICE_NAME}, name
        assert live == {"port": config.health_port, "service": LIVENESS_SERVICE}, name
        assert startup == {"port": config.health_port, "service": LIVENESS_SERVICE}, name
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(config.metrics_port)
        assert annotations["prometheus.io/scheme"] == ("https" if config.tls.metrics else "http")


def test_gateway_tls_files_come_from_the_tls_secret(tmp_path):
    for workload in gateway_workloads():
        config, _ = mounted_config(workload, tmp_path)
        spec = pod_spec(workload)
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        secret_mounts = [mounts[n] for n, v in volumes.items() if v.get("secret", {}).get("secretName")
                         == "llmrec-gateway-tls"]
        assert len(secret_mounts) == 1, workload["metadata"]["name"]
        for path in (config.tls.cert_file, config.tls.key_file):
            assert Path(path).parent == Path(secret_mounts[0]) and Path(path).name in ("tls.crt", "tls.key")


def test_gateway_token_comes_from_a_secret_as_the_variable_it_reads(tmp_path):
    for workload in gateway_workloads():
        config, _ = mounted_config(workload, tmp_path)
        env = {e["name"]: e for e in pod_spec(workload)["containers"][0]["env"]}
        assert config.auth.token_env == DEFAULT_TOKEN_ENV
        ref = env[config.auth.token_env]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "llmrec-gateway-token" and ref["key"] == "token"
        assert "value" not in env[config.auth.token_env]


def test_one_writer_with_its_own_log_and_read_replicas_without_one(tmp_path):
    reader, writer = one("Deployment", "llmrec-gateway"), one("StatefulSet", "llmrec-gateway-writer")
    reader_config, _ = mounted_config(reader, tmp_path)
    writer_config, _ = mounted_config(writer, tmp_path)
    assert not reader_config.persist, "replicas scaled by the HPA must not write a log (it is per process)"
    assert reader_config.read_only, "a replica must refuse the writes it would not keep, not acknowledge them"
    assert writer_config.persist and not writer_config.read_only and writer["spec"]["replicas"] == 1
    state_mount = next(m for m in pod_spec(writer)["containers"][0]["volumeMounts"] if m["name"] == "state")
    assert Path(writer_config.state_dir).is_relative_to(state_mount["mountPath"])
    assert [t["metadata"]["name"] for t in writer["spec"]["volumeClaimTemplates"]] == ["state"]
    assert reader_config.index == writer_config.index  # the writer's base is the published snapshot
    hpa = one("HorizontalPodAutoscaler", "llmrec-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llmrec-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    for mount in pod_spec(reader)["containers"][0]["volumeMounts"]:
        assert mount.get("readOnly") or mount["name"] == "tmp", mount


def test_selectors_claims_and_config_maps_resolve():
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
            for w in objects("Deployment") + objects("StatefulSet")}
    for obj in objects("Service") + objects("PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert any(selector.items() <= labels.items() for labels in pods.values()), obj["metadata"]["name"]
    for workload in objects("Deployment") + objects("StatefulSet"):
        assert workload["spec"]["selector"]["matchLabels"].items() <= pods[workload["metadata"]["name"]].items()
    claims = {c["metadata"]["name"] for c in objects("PersistentVolumeClaim")}
    for workload in objects("Deployment") + objects("StatefulSet"):
        for volume in pod_spec(workload)["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                one("ConfigMap", volume["configMap"]["name"])
    pdb = one("PodDisruptionBudget", "llmrec-gateway")
    assert pdb["spec"]["minAvailable"] < one("HorizontalPodAutoscaler", "llmrec-gateway")["spec"]["minReplicas"]


# ---------------------------------------------------------------------------------------------- triton
def test_triton_runs_the_ngc_image_on_a_gpu_with_http_probes():
    triton = one("Deployment", "llmrec-triton")
    container = next(c for c in pod_spec(triton)["containers"] if c["name"] == "tritonserver")
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", container["image"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {f"--{k}-port={v}" for k, v in ports.items()} <= set(container["args"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": ports["http"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": ports["http"]}
    repository = next(m for m in container["volumeMounts"] if m["name"] == "model-repository")
    assert f"--model-repository={repository['mountPath']}" in container["args"] and repository["readOnly"]
    service = one("Service", "llmrec-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports


# ---------------------------------------------------------------------------------------------- image
def test_dockerfile_installs_the_serving_extras_only():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^\n\\&]+)", dockerfile)
    assert [i.strip() for i in installs] == ['".[serving,milvus]"']
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [r for r in extras["serving"] + extras["milvus"] if re.match(r"(torch|transformers|accelerate)\b", r)]
    defaults = GatewayConfig()
    assert re.search(rf"^EXPOSE {defaults.port} {defaults.metrics_port}$", dockerfile, re.M)
    assert 'ENTRYPOINT ["python", "-m", "serving", "gateway"]' in dockerfile
    assert (DEPLOY / "Dockerfile.dockerignore").is_file()


def test_the_gateway_imports_neither_torch_nor_training_code():
    code = ("import sys, serving.gateway.server, serving.gateway.triton_client, serving.gateway.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'train', 'export') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_folder():
    out = subprocess.run(["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, check=True, timeout=60)
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(rendered) == len([d for d in DOCS if d["_file"] != "kustomization.yaml"])
    assert all(d["metadata"].get("namespace") == "llmrec" for d in rendered if d["kind"] != "Namespace")
    images = {c["image"] for d in rendered if d["kind"] in WORKLOADS
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert "registry.example.com/llmrec/gateway:0.1.0" in images


def test_milvus_overlay_runs_writable_replicas_on_one_collection(tmp_path):
    """serving/deploy/kubernetes-milvus: no writer StatefulSet; every replica of the HPA-scaled Deployment takes
    writes, on the Milvus collection named by a config the gateway's loader accepts."""
    overlay = DEPLOY / "kubernetes-milvus"
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True, timeout=60)
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert not [d for d in rendered if d["kind"] == "StatefulSet" or d["metadata"]["name"] == "llmrec-gateway-writer"]
    gateway = next(d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmrec-gateway")
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--config" and args[1].startswith("/etc/llmrec/")
    hpa = next(d for d in rendered if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llmrec-gateway"
    configmap = next(d for d in rendered if d["kind"] == "ConfigMap")
    name = Path(args[1]).name
    (tmp_path / name).write_text(configmap["data"][name])
    config = load_config(tmp_path / name)
    assert config.index_backend == "milvus" and config.milvus.uri.startswith("http://")
    assert not config.read_only and not config.persist and config.auth.enabled and config.tls.enabled
    assert config.host == "0.0.0.0" and Path(config.index).is_absolute()
