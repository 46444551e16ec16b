"""What every command line of the project shares: one --help style and `--config FILE.yaml`.

The YAML keys of a config file are the dataclass config's field names (and the command's other options by their
long name), so a config file, a `--flag` and the Python dataclass all say the same thing. Flags given on the
command line win over the file; the file wins over the built-in defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the module docstring's layout (examples) and shows every option's default, unless the
    help text already says it or there is none (None, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def read_yaml_mapping(path: str | Path, name: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ValueError naming `name` (the option or file it came from)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name} {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{name} {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a `--config` file, keys normalised to field names (dashes -> underscores)."""
    return {str(key).replace("-", "_"): value for key, value in read_yaml_mapping(path, "--config").items()}


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="settings from a YAML file (keys = the config fields / long option names); "
                             "flags given here override it")


def apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
    """Set `parser`'s defaults from the `--config` file named in `argv`, refusing keys it has no option for."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return
    try:
        values = read_config_file(known.config)
    except ValueError as exc:
        parser.error(str(exc))
    dests = {action.dest for action in parser._actions} - {"help", "config"}
    unknown = sorted(set(values) - dests)
    if unknown:
        parser.error(f"--config {known.config}: unknown key(s) {unknown}; known: {sorted(dests)}")
    parser.set_defaults(**values)


def add_force_option(parser: argparse.ArgumentParser) -> None:
    """--force: write into an --out folder this tool did not write (see llmrec.files.refuse_foreign_folder)."""
    parser.add_argument("--force", action="store_true",
                        help="write into --out even when it is a non-empty folder this tool did not write")
