"""The embedder training stages: LLM2Rec's CSFT, MNTP and item-level contrastive learning, LLMEmb's SCFT and
the item co-occurrence stage.

Each stage is a resumable command (`python -m train.stages {csft,mntp,item-contrastive,llm2rec}`)
with a dataclass config holding the paper's defaults and `cpu-small` / `demo` profiles; all of
them run through the same loop (`loop.run_stage`). Out folder layout of a stage:
  log.jsonl      one JSON line per logging step (step, loss, lr, seconds, elapsed)
  checkpoint/    while training: trainable.safetensors, optimizer.safetensors, state.json
  embedder/      the trained embedder (`ItemEmbedder.save`, merged weights)
  stage.json     stage, config, input embedder, dataset key, steps, final loss, wall time
"""

from .common import embedder_checkpoint_dir, embedder_hash
from .config import PROFILE_NAMES, StageConfig, TextStageConfig
from .contrastive import ContrastiveConfig, ContrastiveStage
from .csft import CSFTConfig, CSFTStage
from .loop import run_stage
from .mntp import MNTPConfig, MNTPStage
from .pipeline import LLM2REC_ORDER, STAGES, make_stage, run_llm2rec

__all__ = [
    "LLM2REC_ORDER",
    "PROFILE_NAMES",
    "STAGES",
    "CSFTConfig",
    "CSFTStage",
    "ContrastiveConfig",
    "ContrastiveStage",
    "MNTPConfig",
    "MNTPStage",
    "StageConfig",
    "TextStageConfig",
    "embedder_checkpoint_dir",
    "embedder_hash",
    "make_stage",
    "run_llm2rec",
    "run_stage",
]
