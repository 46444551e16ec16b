"""What every stage shares: errors, the input embedder, trainable-parameter setup, dropout, labels and losses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..embedder import FORMAT, EmbedderConfig, ItemEmbedder, LoraSettings
from .config import StageConfig

IGNORE = -100  # label of positions without a loss (prompt, padding, unmasked tokens)
FAST_LOGIT_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})  # logits = lm_head(final hidden), nothing else


class StageError(ValueError):
    """Bad input or an out folder that belongs to another run: reported as one line by the CLIs."""


def embedder_checkpoint_dir(source: str | Path) -> Path | None:
    """The `ItemEmbedder.save` folder named by `source` (the folder itself or a stage's out folder), else None."""
    path = Path(source).expanduser()
    for folder in (path, path / "embedder"):
        meta = folder / "config.json"
        if meta.is_file():
            try:
                if json.loads(meta.read_text()).get("format") == FORMAT:
                    return folder
            except ValueError:
                continue
    return None


def input_identity(source: str | Path) -> str:
    """How a run names its input embedder: "smollm2", or the resolved folder."""
    if str(source) == "smollm2":
        return "smollm2"
    checkpoint = embedder_checkpoint_dir(source)
    return str((checkpoint or Path(source).expanduser()).resolve())


def load_input_embedder(source: str | Path, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, cache_dir: str | Path | None = None,
                        **config_fields: Any) -> ItemEmbedder:
    """An embedder checkpoint (or a stage's out folder) as saved, or a fresh one on a base model
    ("smollm2" or a HF folder) with `EmbedderConfig(**config_fields)`."""
    checkpoint = embedder_checkpoint_dir(source)
    try:
        if checkpoint is not None:
            embedder = ItemEmbedder.load(checkpoint, device=device, dtype=dtype, cache_dir=cache_dir, trainable=True)
            for name, value in config_fields.items():
                setattr(embedder.config, name, value)
            return embedder
        config = EmbedderConfig(base=str(source), **config_fields)
        return ItemEmbedder.from_base(config, device=device, dtype=dtype, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise StageError(f"cannot load embedder {str(source)!r}: {exc}") from None


def prepare_trainable(embedder: ItemEmbedder, config: StageConfig) -> None:
    """LoRA adapters (fresh, per the stage config) or full fine-tuning; unmerged adapters are merged first."""
    if config.lora:
        if not embedder.is_peft:
            targets = list(embedder.config.lora.target_modules)
            embedder.config.lora = LoraSettings(enabled=True, r=config.lora_r, alpha=config.lora_alpha,
                                                dropout=config.lora_dropout, target_modules=targets)
            embedder.apply_lora()
    else:
        if embedder.is_peft:
            embedder.merge_lora()
        embedder.config.lora.enabled = False
        for param in embedder.parameters():
            param.requires_grad_(True)


def trainable_parameters(embedder: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in embedder.named_parameters() if p.requires_grad}


def set_attention_dropout(embedder: ItemEmbedder, p: float) -> float:
    """Set the attention-probability dropout of every attention layer (and the model config); returns the old
    config value. Llama/Qwen2 read `self.attention_dropout` at each forward, copied from the config at build."""
    lm = embedder.causal_lm
    old = float(getattr(lm.config, "attention_dropout", 0.0) or 0.0)
    lm.config.attention_dropout = p
    for module in lm.modules():
        if hasattr(module, "attention_dropout") and isinstance(module.attention_dropout, float | int):
            module.attention_dropout = p
    return old


def shifted_token_loss(embedder: ItemEmbedder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting `labels[:, i]` from the output at position i-1 (-100 = no loss).

    For Llama/Qwen2/Mistral the LM head is applied only at the positions that carry a label (the logits of
    every other position are never needed; SmolLM2's vocabulary is 49k); other models use `forward_logits`.
    """
    targets = labels[:, 1:]
    selected = targets != IGNORE
    if not bool(selected.any()):  # nothing to predict (e.g. no maskable token): a zero loss that keeps the graph
        return embedder.forward_hidden(input_ids, attention_mask).sum() * 0.0
    if embedder.causal_lm.config.model_type in FAST_LOGIT_TYPES:
        hidden = embedder.forward_hidden(input_ids, attention_mask)[:, :-1]
        logits = embedder.causal_lm.get_output_embeddings()(hidden[selected])
    else:
        logits = embedder.forward_logits(input_ids, attention_mask)[:, :-1][selected]
    return F.cross_entropy(logits.float(), targets[selected])


def held_out_loss(embedder: ItemEmbedder, batches: list[dict[str, torch.Tensor]],
                  loss: Any) -> float | None:
    """Mean of `loss(embedder, batch)` over held-out `batches`, weighted by their labelled tokens (by rows when a
    batch has no labels), in eval mode without gradients; None when there is no batch. The mode is restored."""
    if not batches:
        return None
    was_training = embedder.training
    embedder.eval()
    total, weight = 0.0, 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {k: v.to(embedder.device) for k, v in batch.items()}
                labels = batch.get("labels")
                w = float((labels[:, 1:] != IGNORE).sum()) if labels is not None else float(len(batch["input_ids"]))
                if w > 0:
                    total += float(loss(embedder, batch)) * w
                    weight += w
    finally:
        embedder.train(was_training)
    return total / weight if weight else None


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, symmetric: bool = False) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of `a` should match row i of `b` (cosine similarity / tau).

    symmetric=True averages the a->b and b->a directions (CLIP style); False is SimCSE's a->b only.
    """
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2
    return loss


def hash_files(paths: list[Path]) -> str:
    """sha256 over the names and bytes of `paths` (in the given order)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def embedder_hash(source: str | Path, cache_dir: str | Path | None = None) -> str:
    """sha256 of an embedder checkpoint's config and weights, or of a base model folder's config and weights."""
    from ..embedder import resolve_base

    checkpoint = embedder_checkpoint_dir(source)
    if checkpoint is not None:
        files = [checkpoint / "config.json"]
        files += sorted(p for sub in ("model", "adapter") for p in (checkpoint / sub).glob("*.safetensors"))
    else:
        folder = resolve_base(str(source), cache_dir=cache_dir)
        files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    return hash_files([f for f in files if f.is_file()])
