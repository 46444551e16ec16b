"""`load_dataset`: resolve a source, process it once, and reuse the cached result."""

from __future__ import annotations

import logging
from pathlib import Path

from .atomic import read_atomic
from .cache import (
    cache_folder,
    cache_key,
    default_cache_dir,
    discard,
    load_cached,
    matches,
    new_manifest,
    read_manifest,
    save_dataset,
    source_fingerprint,
)
from .dataset import SequenceData
from .llm2rec_layout import read_llm2rec
from .processing import DataConfig, process
from .sources import ATOMIC, LLM2REC, Source, resolve_source

logger = logging.getLogger("llmrec.data")


def parameters_for(source: Source, config: DataConfig) -> dict:
    """The parameters that shape the processed data (the LLM2Rec layout is taken as is: none)."""
    return config.to_dict() if source.format == ATOMIC else {}


def build_dataset(source: Source, config: DataConfig) -> SequenceData:
    """Process a resolved source without touching the cache."""
    if source.format == ATOMIC:
        return process(read_atomic(source.folder, source.name, config.allow_file_order), config)
    if source.format == LLM2REC:
        if config != DataConfig():
            logger.warning("%s: LLM2Rec splits are used as is; DataConfig %s is ignored", source.name, config)
        return read_llm2rec(source.folder, source.name)
    raise ValueError(f"unknown source format {source.format!r}")


def load_dataset(
    source: str | Path,
    config: DataConfig | None = None,
    cache_dir: str | Path | None = None,
) -> SequenceData:
    """Load a processed dataset, building and caching it on first use.

    `source` is a built-in name (`ml-100k`), a RecBole atomic folder (or `.inter`
    file) or an LLM2Rec folder. `config` defaults to `DataConfig()`. The cache
    lives under `cache_dir` (default `$LLMREC_CACHE` or `~/.cache/llmrec`) and is
    reused only while the source files' checksums and the parameters match.
    """
    return load_dataset_with_folder(source, config, cache_dir)[0]


def load_dataset_with_folder(
    source: str | Path,
    config: DataConfig | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[SequenceData, Path]:
    """`load_dataset` that also returns the cache folder holding the result."""
    config = config or DataConfig()
    resolved = resolve_source(source)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fingerprint = source_fingerprint(resolved)
    parameters = parameters_for(resolved, config)
    key = cache_key(fingerprint, parameters)
    folder = cache_folder(root, resolved.name, key)

    if folder.exists():
        if matches(read_manifest(folder), fingerprint, parameters):
            try:
                data = load_cached(folder)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("dataset cache %s is unreadable (%s); rebuilding", folder, exc)
                discard(folder)
            else:
                logger.info("dataset cache hit: %s", folder)
                return data, folder
        else:
            logger.warning("dataset cache %s does not match its source or parameters; rebuilding", folder)
            discard(folder)

    data = build_dataset(resolved, config)
    manifest = new_manifest(fingerprint, parameters, key, data)
    folder = save_dataset(data, folder, manifest)
    data.manifest = read_manifest(folder) or manifest
    logger.info("dataset cache built: %s", folder)
    return data, folder
