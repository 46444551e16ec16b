"""The serving side: Triton process, item index, gRPC gateway (never imports torch, nor anything from train/).

`HelpFormatter` lives here, the package with the strictest import rule, so that every CLI of the project
(train, export, serving) shares one --help style.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the module docstring's layout (examples) and shows every option's default, unless the
    help text already says it or there is none (None, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)
