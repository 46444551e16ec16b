"""`python -m train.stages`: stages and the llm2rec chain from the command line, clean errors."""

from __future__ import annotations

import json

import pytest

from train.stages.__main__ import main


def _args(tiny_dir, planted_folder, tmp_path, *extra):
    return ["--embedder", str(tiny_dir("llama")), "--dataset", str(planted_folder), "--k-core", "5",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet", "--budget", "demo", *extra]


def test_llm2rec_chain_runs_and_skips_finished_stages(tiny_dir, planted_folder, tmp_path, capsys):
    argv = ["llm2rec", *_args(tiny_dir, planted_folder, tmp_path, "--out", str(tmp_path / "emb"), "--steps", "2",
                              "--batch-size", "4", "--eval-every", "0", "--patience", "0")]
    assert main(argv) == 0
    stages = [json.loads((tmp_path / "emb" / s / "stage.json").read_text()) for s in ("csft", "mntp",
                                                                                       "item-contrastive")]
    assert [s["steps"] for s in stages] == [2, 2, 2] and stages[0]["config"]["item_text"] == "title"
    assert stages[1]["input_embedder"] == str((tmp_path / "emb" / "csft" / "embedder").resolve())
    assert stages[2]["input_embedder"] == str((tmp_path / "emb" / "mntp" / "embedder").resolve())
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped") == 3


def test_llm2rec_chain_can_end_after_a_stage(tiny_dir, planted_data, tmp_path):
    from train.stages.pipeline import run_llm2rec

    steps = {"steps": 2, "batch_size": 4}
    results = run_llm2rec(str(tiny_dir("llama")), planted_data, tmp_path / "emb", "paper", "demo",
                          {name: steps for name in ("csft", "mntp")}, until="mntp", progress=False, device="cpu")
    assert [r["stage"] for r in results] == ["csft", "mntp"]
    assert (tmp_path / "emb" / "mntp" / "stage.json").is_file() and not (tmp_path / "emb" / "item-contrastive").exists()
    with pytest.raises(ValueError, match="until must be one of"):
        run_llm2rec(str(tiny_dir("llama")), planted_data, tmp_path / "emb", "paper", "demo", until="scft")


@pytest.mark.parametrize(("extra", "message"), [
    (["mntp", "--steps", "-1"], "steps must be"),
    (["item-contrastive", "--batch-size", "1"], "batch_size must be >= 2"),
    (["csft", "--embedder", "/nonexistent/model"], "cannot load embedder"),
    (["csft", "--dataset", "/nonexistent/data"], ""),
])
def test_bad_input_is_one_clean_line(tiny_dir, planted_folder, tmp_path, capsys, extra, message):
    command, *rest = extra
    code = main([command, *_args(tiny_dir, planted_folder, tmp_path, "--out", str(tmp_path / "o")), *rest])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["csft", "--out", "x", "--profile", "huge"],
                                  ["csft", "--out", "x", "--budget", "huge"],
                                  ["csft", "--out", "x", "--history", "x"], ["csft", "--out", "x", "--nope", "1"]])
def test_argparse_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_config_file_sets_stage_fields_and_flags_win(tiny_dir, planted_folder, tmp_path, capsys):
    config = tmp_path / "csft.yaml"
    config.write_text("steps: 2\nbatch_size: 4\nhistory: 3\neval_every: 1\neval_samples: 4\n")
    argv = ["csft", *_args(tiny_dir, planted_folder, tmp_path, "--out", str(tmp_path / "csft"), "--config",
                           str(config), "--history", "4")]
    assert main(argv) == 0
    stage = json.loads((tmp_path / "csft" / "stage.json").read_text())
    assert (stage["steps"], stage["config"]["batch_size"], stage["config"]["history"]) == (2, 4, 4)
    assert [e["step"] for e in stage["evaluations"]] == [1, 2] and stage["held_out"] == 4
    config.write_text("histori: 3\n")
    with pytest.raises(SystemExit) as exc:
        main([*argv[:-2], "--out", str(tmp_path / "other")])
    assert exc.value.code == 2 and "unknown key(s) ['histori']" in capsys.readouterr().err
