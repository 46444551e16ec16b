"""`--config FILE.yaml`: dataclass field names as keys, flags override the file, unknown keys are refused."""

from __future__ import annotations

import json

import pytest

from llmrec.cli import apply_config_file
from train.srs.__main__ import main as srs_main
from train.srs.__main__ import parser as srs_parser
from train.srs.config import SRSConfig


def parse(argv: list[str]):
    p = srs_parser()
    apply_config_file(p, argv)
    return p.parse_args(argv)


def test_file_sets_defaults_and_flags_win(tmp_path):
    config = tmp_path / "srs.yaml"
    config.write_text("hidden_size: 32\nmax-len: 20\nexclude_history: true\nseeds: [7]\n")
    args = parse(["--config", str(config)])
    assert (args.hidden_size, args.max_len, args.exclude_history, args.seeds) == (32, 20, True, [7])
    args = parse(["--config", str(config), "--hidden-size", "16", "--no-exclude-history"])
    assert (args.hidden_size, args.max_len, args.exclude_history) == (16, 20, False)
    assert parse([]).hidden_size is None  # without a file or flag the preset's value stands
    assert SRSConfig.preset(parse([]).preset).hidden_size == SRSConfig().hidden_size


@pytest.mark.parametrize("text, message", [
    ("hiden_size: 32\n", "unknown key(s) ['hiden_size']"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("a: [1,\n", "not valid YAML"),
])
def test_bad_files_are_refused_naming_the_problem(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse(["--config", str(config)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_training_reads_the_file(tmp_path, planted_folder):
    config = tmp_path / "srs.yaml"
    config.write_text(f"dataset: {planted_folder}\nhidden_size: 8\nffn_size: 8\nnum_heads: 1\nmax_len: 6\n"
                      f"max_epochs: 1\nseeds: [3]\nout: {tmp_path / 'out'}\ncache_dir: {tmp_path / 'cache'}\n")
    assert srs_main(["--config", str(config), "--quiet"]) == 0
    saved = json.loads((tmp_path / "out" / "seed-3" / "config.json").read_text())
    assert (saved["srs"]["hidden_size"], saved["srs"]["max_len"], saved["srs"]["max_epochs"]) == (8, 6, 1)
