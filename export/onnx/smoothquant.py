"""SmoothQuant (Xiao et al., 2023) for Llama-style decoders: an exact fp32 rescaling of the torch model,
applied before the ONNX export so that int8 activation quantization sees flatter inputs.

A linear layer y = x W^T is unchanged when input channel j of x is divided by s_j and column j of W is
multiplied by s_j. SmoothQuant picks, per input channel,
    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)
(max|X_j| over calibration tokens, max|W_j| over the column of every linear that reads X), which moves part
of the activation outliers into the weights (alpha 0.5: balanced; higher: more into the weights). The
division by s is folded into whatever produces X, so the rescaled model computes the same function:
  q/k/v_proj     input = input_layernorm(h):           1/s into input_layernorm.weight, s into q/k/v columns
  gate/up_proj   input = post_attention_layernorm(h):  1/s into post_attention_layernorm.weight, s into gate/up
  down_proj      input = act(gate(x)) * up(x):         1/s into up_proj output rows, s into down_proj columns
  o_proj         input = attention output = P V:       1/s into v_proj output rows, s into o_proj columns; with
                 grouped-query attention every query head of a group reads the same v head, so s is shared by
                 the group (computed from the group's maxima)
Only the float values change (rounding: cosine with the original vectors > 0.9999, checked by `smooth`).

Use: `export_smoothed(checkpoint, out, alpha, texts)` writes an export folder like `export_embedder` (its
export.json records the smoothing under "transform"); then quantize it with a `smoothquant` recipe of
export.onnx.quantize. CLI:
  python -m export.onnx.smoothquant --checkpoint runs/r/embedder/item-contrastive --out runs/r/onnx/item_embedder_sq \\
      --smoothquant 0.65 [--dataset ml-100k] [--adapter SRS_SEED_FOLDER]
alpha 0.65 is what the `sq-*` recipes expect: the best of 0.5 / 0.65 / 0.85 in bench/int8_search.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("llmrec.export")

SITES = ("qkv", "o", "gate_up", "down")  # where smoothing can be applied (see the module docstring)
MIN_COSINE = 0.9999
EPS = 1e-5


# ----------------------------------------------------------------------------------------------- statistics
def decoder_layers(decoder: nn.Module) -> list[nn.Module]:
    """The decoder layers of a HF Llama-style model (`.layers` of the decoder, or of its `.model`)."""
    layers = getattr(decoder, "layers", None) or getattr(getattr(decoder, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(decoder).__name__}: no .layers to smooth")
    for i, layer in enumerate(layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        names = [(attn, ("q_proj", "k_proj", "v_proj", "o_proj")), (mlp, ("gate_proj", "up_proj", "down_proj"))]
        if any(m is None or not all(isinstance(getattr(m, n, None), nn.Linear) for n in ns) for m, ns in names):
            raise ValueError(f"layer {i} ({type(layer).__name__}) is not a Llama-style block "
                             "(self_attn.q/k/v/o_proj, mlp.gate/up/down_proj)")
        for norm in ("input_layernorm", "post_attention_layernorm"):
            if type(getattr(layer, norm, None)).__name__ not in ("LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm"):
                raise ValueError(f"layer {i}: {norm} is {type(getattr(layer, norm, None)).__name__}, not an "
                                 "RMSNorm whose weight multiplies its output")
    return list(layers)


@torch.no_grad()
def activation_maxima(embedder: Any, ids: Sequence[Sequence[int]],
                      batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    """Per decoder layer, max |x| per input channel of the inputs of q_proj (= k, v), o_proj, gate_proj (= up)
    and down_proj, over the valid (non-padding) tokens of `ids` run through `embedder` (an ItemEmbedder)."""
    layers = decoder_layers(embedder.causal_lm.get_decoder())
    stats: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    mask: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(i: int, key: str) -> Callable:
        def record(_module: nn.Module, inputs: tuple, _output: Any) -> None:
            x = inputs[0].detach().float()
            valid = mask["m"].to(torch.bool).reshape(-1)
            amax = x.reshape(-1, x.shape[-1])[valid].abs().amax(0)
            stats[i][key] = torch.maximum(stats[i][key], amax) if key in stats[i] else amax
        return record

    for i, layer in enumerate(layers):
        for key, module in (("qkv", layer.self_attn.q_proj), ("o", layer.self_attn.o_proj),
                            ("gate_up", layer.mlp.gate_proj), ("down", layer.mlp.down_proj)):
            hooks.append(module.register_forward_hook(hook(i, key)))
    was_training = embedder.training
    embedder.eval()
    try:
        order = sorted(range(len(ids)), key=lambda k: -len(ids[k]))
        for start in range(0, len(order), batch_size):
            batch = embedder.collate([ids[k] for k in order[start : start + batch_size]])
            mask["m"] = batch["attention_mask"]
            embedder(batch["input_ids"], batch["attention_mask"])
    finally:
        for h in hooks:
            h.remove()
        embedder.train(was_training)
    return stats


def smoothing_scales(act_max: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha); `weights` are the [out, in] matrices reading X."""
    w_max = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).float()
    s = act_max.float().clamp(min=EPS).pow(alpha) / w_max.clamp(min=EPS).pow(1.0 - alpha)
    return s.clamp(min=EPS)


# ----------------------------------------------------------------------------------------------- folding
@torch.no_grad()
def smooth_layer(layer: nn.Module, maxima: dict[str, torch.Tensor], alpha: float, n_heads: int, n_kv: int,
                 sites: Sequence[str] = SITES) -> dict[str, float]:
    """Rescale one decoder layer in place; returns the largest scale per site (for the record)."""
    attn, mlp = layer.self_attn, layer.mlp
    out: dict[str, float] = {}
    if "qkv" in sites:
        linears = (attn.q_proj, attn.k_proj, attn.v_proj)
        s = smoothing_scales(maxima["qkv"], [m.weight for m in linears], alpha)
        layer.input_layernorm.weight.div_(s.to(layer.input_layernorm.weight.dtype))
        for m in linears:
            m.weight.mul_(s.to(m.weight.dtype))
        out["qkv"] = float(s.max())
    if "gate_up" in sites:
        linears = (mlp.gate_proj, mlp.up_proj)
        s = smoothing_scales(maxima["gate_up"], [m.weight for m in linears], alpha)
        layer.post_attention_layernorm.weight.div_(s.to(layer.post_attention_layernorm.weight.dtype))
        for m in linears:
            m.weight.mul_(s.to(m.weight.dtype))
        out["gate_up"] = float(s.max())
    if "down" in sites:
        s = smoothing_scales(maxima["down"], [mlp.down_proj.weight], alpha)
        mlp.up_proj.weight.div_(s[:, None].to(mlp.up_proj.weight.dtype))
        if mlp.up_proj.bias is not None:
            mlp.up_proj.bias.div_(s.to(mlp.up_proj.bias.dtype))
        mlp.down_proj.weight.mul_(s.to(mlp.down_proj.weight.dtype))
        out["down"] = float(s.max())
    if "o" in sites:
        # o_proj input channel (h, d) = sum_t p[h, t] v[h // group, t, d]: one scale per (kv head, d)
        group = n_heads // n_kv
        head_dim = attn.o_proj.weight.shape[1] // n_heads
        x_max = maxima["o"].float().reshape(n_kv, group, head_dim).amax(1)
        w_max = attn.o_proj.weight.abs().amax(0).float().reshape(n_kv, group, head_dim).amax(1)
        s = (x_max.clamp(min=EPS).pow(alpha) / w_max.clamp(min=EPS).pow(1.0 - alpha)).clamp(min=EPS)  # [kv, d]
        attn.v_proj.weight.div_(s.reshape(-1, 1).to(attn.v_proj.weight.dtype))
        if attn.v_proj.bias is not None:
            attn.v_proj.bias.div_(s.reshape(-1).to(attn.v_proj.bias.dtype))
        per_query_head = s[:, None, :].expand(n_kv, group, head_dim).reshape(-1)
        attn.o_proj.weight.mul_(per_query_head.to(attn.o_proj.weight.dtype))
        out["o"] = float(s.max())
    return out


def smooth(embedder: Any, ids: Sequence[Sequence[int]], alpha: float = 0.5, sites: Sequence[str] = SITES,
           layers: Sequence[int] | None = None, check_ids: Sequence[Sequence[int]] | None = None,
           min_cosine: float = MIN_COSINE) -> dict[str, Any]:
    """SmoothQuant-rescale the decoder of `embedder` (an fp32 ItemEmbedder, LoRA merged) in place.

    `ids`: token id lists of calibration texts (the catalogue's item texts); `sites`: a subset of `SITES`;
    `layers`: decoder layer indices to smooth (default all). The item vectors of `check_ids` (default: the
    first 32 calibration texts) are compared before and after: raises RuntimeError when the minimum cosine is
    below `min_cosine` (the rescaling must be exact up to rounding). Returns a description for export.json."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    unknown = set(sites) - set(SITES)
    if unknown:
        raise ValueError(f"unknown smoothing sites {sorted(unknown)}; choose from {SITES}")
    if not ids:
        raise ValueError("smoothing needs calibration token ids")
    if embedder.is_peft:
        raise ValueError("merge LoRA before smoothing (ItemEmbedder.merge_lora)")
    t0 = time.perf_counter()
    decoder = embedder.causal_lm.get_decoder()
    all_layers = decoder_layers(decoder)
    config = embedder.causal_lm.config
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    check = list(check_ids if check_ids is not None else ids[:32])
    before = _vectors(embedder, check)
    maxima = activation_maxima(embedder, ids)
    chosen = range(len(all_layers)) if layers is None else layers
    largest = {i: smooth_layer(all_layers[i], maxima[i], alpha, n_heads, n_kv, sites) for i in chosen}
    after = _vectors(embedder, check)
    cos = float((_unit(before) * _unit(after)).sum(1).min())
    info = {"method": "smoothquant", "alpha": float(alpha), "sites": list(sites),
            "layers": list(chosen) if layers is not None else "all", "calibration_texts": len(ids),
            "min_cosine_vs_unsmoothed": cos,
            "max_scale": {site: max((v[site] for v in largest.values() if site in v), default=None)
                          for site in sites},
            "seconds": round(time.perf_counter() - t0, 1)}
    if cos < min_cosine:
        raise RuntimeError(f"smoothing changed the item vectors: min cosine {cos:.6f} < {min_cosine}")
    logger.info("smoothed", extra=info)
    return info


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def _vectors(embedder: Any, ids: Sequence[Sequence[int]]) -> np.ndarray:
    batch = embedder.collate(ids)
    return embedder(batch["input_ids"], batch["attention_mask"]).float().numpy().astype(np.float64)


def smoothing_transform(alpha: float, texts: Sequence[str], max_texts: int = 256,
                        sites: Sequence[str] = SITES) -> Callable[[Any], dict[str, Any]]:
    """A `transform` for `export_embedder`: smooth the loaded embedder on (an even sample of at most
    `max_texts` of) `texts`, the catalogue's item texts."""
    step = max(1, len(texts) // max_texts)
    sample = list(texts)[::step][:max_texts]

    def transform(embedder: Any) -> dict[str, Any]:
        return smooth(embedder, embedder.token_ids(sample), alpha=alpha, sites=sites)
    return transform


def export_smoothed(checkpoint: str | Path, out: str | Path, alpha: float, texts: Sequence[str],
                    max_texts: int = 256, sites: Sequence[str] = SITES, **export_kwargs: Any) -> dict[str, Any]:
    """`export_embedder` of the SmoothQuant-rescaled checkpoint; returns the manifest (its "transform" holds
    the smoothing). Quantize the result with a recipe whose `smoothquant` is `alpha`."""
    from .embedder import export_embedder

    return export_embedder(checkpoint, out, transform=smoothing_transform(alpha, texts, max_texts, sites),
                           **export_kwargs)


def smoothing_of(model_path: str | Path) -> dict[str, Any] | None:
    """The smoothing recorded in the export.json beside `model_path` (None: not smoothed or no manifest)."""
    manifest = Path(model_path).parent / "export.json"
    if not manifest.is_file():
        return None
    transform = json.loads(manifest.read_text()).get("transform")
    return transform if transform and transform.get("method") == "smoothquant" else None


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="embedder checkpoint (or a stage's out folder)")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--smoothquant", type=float, default=0.65, metavar="ALPHA",
                   help="migration strength alpha (the sq-* recipes of export.onnx.quantize expect 0.65)")
    p.add_argument("--dataset", default="ml-100k", help="dataset whose item titles calibrate the smoothing")
    p.add_argument("--max-texts", type=int, default=256, help="calibration texts (an even sample of the titles)")
    p.add_argument("--sites", nargs="+", default=list(SITES), choices=SITES)
    p.add_argument("--adapter", default=None, help="SRS checkpoint: put its item adapter in the graph")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from train.data import load_dataset
    from train.embed import item_texts

    texts = item_texts(load_dataset(args.dataset), "title")[1:]
    manifest = export_smoothed(args.checkpoint, args.out, args.smoothquant, texts, args.max_texts, args.sites,
                               adapter=args.adapter)
    print(f"smoothed (alpha {args.smoothquant}) item embedder -> {args.out} "
          f"(min cosine vs torch {manifest['validation']['min_cosine']:.7f}, vs unsmoothed "
          f"{manifest['transform']['min_cosine_vs_unsmoothed']:.7f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
