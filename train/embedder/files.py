"""Atomic folder replacement for the converted base model and for checkpoints.

A reader (another stage, another process) must never see a half-written model
folder: everything is written into a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

logger = logging.getLogger("llmrec.embedder")


def replace_folder(new: Path, target: Path) -> None:
    """Rename the complete folder `new` to `target`; an existing target is swapped out and deleted afterwards.

    If another process renames its folder into place at the same moment, that one is kept and `new` is left
    for the caller to delete (both writers produce the same content).
    """
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}-{time.time_ns()}")
        try:
            target.rename(old)
        except OSError:
            old = None
    try:
        new.rename(target)
    except OSError:
        logger.info(json.dumps({"event": "folder_written_concurrently", "folder": str(target)}))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
