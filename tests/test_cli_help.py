"""Every command of the three CLIs (`python -m train`, `python -m export.onnx` / `export.index`, `python -m
serving`) explains every option in --help and shows its default, so --help is the reference of the settings."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator

import pytest

PARSERS = {
    "python -m train data": "train.data.__main__:_parser",
    "python -m train srs": "train.srs.__main__:parser",
    "python -m train stages": "train.stages.__main__:parser",
    "python -m train embed": "train.embed:parser",
    "python -m train report": "train.report:build_parser",
    "python -m export.onnx": "export.onnx.__main__:parser",
    "python -m export.index": "export.index:parser",
    "python -m serving": "serving.__main__:build_parser",
}


def build(target: str) -> argparse.ArgumentParser:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)()


def commands(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every sub-command below it."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prog} {name}")


def problems(parser: argparse.ArgumentParser) -> list[str]:
    """Options whose --help line says nothing, or hides a default the option really has."""
    formatter = parser._get_formatter()
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        shown = formatter._expand_help(action) if action.help else ""
        if not shown.strip():
            found.append(f"{name}: no help text")
        elif action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and "default" not in shown:
            found.append(f"{name}: default {action.default!r} not shown")
        elif "(default: None)" in shown or "(default: False)" in shown:
            found.append(f"{name}: says '(default: None/False)' instead of what leaving it out means")
    return found


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_is_explained_with_its_default(prog):
    report = {name: found for name, parser in commands(build(PARSERS[prog]), prog) if (found := problems(parser))}
    assert not report, report


def test_stage_help_lists_each_profile_value():
    """A stage's tunable flags default to its profile: --help names the value in every profile."""
    from train.stages import CSFTConfig

    stages = dict(commands(build(PARSERS["python -m train stages"]), "stages"))
    text = stages["stages csft"].format_help()
    expected = ", ".join(f"{b} {CSFTConfig.profile('paper', b).steps}" for b in ("full", "cpu-small", "demo"))
    assert "".join(expected.split()) in "".join(text.split())  # wrapped lines joined


def test_every_console_script_is_installed_and_answers_help():
    """pyproject's [project.scripts] are the `python -m` entry points under a name; each is on the venv's PATH."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"llmrec-train", "llmrec-export", "llmrec-index", "llmrec-serve"}
    for name in scripts:
        run = subprocess.run([str(Path(sys.executable).parent / name), "--help"], capture_output=True, text=True,
                             timeout=120)
        out = run.stdout + run.stderr
        assert run.returncode == 0 and ("usage" in out.lower() or "COMMAND" in out), (name, out)
