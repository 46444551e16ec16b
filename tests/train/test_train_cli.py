"""`python -m train` dispatches to the package CLIs."""

import subprocess
import sys


def test_dispatches_to_subcommands_and_refuses_unknown_ones(planted_folder, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "train", "data", "stats", str(planted_folder), "--cache-dir",
                         str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "users" in ok.stdout and "120" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "train", "bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command 'bogus'" in bad.stderr
    listing = subprocess.run([sys.executable, "-m", "train"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and all(c in listing.stdout for c in ("data", "srs", "stages", "embed"))
