"""`ItemEmbedder`: a decoder LLM that turns item texts into vectors.

It keeps the whole causal LM, LM head included, because the stages need more
than embeddings: CSFT trains next-title generation and MNTP predicts masked
tokens, both from logits, under the same attention mode as the embeddings.
The attention mode (bidirectional or causal), tokenisation (template,
truncation, EOS) and pooling live here and nowhere else, so every stage,
the offline embedding export and the ONNX export read texts the same way.

Checkpoint layout (`save`/`load`), format "llmrec.embedder/1":
  config.json    {"format", "embedder": EmbedderConfig, "base": {name, path, architecture, model_type,
                  hidden_size}, "weights": "model" | "adapter", "lora_merged", "eos_token_id", "pad_token_id",
                  "dtype"}
  model/         merged full HF model (safetensors) + tokenizer: a complete folder for Optimum/ONNX export
  adapter/       or: an unmerged peft LoRA adapter, applied to the base named in config.json on load
  tokenizer/     the tokenizer with the chosen EOS/pad (what `load` uses)
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from llmrec.files import replace_folder

from .attention import model_inputs
from .base import load_causal_lm, load_tokenizer, pick_device_dtype, resolve_base
from .config import EmbedderConfig
from .lora import add_lora, is_peft, merged_state_dict
from .pooling import pool

logger = logging.getLogger("llmrec.embedder")

FORMAT = "llmrec.embedder/1"
CONFIG_FILE = "config.json"


class ItemEmbedder(torch.nn.Module):
    """Texts -> pooled last hidden states [B, D] of a HF causal LM (optionally with LoRA adapters).

    Build with `from_base(config)` or `load(dir)`; both return the module in eval
    mode (call `.train()` in a training stage: dropout, LoRA dropout).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        config: EmbedderConfig,
        eos_token_id: int,
        base_path: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model  # the HF causal LM, or a peft model wrapping it
        self.tokenizer = tokenizer
        self.config = config
        self.eos_token_id = int(eos_token_id)
        self.base_path = base_path
        self.lora_merged = False

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_base(
        cls,
        config: EmbedderConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | Path | None = None,
    ) -> ItemEmbedder:
        """A fresh embedder on the base LLM named by `config.base` (LoRA added if `config.lora.enabled`)."""
        config = config or EmbedderConfig()
        picked_device, picked_dtype = pick_device_dtype()
        device = torch.device(device) if device is not None else picked_device
        dtype = dtype or picked_dtype
        t0 = time.perf_counter()
        folder = resolve_base(config.base, cache_dir=cache_dir)
        model = load_causal_lm(folder, device, dtype)
        tokenizer, eos_id = load_tokenizer(folder, model.config)
        embedder = cls(model, tokenizer, config, eos_id, base_path=str(folder.resolve()))
        if config.lora.enabled:
            embedder.apply_lora()
        if config.gradient_checkpointing:
            embedder.set_gradient_checkpointing(True)
        logger.info("embedder_loaded", extra={"base": config.base, "folder": str(folder),
                                              "architecture": embedder.architecture,
                                              "hidden_size": embedder.hidden_size, "device": str(device),
                                              "dtype": str(dtype).replace("torch.", ""),
                                              "seconds": round(time.perf_counter() - t0, 3)})
        return embedder.eval()

    # ----------------------------------------------------------------- properties
    @property
    def causal_lm(self) -> Any:
        """The HF causal LM (inside the peft wrapper when LoRA is applied; LoRA layers are injected in it)."""
        return self.model.get_base_model() if is_peft(self.model) else self.model

    @property
    def is_peft(self) -> bool:
        return is_peft(self.model)

    @property
    def hidden_size(self) -> int:
        return int(self.causal_lm.config.hidden_size)

    @property
    def architecture(self) -> str:
        return type(self.causal_lm).__name__

    @property
    def device(self) -> torch.device:
        return self.causal_lm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The base weights' dtype (LoRA adapters may be kept in float32): the attention mask uses it."""
        return self.causal_lm.get_input_embeddings().weight.dtype

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def adds_bos(self) -> bool:
        """Whether the tokenizer starts every text with BOS (Llama's does, Qwen2's and SmolLM2's GGUF do not):
        mean pooling then leaves that first token out."""
        if not hasattr(self, "_adds_bos"):
            bos = self.tokenizer.bos_token_id
            ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
            self._adds_bos = bos is not None and bool(ids) and ids[0] == bos
        return self._adds_bos

    # ----------------------------------------------------------------- tokenisation
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, unpadded: template, the tokenizer's own special tokens (e.g. BOS), truncation
        to max_length, and EOS appended last when pooling is "eos" (room is kept for it, so it survives
        truncation; not doubled if the tokenizer already ends texts with it)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        append_eos = self.config.appends_eos
        limit = self.config.max_length - 1 if append_eos else self.config.max_length
        formatted = [self.config.format(str(t)) for t in texts]
        if not formatted:
            return []
        ids = self.tokenizer(formatted, add_special_tokens=True, truncation=True, max_length=limit,
                             padding=False)["input_ids"]
        if append_eos:
            ids = [row if row and row[-1] == self.eos_token_id else [*row, self.eos_token_id] for row in ids]
        return [list(row) for row in ids]

    def collate(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-pad token id lists into `input_ids` / `attention_mask` [B, L] (CPU tensors)."""
        length = max((len(row) for row in ids), default=0)
        input_ids = torch.full((len(ids), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """`input_ids` and `attention_mask` [B, L] for `texts`, padded on the right, on the CPU."""
        return self.collate(self.token_ids(texts))

    # ----------------------------------------------------------------- forward passes
    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return model_inputs(input_ids, attention_mask, self.dtype, self.config.attention)

    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, L, D] (after the final norm) under the configured attention mode."""
        decoder = self.causal_lm.get_decoder()
        return decoder(**self._inputs(input_ids, attention_mask), use_cache=False).last_hidden_state

    def forward_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """LM logits [B, L, V] under the configured attention mode (CSFT with causal, MNTP with bidirectional)."""
        return self.causal_lm(**self._inputs(input_ids, attention_mask), use_cache=False).logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled item vectors [B, D] in float32 (L2-normalised if `config.normalize`)."""
        hidden = self.forward_hidden(input_ids, attention_mask)
        # "eos" pools the last valid position, where token_ids() put the EOS; not re-checked here, as a
        # data-dependent branch would stall GPU training steps and break graph export
        vectors = pool(hidden, attention_mask, self.config.pooling, skip_first=self.adds_bos)
        return F.normalize(vectors, dim=-1) if self.config.normalize else vectors

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """Embed `texts` into float32 [N, D], in the order given.

        Texts are batched longest first, so each batch pads to similar lengths
        (and an out-of-memory shows up on the first batch); rows are put back in
        input order. Runs in eval mode without gradients; the mode is restored.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        ids = self.token_ids(texts)
        out = np.empty((len(ids), self.hidden_size), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), tqdm(total=len(ids), disable=not progress, desc="embedding", unit="text") as bar:
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    batch = self.collate([ids[i] for i in rows])
                    vectors = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
                    out[rows] = vectors.float().cpu().numpy()
                    bar.update(len(rows))
        finally:
            self.train(was_training)
        return out

    # ----------------------------------------------------------------- LoRA, memory
    def apply_lora(self) -> ItemEmbedder:
        """Wrap the LLM with LoRA adapters per `config.lora` (targets the model lacks are skipped)."""
        if self.is_peft:
            raise RuntimeError("LoRA adapters are already applied")
        self.model = add_lora(self.model, self.config.lora)
        self.config.lora.enabled = True
        self.lora_merged = False
        if self.config.gradient_checkpointing:
            self.set_gradient_checkpointing(True)
        return self

    def merge_lora(self) -> ItemEmbedder:
        """Fold the adapters into the base weights and drop the peft wrapper (faster inference, plain HF model)."""
        if not self.is_peft:
            raise RuntimeError("no LoRA adapters to merge: call apply_lora() first")
        self.model = self.model.merge_and_unload()
        self.lora_merged = True
        return self

    def set_gradient_checkpointing(self, enabled: bool) -> ItemEmbedder:
        """Recompute activations in backward instead of storing them (non-reentrant: works with frozen inputs)."""
        lm = self.causal_lm
        if enabled:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif lm.is_gradient_checkpointing:
            lm.gradient_checkpointing_disable()
        self.config.gradient_checkpointing = enabled
        return self

    # ----------------------------------------------------------------- checkpoints
    def save(self, directory: str | Path, merge: bool = True) -> Path:
        """Write a checkpoint (layout in the module docstring); returns its folder.

        merge=True writes full merged weights (adapters folded in; the live model
        keeps its adapters); merge=False with LoRA writes only the adapter. The
        folder is written beside the target and renamed into place, replacing an
        older checkpoint only once the new one is complete.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        try:
            weights = "adapter" if self.is_peft and not merge else "model"
            if weights == "adapter":
                self.model.save_pretrained(tmp / "adapter", safe_serialization=True)
            else:
                state = merged_state_dict(self.model) if self.is_peft else None
                self.causal_lm.save_pretrained(tmp / "model", state_dict=state, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp / "model")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            meta = {
                "format": FORMAT,
                "embedder": self.config.to_dict(),
                "base": {
                    "name": self.config.base,
                    "path": self.base_path,
                    "architecture": self.architecture,
                    "model_type": self.causal_lm.config.model_type,
                    "hidden_size": self.hidden_size,
                },
                "weights": weights,
                "lora_merged": self.lora_merged or (self.is_peft and merge),
                "eos_token_id": self.eos_token_id,
                "pad_token_id": self.pad_token_id,
                "dtype": str(self.dtype).replace("torch.", ""),
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            tmp.chmod(0o755)  # mkdtemp makes it private
            replace_folder(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("embedder_saved", extra={"dir": str(directory), "weights": weights})
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | Path | None = None,
        trainable: bool = False,
    ) -> ItemEmbedder:
        """Restore a checkpoint written by `save` (eval mode); `trainable` keeps loaded adapters trainable."""
        directory = Path(directory)
        meta_path = directory / CONFIG_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} is not an embedder checkpoint (no {CONFIG_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
        config = EmbedderConfig.from_dict(meta["embedder"])
        picked_device, picked_dtype = pick_device_dtype()
        device = torch.device(device) if device is not None else picked_device
        dtype = dtype or picked_dtype
        base_path = meta["base"].get("path")
        if meta["weights"] == "model":
            model = load_causal_lm(directory / "model", device, dtype)
        elif meta["weights"] == "adapter":
            from peft import PeftModel

            folder = resolve_base(config.base, cache_dir=cache_dir)
            base = load_causal_lm(folder, device, dtype)
            expected = (meta["base"]["architecture"], meta["base"]["hidden_size"])
            if (type(base).__name__, base.config.hidden_size) != expected:
                raise ValueError(f"base {folder} is {type(base).__name__} (hidden {base.config.hidden_size}), "
                                 f"the adapter in {directory} was trained on {expected}")
            model = PeftModel.from_pretrained(base, str(directory / "adapter"), is_trainable=trainable)
            base_path = str(folder.resolve())
        else:
            raise ValueError(f"{meta_path}: unknown weights kind {meta['weights']!r} (expected 'model' or 'adapter')")
        lm = model.get_base_model() if is_peft(model) else model
        tokenizer, eos_id = load_tokenizer(directory / "tokenizer", lm.config)
        if eos_id != meta["eos_token_id"]:
            raise ValueError(f"{directory}: EOS id {eos_id} differs from the recorded {meta['eos_token_id']}")
        embedder = cls(model, tokenizer, config, eos_id, base_path=base_path)
        embedder.lora_merged = bool(meta.get("lora_merged", False))
        if config.gradient_checkpointing:
            embedder.set_gradient_checkpointing(True)
        return embedder.eval()
