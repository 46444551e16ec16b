"""The model repository export wrote: its manifest (`llmrec.json`) and the check of its files.

Both the gateway (before running the models in-process) and the Triton launcher
(before every start, restarts included) verify the files against the sha256
that export recorded, so a half-copied or edited model is refused, not served.
"""

from __future__ import annotations

from pathlib import Path

from llmrec.files import sha256_file
from llmrec.manifests import REPOSITORY_MANIFEST, RepositoryManifest


def verify_repository(repository: str | Path) -> int:
    """Check every file listed in llmrec.json against its sha256 before the models are used; returns the count.

    A repository without llmrec.json (written by hand) is not checked; a listed file that is missing or changed
    raises ValueError naming it, so a half-copied or edited model is refused instead of served.
    """
    root = Path(repository)
    manifest = RepositoryManifest.read(root)
    files = manifest.files if manifest is not None else {}
    problems = []
    for name, digest in sorted(files.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} differs from its sha256 in {REPOSITORY_MANIFEST}")
    if problems:
        raise ValueError(f"model repository {root} does not match its manifest: " + "; ".join(problems[:10]))
    return len(files)
