"""`python -m serving demo` against the tiny deployment (tests/serving/deployment.py): the gateway and a
managed Triton started as child processes, live calls printed, both stopped by PID at the end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _deployment_module():
    import importlib.util

    name = "llmrec_gateway_deployment"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("deployment.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


DEP = _deployment_module()


@pytest.fixture(scope="module")
def deployment(planted_data, tmp_path_factory):
    # the same folder as test_serving_gateway.py's fixture: built once per session
    return DEP.build_deployment(tmp_path_factory.getbasetemp() / "llmrec-gateway-deployment", planted_data.num_items)


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "serving", "demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_prints_recommendations_adds_and_removes_an_item_and_stops(deployment, planted_data, tmp_path):
    from train.data.__main__ import sample_histories

    samples = sample_histories(planted_data, users=3, seed=0)
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(samples))
    new_title = deployment.titles[5]  # the text of item 5: its nearest catalogue item must be item 5
    run = _demo("--requests", str(requests), "--model-repository", str(deployment.repository), "--index",
                str(deployment.index), "--title", new_title, "--genres", "Drama", "--startup-timeout", "120")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout

    # the three users: their last 5 titles, then the top-10 = the offline torch answer
    srs = DEP.load_srs(deployment)
    for sample in samples:
        block = out.split(f"\nuser {sample['user']}: ", 1)[1].split("\n\n", 1)[0]
        for item in sample["history"][-5:]:
            assert deployment.titles[item] in block
        ids, scores = DEP.offline_top_k(srs, sample["history"], 10, exclude_history=True)
        ranked = re.findall(r"^\s+(\d+)\. (.+?)\s+(-?\d+\.\d{3})$", block.split("recommendations", 1)[1], re.M)
        assert [title.strip() for _, title, _ in ranked] == [deployment.titles[i] for i in ids]
        assert [float(score) for _, _, score in ranked] == pytest.approx(list(scores), abs=2e-3)

    # the new item: upserted with the next id, used in a history, ranked, deleted again
    new_id = planted_data.num_items + 1
    assert f"UpsertItems -> id {new_id}, the index holds {new_id} items" in out
    assert f"(cosine of item vectors): {deployment.titles[5]} [id 5]" in out
    assert re.search(r"the new item (ranks #\d+ of|is not in the top)", out)
    assert f"DeleteItems -> 1 deleted, the index holds {planted_data.num_items} items; GetItems({new_id}) -> " \
           "missing" in out
    for call in ("Recommend", "GetItems", "EmbedItems", "UpsertItems", "DeleteItems"):
        assert re.search(rf"^\s+{call}\s+\d+\s+\d+\.\d", out, re.M), call

    # both processes gone, stopped by PID
    stopped = re.search(r"gateway pid (\d+) stopped \(exit code 0\), Triton pid (\d+) gone", out)
    assert stopped, out[-500:]
    assert not _alive(int(stopped.group(1))) and not _alive(int(stopped.group(2)))


def test_demo_bad_requests_file_is_exit_2_before_starting_anything(deployment, tmp_path):
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"user": "1", "history": []}]))
    run = _demo("--requests", str(requests), "--model-repository", str(deployment.repository), "--index",
                str(deployment.index))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("error: --requests") and "Traceback" not in run.stderr


def test_demo_module_never_imports_torch():
    code = "import sys, serving.__main__ as m; m.build_parser(); print('torch' in sys.modules, 'train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
