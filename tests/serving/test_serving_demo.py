"""`python -m serving demo` against the tiny deployment (tests/serving/deployment.py): the gateway and a
managed Triton started as child processes, live calls printed, both stopped by PID at the end; --record FILE
holds the same calls, recommendations and rank as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "serving", "demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _alive(pid: int) -> bool:
    """Running: a zombie (exited, waiting for an orphan-reaping parent to collect it) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_prints_recommendations_adds_and_removes_an_item_and_stops(deployment, planted_data, tmp_path):
    from train.data.__main__ import sample_histories

    samples = sample_histories(planted_data, users=3, seed=0)  # the planted dataset's raw ids...
    row_of = {raw: row for row, raw in enumerate(planted_data.item_ids)}
    for sample in samples:  # ...as the deployment's catalogue names those items
        sample["history"] = DEP.keys([row_of[raw] for raw in sample["history"]])
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(samples))
    new_title = deployment.titles[5]  # the text of item 5: its nearest catalogue item must be item 5
    record_file = tmp_path / "out" / "demo-record.json"  # its folder is created
    run = _demo("--requests", str(requests), "--model-repository", str(deployment.repository), "--index",
                str(deployment.index), "--title", new_title, "--genres", "Drama", "--startup-timeout", "120",
                "--record", str(record_file))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert str(record_file) not in out and "--record" not in out  # printed output: the same as without it

    # the three users: their last 5 titles, then the top-10 = the offline torch answer
    srs = DEP.load_srs(deployment)
    for sample in samples:
        block = out.split(f"\nuser {sample['user']}: ", 1)[1].split("\n\n", 1)[0]
        for item in DEP.rows(sample["history"][-5:]):
            assert deployment.titles[item] in block
        ids, scores = DEP.offline_top_k(srs, DEP.rows(sample["history"]), 10, exclude_history=True)
        ranked = re.findall(r"^\s+(\d+)\. (.+?)\s+(-?\d+\.\d{3})$", block.split("recommendations", 1)[1], re.M)
        assert [title.strip() for _, title, _ in ranked] == [deployment.titles[i] for i in ids]
        assert [float(score) for _, _, score in ranked] == pytest.approx(list(scores), abs=2e-3)

    # the new item: upserted with an assigned id, used in a history, ranked, deleted again
    size = planted_data.num_items + 1
    new_id = f"new-{size}"
    assert f"UpsertItems -> id {new_id}, the index holds {size} items" in out
    assert re.search(rf"nearest last: (.+; ){{4}}{re.escape(deployment.titles[5])}\n", out)
    assert re.search(r"the new item (ranks #\d+ of|is not in the top)", out)
    assert f"DeleteItems -> 1 deleted, the index holds {planted_data.num_items} items; GetItems({new_id}) -> " \
           "missing" in out
    for call in ("Recommend", "GetItems", "EmbedItems", "UpsertItems", "DeleteItems"):
        assert re.search(rf"^\s+{call}\s+\d+\s+\d+\.\d", out, re.M), call

    # both processes gone, stopped by PID
    stopped = re.search(r"gateway pid (\d+) stopped \(exit code 0\), Triton pid (\d+) gone", out)
    assert stopped, out[-500:]
    assert not _alive(int(stopped.group(1))) and not _alive(int(stopped.group(2)))

    _check_record(json.loads(record_file.read_text()), out, samples, deployment, srs, new_id, size, stopped)
    assert [p.name for p in record_file.parent.iterdir()] == ["demo-record.json"]  # no temporary file left


def _printed_ranking(block: str) -> list[tuple[str, str]]:
    """(title, score as printed) of the ranked lines of a printed block."""
    return [(title.strip(), score) for _, title, score in
            re.findall(r"^\s+(\d+)\. (.+?)\s+(-?\d+\.\d{3})(?:  <- the new item)?$", block, re.M)]


def _recorded_ranking(items: list[dict]) -> list[tuple[str, str]]:
    assert [item["rank"] for item in items] == list(range(1, len(items) + 1))
    return [(item["title"][:55].strip(), f"{item['score']:.3f}") for item in items]


def _check_record(record, out, samples, deployment, srs, new_id, size, stopped):
    """The record holds what the calls returned: the printed recommendations (ids = the offline answer),
    the new item's rank, every call with its latency (= the printed timings) and status."""
    assert record["format"] == "llmrec.demo-record/1" and record["ok"] is True and record["error"] is None
    assert record["inputs"]["k"] == 10 and record["inputs"]["title"] == deployment.titles[5]
    gateway = record["gateway"]
    assert (gateway["pid"], gateway["triton_pid"]) == (int(stopped.group(1)), int(stopped.group(2)))
    assert record["gateway"]["stopped"] in out
    startup = float(re.search(r"SERVING after (\d+\.\d) s", out).group(1))
    assert record["startup_seconds"] == pytest.approx(startup, abs=0.051)
    assert record["wall_seconds"] >= record["startup_seconds"] > 0

    # users: the same order, histories, the last 5 titles, top-10 ids (offline answer), titles and scores
    assert [u["user"] for u in record["users"]] == [str(s["user"]) for s in samples]
    for sample, user in zip(samples, record["users"], strict=True):
        assert user["history_ids"] == sample["history"] and user["history_length"] == len(sample["history"])
        assert user["recent"] == [{"id": DEP.key(i), "title": deployment.titles[i]}
                                  for i in DEP.rows(sample["history"][-5:])]
        ids, scores = DEP.offline_top_k(srs, DEP.rows(sample["history"]), 10, exclude_history=True)
        assert [item["id"] for item in user["recommendations"]] == DEP.keys(ids)
        assert [item["title"] for item in user["recommendations"]] == [deployment.titles[i] for i in ids]
        assert [item["score"] for item in user["recommendations"]] == pytest.approx(list(scores), abs=2e-3)
        block = out.split(f"\nuser {sample['user']}: ", 1)[1].split("\n\n", 1)[0].split("recommendations", 1)[1]
        assert _recorded_ranking(user["recommendations"]) == _printed_ranking(block)

    # the new item: id, index sizes, nearest catalogue item, its rank as printed, the printed rankings
    new = record["new_item"]
    assert (new["id"], new["index_size"], new["title"], new["genres"]) == (new_id, size, deployment.titles[5],
                                                                          "Drama")
    assert new["user"] == str(samples[0]["user"])
    assert new["nearest"] == {"id": DEP.key(5), "title": deployment.titles[5]}
    assert len(new["similar_history"]) == 5 and new["similar_history"][-1] == new["nearest"]
    printed_rank = re.search(r"the new item ranks #(\d+) of (\d+) items", out)
    if printed_rank:
        assert new["rank"] == int(printed_rank.group(1)) and int(printed_rank.group(2)) == size
    else:
        assert new["rank"] is None and f"is not in the top {new['rank_depth']}" in out
    assert new["rank_depth"] == 100 and new["candidates_ranked"] <= 100
    with_new = out.split("the new item -> top-10:", 1)[1].split("a user who just watched", 1)[0]
    assert _recorded_ranking(new["recommendations_with_new_item"]) == _printed_ranking(with_new)
    with_nearest = out.split("\n  -> the new item", 1)[1].split("\n", 1)[1].split("DeleteItems", 1)[0]
    assert _recorded_ranking(new["ranked_with_nearest"]) == _printed_ranking(with_nearest)
    marked = [i + 1 for i, item in enumerate(new["ranked_with_nearest"]) if item["id"] == new_id]
    assert marked == ([new["rank"]] if new["rank"] is not None and new["rank"] <= 10 else [])
    assert (new["deleted"], new["index_size_after_delete"], new["missing_after_delete"]) == (1, size - 1, True)

    # every call in the order the demo makes them, all OK, latencies = the printed timings table
    per_user = ["GetItems", "Recommend"] * len(samples)
    assert [c["method"] for c in record["calls"]] == per_user + [
        "EmbedItems", "UpsertItems", "Recommend", "GetItems", "Recommend", "DeleteItems", "GetItems"]
    assert all(c["ok"] is True and c["status"] == "OK" and c["ms"] > 0 for c in record["calls"])
    timings = out.split("\ntimings (", 1)[1]
    for method in {c["method"] for c in record["calls"]}:
        ms = [c["ms"] for c in record["calls"] if c["method"] == method]
        row = re.search(rf"^\s+{method}\s+(\d+)\s+(\d+\.\d)\s+(\d+\.\d)\s+(\d+\.\d)$", timings, re.M)
        assert row, method
        n, mean, low, high = int(row.group(1)), *map(float, row.groups()[1:])
        assert n == len(ms)
        assert (sum(ms) / n, min(ms), max(ms)) == pytest.approx((mean, low, high), abs=0.051)


def test_keep_serving_leaves_the_stack_up_for_own_calls_until_sigterm(deployment, tmp_path):
    import signal

    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"user": "1", "history": ["i0", "i1", "i2"]}]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    demo = subprocess.Popen([sys.executable, "-m", "serving", "demo", "--requests", str(requests), "--model-repository",
                             str(deployment.repository), "--index", str(deployment.index), "--keep-serving"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in demo.stdout:  # ends when the demo exits: a failure cannot hang the test
            lines.append(line)
            if line.startswith("still serving on "):
                break
        address = re.match(r"still serving on (\S+);", lines[-1]).group(1)
        pids = [int(p) for p in re.search(r"gateway pid (\d+) at \S+, Triton pid (\d+)", "".join(lines)).groups()]
        call = subprocess.run([sys.executable, "-m", "serving", "client", "--address", address, "recommend",
                               "--history", "i0,i1", "-k", "3"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert call.returncode == 0, call.stderr
        assert len([line for line in call.stdout.splitlines() if re.match(r"\s*\d+\.", line)]) == 3
        assert demo.poll() is None  # still up after the calls
        demo.send_signal(signal.SIGTERM)
        rest = demo.communicate(timeout=120)[0]
    finally:
        if demo.poll() is None:
            demo.kill()  # the gateway it started gets SIGTERM from the kernel (stop_with_parent)
            demo.wait(timeout=60)
    assert demo.returncode == 0
    assert f"gateway pid {pids[0]} stopped" in rest
    assert not any(_alive(pid) for pid in pids)


def test_a_killed_demo_takes_its_gateway_and_triton_with_it(deployment, tmp_path):
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"user": "1", "history": ["i0", "i1", "i2"]}]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    demo = subprocess.Popen([sys.executable, "-m", "serving", "demo", "--requests", str(requests), "--model-repository",
                             str(deployment.repository), "--index", str(deployment.index), "--keep-serving"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("still serving on "):
                break
        pids = [int(p) for p in re.search(r"gateway pid (\d+) at \S+, Triton pid (\d+)", "".join(lines)).groups()]
    finally:
        demo.kill()
        demo.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)


def test_demo_bad_requests_file_is_exit_2_before_starting_anything(deployment, tmp_path):
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"user": "1", "history": []}]))
    record = tmp_path / "record.json"
    run = _demo("--requests", str(requests), "--model-repository", str(deployment.repository), "--index",
                str(deployment.index), "--record", str(record))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("error: --requests") and "Traceback" not in run.stderr
    assert not record.exists()  # bad input: nothing happened, nothing recorded


def test_demo_record_of_a_gateway_that_fails_to_start_says_why(tmp_path):
    repository, index = tmp_path / "repository", tmp_path / "index"
    repository.mkdir()
    index.mkdir()
    (repository / "llmrec.json").write_text("{}")  # records nothing: the gateway refuses it at once
    (index / "manifest.json").write_text("{}")
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"user": "1", "history": ["i0", "i1"]}]))
    record_file = tmp_path / "record.json"
    run = _demo("--requests", str(requests), "--model-repository", str(repository), "--index", str(index),
                "--record", str(record_file), "--startup-timeout", "20")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    record = json.loads(record_file.read_text())
    assert record["ok"] is False and "the gateway exited with code" in record["error"]
    assert record["error"] in run.stderr
    assert record["calls"] == [] and record["users"] == [] and record["new_item"] is None
    assert record["startup_seconds"] is None and record["wall_seconds"] > 0
    assert record["gateway"]["stopped"] in run.stdout and not _alive(record["gateway"]["pid"])


def test_timings_record_every_call_with_its_status():
    import grpc

    from serving.demo import Timings

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    def fail(request, timeout):
        raise Unavailable()

    timings = Timings()
    assert timings.call("GetItems", lambda request, timeout: "items", None, 1.0) == "items"
    with pytest.raises(Unavailable):
        timings.call("Recommend", fail, None, 1.0)
    assert [(c["method"], c["ok"], c["status"]) for c in timings.log] == [("GetItems", True, "OK"),
                                                                           ("Recommend", False, "UNAVAILABLE")]
    assert [c["ms"] for c in timings.log] == [round(timings.calls[m][0], 3) for m in ("GetItems", "Recommend")]


def test_demo_module_never_imports_torch():
    code = "import sys, serving.__main__ as m; m.build_parser(); print('torch' in sys.modules, 'train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
