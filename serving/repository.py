"""The model repository export wrote: its manifest (`llmrec.json`) and the check of its files.

Both the gateway (before running the models in-process) and the Triton launcher
(before every start, restarts included) verify the repository against the sha256
that export recorded. The check fails closed: a repository without `llmrec.json`
is refused (unless the operator says `allow_unverified`), and so is any file the
manifest does not list, since Triton and the Python backend execute what they find
(`model.py`, a plan, a shared library). A half-copied, edited or extended model is
refused, not served. Bytecode is the one exception: Triton's Python backend writes
`__pycache__/model.*.pyc` beside every `model.py` it imports, and a planted one
would run instead of the verified source, so the Triton launcher and the gateway
delete every `__pycache__` folder before they verify and start (Python rebuilds
them from the verified sources); the in-process backend writes none.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from llmrec.files import sha256_file
from llmrec.manifests import REPOSITORY_KEPT_FILES, REPOSITORY_MANIFEST, RepositoryManifest

logger = logging.getLogger("llmrec.serving")

UNLISTED_ROOT_FILES = frozenset({REPOSITORY_MANIFEST, *REPOSITORY_KEPT_FILES})


class UnverifiedRepository(ValueError):
    """A model repository whose files cannot be, or are not, what export recorded."""


def remove_bytecode(repository: str | Path) -> int:
    """Delete every __pycache__ folder of the repository (see the module docstring); returns how many."""
    folders = [p for p in Path(repository).rglob("__pycache__") if p.is_dir() and not p.is_symlink()]
    for folder in folders:
        shutil.rmtree(folder)
    return len(folders)


def verify_repository(repository: str | Path, allow_unverified: bool = False) -> int:
    """Check every file of the repository against llmrec.json before the models are used; returns the count.

    Raises UnverifiedRepository naming each file that is missing, changed or not listed, and for a repository
    without llmrec.json unless `allow_unverified` (then it only logs a warning and returns 0).
    """
    root = Path(repository)
    manifest = RepositoryManifest.read(root)
    if manifest is None:
        if allow_unverified:
            logger.warning("model repository %s has no %s: its files are served unverified (allow_unverified)",
                           root, REPOSITORY_MANIFEST)
            return 0
        raise UnverifiedRepository(
            f"model repository {root} has no {REPOSITORY_MANIFEST}, so its files cannot be verified: write it with "
            "`python -m export.onnx repository`, or allow an unverified repository explicitly (gateway config "
            "allow_unverified: true, `python -m serving triton --allow-unverified`)")
    problems = []
    for name, digest in sorted(manifest.files.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} differs from its sha256 in {REPOSITORY_MANIFEST}")
    for path in sorted(p for p in root.rglob("*") if not p.is_dir()):
        name = path.relative_to(root).as_posix()
        if name not in manifest.files and name not in UNLISTED_ROOT_FILES:
            problems.append(f"{name} is not listed in {REPOSITORY_MANIFEST} (Triton could load or execute it)")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise UnverifiedRepository(f"model repository {root} does not match its manifest: {shown}; export it "
                                   "again (or remove the extra files)")
    return len(manifest.files)
