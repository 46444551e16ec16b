"""`--config FILE.yaml` for the train CLIs: the YAML keys are the dataclass config's field names (and the
command's other options by their long name), so a config file, a `--flag` and the Python dataclass all say the
same thing. Flags given on the command line win over the file; the file wins over the built-in defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving import HelpFormatter  # noqa: F401  (every CLI's --help style; serving may import nothing from train)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file, keys normalised to field names (dashes -> underscores)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


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
