"""The stage registry (LLM2Rec's CSFT, MNTP, item contrastive; LLMEmb's SCFT) and LLM2Rec's chain: CSFT -> MNTP ->
item contrastive, each from the previous embedder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.dataset import SequenceData
from .contrastive import ContrastiveConfig, ContrastiveStage
from .cooccurrence import CooccurrenceConfig, CooccurrenceStage
from .csft import CSFTConfig, CSFTStage
from .loop import EMBEDDER_DIR, run_stage
from .mntp import MNTPConfig, MNTPStage
from .scft import SCFTConfig, SCFTStage

logger = logging.getLogger("llmrec.stages")

STAGES: dict[str, tuple[type, type]] = {
    "csft": (CSFTStage, CSFTConfig),
    "mntp": (MNTPStage, MNTPConfig),
    "item-contrastive": (ContrastiveStage, ContrastiveConfig),
    "scft": (SCFTStage, SCFTConfig),
    "co-occurrence": (CooccurrenceStage, CooccurrenceConfig),
}
LLM2REC_ORDER = ("csft", "mntp", "item-contrastive")


def make_stage(name: str, profile: str = "paper", budget: str = "full", **overrides: Any) -> Any:
    """A stage object with the named profile's config at the named budget and `overrides` (None values ignored)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; one of {sorted(STAGES)}")
    stage_cls, config_cls = STAGES[name]
    return stage_cls(config_cls.profile(profile, budget, **overrides))


def run_llm2rec(source: str, data: SequenceData, out: str | Path, profile: str = "paper", budget: str = "full",
                overrides: dict[str, dict[str, Any]] | None = None, until: str | None = None,
                **kwargs: Any) -> list[dict[str, Any]]:
    """Run the three stages into out/<stage>/, each starting from the previous one's embedder; finished stages
    are skipped, an interrupted one resumes. `overrides` maps stage name -> config overrides; `until` ends the
    chain after that stage."""
    if until is not None and until not in LLM2REC_ORDER:
        raise ValueError(f"until must be one of {LLM2REC_ORDER}, got {until!r}")
    out = Path(out)
    results = []
    order = LLM2REC_ORDER if until is None else LLM2REC_ORDER[:LLM2REC_ORDER.index(until) + 1]
    for name in order:
        stage = make_stage(name, profile, budget, **(overrides or {}).get(name, {}))
        result = run_stage(stage, source, data, out / name, **kwargs)
        results.append(result)
        if result.get("status") == "stopped":
            break
        source = str(out / name / EMBEDDER_DIR)
    logger.info("llm2rec_done", extra={"out": str(out), "final": source})
    return results
