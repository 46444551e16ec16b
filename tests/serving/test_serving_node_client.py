"""An independent client, written in JavaScript and knowing only the .proto (node_client/conformance.mjs, run by
Node.js with @grpc/grpc-js), against a real gateway and a read replica of the tiny deployment: every malformed
request class of the proto's header gets its status code and a message naming the field, and Recommend, Upsert,
Delete and Get work with the catalogue's own ids. Node.js and the client's packages are installed by `make test`
(`npm ci` in node_client/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serving.gateway import Gateway, config_from_dict

CLIENT = Path(__file__).with_name("node_client")
PROTO = Path(__file__).resolve().parents[2] / "serving" / "proto" / "llmrec" / "v2" / "recommend.proto"
MAX_MESSAGE_BYTES = 16384
TOKEN = "a-token-only-the-node-client-knows"
LIMITS = {"max_history": 50, "max_k": 20, "max_texts": 4, "max_items": 3, "max_text_bytes": 64,
          "max_attributes": 2, "max_filter_ids": 5}

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def run_client(settings: dict, tmp_path: Path) -> tuple[list[dict], dict]:
    if not (CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"the Node.js client's packages are missing: run `npm ci --prefix {CLIENT}` (make test does)")
    path = tmp_path / "client.json"
    path.write_text(json.dumps(settings))
    done = subprocess.run(["node", str(CLIENT / "conformance.mjs"), str(path)], capture_output=True, text=True,
                          timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the client printed nothing (rc {done.returncode}): {done.stderr[-2000:]}"
    return lines[:-1], lines[-1]["summary"]


def config(deployment, **values):
    return config_from_dict({"port": 0, "metrics_port": None, "backend": "onnxruntime", "limits": LIMITS,
                             "model_repository": str(deployment.repository), "index": str(deployment.index),
                             "persist": False, **values})


def test_independent_client_gets_every_status_code_and_works_end_to_end(deployment, tmp_path):
    catalogue = sys.modules["llmrec_gateway_deployment"]  # loaded by the deployment fixture
    (tmp_path / "token").write_text(TOKEN + "\n")
    writer = config(deployment, max_message_bytes=MAX_MESSAGE_BYTES,
                    auth={"enabled": True, "token_file": str(tmp_path / "token")})
    with Gateway(writer) as gateway, Gateway(config(deployment, persist=True, read_only=True)) as replica:
        checks, summary = run_client({
            "address": gateway.address, "replica_address": replica.address, "proto": str(PROTO), "token": TOKEN,
            "limits": LIMITS, "known_ids": catalogue.keys([3, 4, 5]), "max_message_bytes": MAX_MESSAGE_BYTES,
            "deadline_ms": 30000}, tmp_path)
        size_after = len(gateway.pipeline.catalog)
    failed = [c for c in checks if not c["ok"]]
    assert not failed, json.dumps(failed, indent=1)
    codes = {c["got"] for c in checks}
    assert codes >= {"INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                     "OK"}
    assert summary == {"checks": len(checks), "failed": 0} and len(checks) >= 45
    assert size_after == len(deployment.titles) - 1  # its two upserts deleted again
