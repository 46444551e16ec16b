"""`python -m train.data` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "train.data", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-cache")


def test_stats_table(cache: Path) -> None:
    out = _run("stats", "ml-100k", "--cache-dir", str(cache))
    assert out.returncode == 0, out.stderr
    lines = dict(
        line.split(None, 1) for line in out.stdout.splitlines() if line.startswith(("users", "items"))
    )
    assert lines == {"users": "943", "items": "1,349"}
    assert "interactions" in out.stdout and "99,287" in out.stdout and "p90" in out.stdout


def test_stats_json_and_prepare(cache: Path) -> None:
    out = _run("stats", "ml-100k", "--cache-dir", str(cache), "--k-core", "10", "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["sequence_length"]["min"] >= 10
    assert isinstance(stats["interactions"], int) and stats["items"] < 1349  # 10-core drops more items
    assert set(stats["sequence_length"]) == {"min", "p25", "p50", "p75", "p90", "max", "mean"}
    assert stats["density"] == pytest.approx(stats["interactions"] / (stats["users"] * stats["items"]))

    out = _run("prepare", "ml-100k", "--cache-dir", str(cache), "--k-core", "10")
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert folder.parent == cache / "datasets" and (folder / "manifest.json").is_file()
    assert json.loads((folder / "manifest.json").read_text())["counts"]["users"] == stats["users"]


def test_bad_source_is_one_line_and_exit_2(cache: Path) -> None:
    out = _run("stats", "no-such-dataset", "--cache-dir", str(cache))
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "no-such-dataset" in out.stderr and "Traceback" not in out.stderr


def test_help() -> None:
    out = _run("stats", "--help")
    assert out.returncode == 0 and "--k-core" in out.stdout and "--min-rating" in out.stdout


def test_sample_histories_are_the_test_time_histories(cache: Path, tmp_path: Path) -> None:
    from train.data import DataConfig, load_dataset

    out = tmp_path / "samples" / "histories.json"
    run = _run("sample-histories", "ml-100k", "--cache-dir", str(cache), "--users", "3", "--seed", "0",
               "--out", str(out))
    assert run.returncode == 0, run.stderr
    samples = json.loads(out.read_text())
    data = load_dataset("ml-100k", DataConfig(), cache_dir=cache)
    test_history = {data.user_ids[int(data.test.seq_index[i])]: data.test.history(i).tolist()
                    for i in range(len(data.test))}
    assert len(samples) == 3 and len({s["user"] for s in samples}) == 3
    for sample in samples:
        assert set(sample) == {"user", "history"}
        # the held-out test item is not in it; items are named by MovieLens's own movieIds (the catalogue ids)
        assert sample["history"] == [data.item_ids[i] for i in test_history[sample["user"]]]
        assert all(isinstance(i, str) and 1 <= int(i) <= 1682 for i in sample["history"])
    again = tmp_path / "again.json"
    assert _run("sample-histories", "ml-100k", "--cache-dir", str(cache), "--out", str(again)).returncode == 0
    assert again.read_text() == out.read_text()  # defaults: 3 users, seed 0, the same draw every time


def test_sample_histories_bad_count_is_exit_2(cache: Path, tmp_path: Path) -> None:
    out = _run("sample-histories", "ml-100k", "--cache-dir", str(cache), "--users", "0", "--out",
               str(tmp_path / "s.json"))
    assert out.returncode == 2 and "--users" in out.stderr and not (tmp_path / "s.json").exists()
