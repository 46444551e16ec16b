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
