"""Checking an exported graph against torch, and running exported item embedders without torch.

Every export is validated before it is moved into place: onnxruntime runs held-out
inputs (item texts of different lengths under right and left padding and one at a
time; random histories of every length for the user encoder) and the outputs are
compared with the torch model's. The export fails when the minimum cosine is below
the threshold (default 0.9999).

Reusable pieces (for quantised and fp16 variants, and for clients):
  make_session(path)                          an onnxruntime CPU session
  load_tokenizer(dir) / tokenize(...)         the tokenisation contract of export.json, with the `tokenizers`
                                              library only (no torch, no transformers)
  embed_texts_onnx(session, tokenizer_dir, texts, manifest) -> float32 [N, D]
  compare(reference, candidate) -> dict       max abs diff, mean/min cosine, top-k neighbour overlap
  print_report(report)                        the small table printed by the CLI
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.names import ATTENTION_MASK, INPUT_IDS, ITEM_VECTOR, ITEM_VECTORS, USER_VECTOR

DEFAULT_MIN_COSINE = 0.9999
TOP_K = 10

# Held-out item texts: short and long titles, attribute sentences, punctuation, digits, and one text longer than
# any max_length, so truncation is part of what is checked.
VALIDATION_TEXTS = [
    "Toy Story (1995)",
    "Star Wars: Episode V - The Empire Strikes Back (1980)",
    "Return of the Jedi",
    "Heat",
    "The Shawshank Redemption (1994)",
    "Wallace & Gromit: The Best of Aardman Animation (1996)",
    "12 Angry Men (1957)",
    "Crouching Tiger, Hidden Dragon",
    "The movie item has the following attributes: \n title is Fargo; release year is 1996; genres is Crime, Drama, "
    "Thriller",
    "Three Colors: Blue (Trois couleurs: Bleu) (1993)",
    "Alien",
    "Aliens (1986)",
    "A",
    "2001: A Space Odyssey",
    "The Lord of the Rings: The Fellowship of the Ring",
    "Monty Python and the Holy Grail (1975)",
    "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)",
    "Amélie",
    "star wars return of the jedi toy story",
    " ".join(["An extremely long item description that keeps going to exceed every token limit"] * 12),
]


# ----------------------------------------------------------------------------------------------- runtime
def make_session(path_or_session: Any, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a model path or serialized model bytes (a session is returned as is)."""
    import onnxruntime as ort

    if isinstance(path_or_session, ort.InferenceSession):
        return path_or_session
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = path_or_session if isinstance(path_or_session, bytes) else str(path_or_session)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def validation_threads() -> int:
    """Threads for validation sessions: `OMP_NUM_THREADS` when set (a shared machine), else onnxruntime's default."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 0


# ----------------------------------------------------------------------------------------------- tokenisation
def load_tokenizer(tokenizer_dir: str | Path) -> Any:
    """The export's `tokenizer/tokenizer.json` as a `tokenizers.Tokenizer` (padding and truncation off)."""
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the export's tokenizer folder must hold tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def token_ids(tokenizer: Any, texts: Sequence[str], manifest: dict[str, Any]) -> list[list[int]]:
    """Token ids per text as the embedder was trained: `template`, the tokenizer's special tokens (BOS),
    truncation to `max_length` (one place kept for EOS when pooling is "eos"), EOS appended for "eos" pooling."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    append_eos = bool(manifest["append_eos"])
    eos = int(manifest["eos_token_id"])
    limit = int(manifest["max_length"]) - (1 if append_eos else 0)
    tokenizer.enable_truncation(max_length=limit)
    try:
        formatted = [manifest["template"].format(text=str(t)) for t in texts]
        rows = [list(e.ids) for e in tokenizer.encode_batch(formatted, add_special_tokens=True)] if formatted else []
    finally:
        tokenizer.no_truncation()
    if append_eos:
        rows = [row if row and row[-1] == eos else [*row, eos] for row in rows]
    return rows


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """`input_ids` and `attention_mask` int64 [B, L], padded on `side` ("right" or "left")."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    length = max((len(r) for r in rows), default=0)
    input_ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(length - len(row), length)
        input_ids[i, span] = row
        mask[i, span] = 1
    return input_ids, mask


def embed_texts_onnx(session_or_path: Any, tokenizer_dir: str | Path, texts: Sequence[str],
                     export_json: dict[str, Any] | str | Path, batch_size: int = 32,
                     padding_side: str | None = None, tokenizer: Any = None) -> np.ndarray:
    """Item vectors float32 [N, D] for `texts` from an exported embedder, in input order.

    `export_json` is the manifest (or its path / the export folder). Texts are batched in the given order
    and padded on `padding_side` (default: the manifest's).
    """
    from .artifact import read_manifest

    manifest = export_json if isinstance(export_json, dict) else read_manifest(export_json, "embedder")
    session = make_session(session_or_path)
    tokenizer = tokenizer or load_tokenizer(tokenizer_dir)
    side = padding_side or manifest.get("padding_side", "right")
    rows = token_ids(tokenizer, texts, manifest)
    out = np.empty((len(rows), int(manifest["dim"])), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        input_ids, mask = pad_batch(rows[start : start + batch_size], int(manifest["pad_token_id"]), side)
        out[start : start + len(input_ids)] = session.run(
            [ITEM_VECTOR], {INPUT_IDS: input_ids, ATTENTION_MASK: mask})[0]
    return out


# ----------------------------------------------------------------------------------------------- comparison
def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _top_k(queries: np.ndarray, items: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    scores = queries @ items.T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, candidate: np.ndarray, k: int = TOP_K, items: np.ndarray | None = None,
            metric: str = "cosine") -> dict[str, Any]:
    """How far `candidate` [N, D] is from `reference` [N, D].

    max_abs_diff, mean_cosine, min_cosine (row-wise), and topk_overlap: the mean fraction of each row's
    top-k neighbours that both agree on. Neighbours are the other rows of the same set, or, with `items`
    [M, D], the items ranked for each row (a user vector against the item table). metric "cosine" ranks
    by cosine, "inner_product" by the raw dot product (what the index uses in SRS space).
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"reference {reference.shape} and candidate {candidate.shape} must be equal [N, D] shapes")
    if metric not in ("cosine", "inner_product"):
        raise ValueError(f"metric must be 'cosine' or 'inner_product', got {metric!r}")
    cosine = np.sum(_unit(reference) * _unit(candidate), axis=1)
    out: dict[str, Any] = {
        "rows": int(reference.shape[0]),
        "max_abs_diff": float(np.abs(reference - candidate).max()) if reference.size else 0.0,
        "mean_cosine": float(cosine.mean()) if cosine.size else 1.0,
        "min_cosine": float(cosine.min()) if cosine.size else 1.0,
    }
    pool = reference if items is None else np.asarray(items, dtype=np.float64)
    pool_candidate = candidate if items is None else pool
    k = min(k, pool.shape[0] - (1 if items is None else 0))
    if k > 0:
        prep = _unit if metric == "cosine" else (lambda x: x)
        ref_top = _top_k(prep(reference), prep(pool), k, exclude_self=items is None)
        cand_top = _top_k(prep(candidate), prep(pool_candidate), k, exclude_self=items is None)
        overlap = [len(set(a) & set(b)) / k for a, b in zip(ref_top, cand_top, strict=True)]
        out["topk"] = int(k)
        out["topk_overlap"] = float(np.mean(overlap))
    return out


def summarise(cases: list[dict[str, Any]], min_cosine: float) -> dict[str, Any]:
    """The report stored in export.json["validation"]: the cases and their worst values."""
    worst = min(c["min_cosine"] for c in cases)
    overlaps = [c["topk_overlap"] for c in cases if "topk_overlap" in c]
    return {
        "threshold": min_cosine,
        "passed": bool(worst >= min_cosine),
        "min_cosine": worst,
        "mean_cosine": float(np.mean([c["mean_cosine"] for c in cases])),
        "max_abs_diff": max(c["max_abs_diff"] for c in cases),
        "topk_overlap": min(overlaps) if overlaps else None,
        "cases": cases,
    }


def print_report(report: dict[str, Any], title: str = "onnx vs torch") -> None:
    """A small fixed-width table of the validation cases (stdout)."""
    print(f"{title} (threshold min cosine {report['threshold']})")
    print(f"  {'case':<34} {'rows':>5} {'max|diff|':>10} {'mean cos':>10} {'min cos':>10} {'top-k':>6}")
    for c in report["cases"]:
        top = f"{c['topk_overlap']:.3f}" if "topk_overlap" in c else "-"
        print(f"  {c['case']:<34} {c['rows']:>5} {c['max_abs_diff']:>10.3g} {c['mean_cosine']:>10.7f} "
              f"{c['min_cosine']:>10.7f} {top:>6}")
    print(f"  -> {'passed' if report['passed'] else 'FAILED'}")


# ----------------------------------------------------------------------------------------------- validations
def validate_embedder(model_path: str | Path, tokenizer_dir: str | Path, manifest: dict[str, Any],
                      reference: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str] | None = None,
                      min_cosine: float = DEFAULT_MIN_COSINE) -> dict[str, Any]:
    """Compare the exported embedder with `reference(texts) -> [N, D]` (the torch path) on held-out texts:
    one right-padded batch, one left-padded batch, and the first texts one at a time."""
    texts = list(texts or VALIDATION_TEXTS)
    session = make_session(model_path, threads=validation_threads())
    tokenizer = load_tokenizer(tokenizer_dir)
    expected = np.asarray(reference(texts), dtype=np.float32)
    metric = "inner_product" if manifest.get("adapter") else "cosine"
    cases = []
    for side in ("right", "left"):
        got = embed_texts_onnx(session, tokenizer_dir, texts, manifest, batch_size=len(texts), padding_side=side,
                               tokenizer=tokenizer)
        cases.append({"case": f"batch of {len(texts)}, {side} padding", **compare(expected, got, metric=metric)})
    single = texts[:4]
    got = embed_texts_onnx(session, tokenizer_dir, single, manifest, batch_size=1, tokenizer=tokenizer)
    cases.append({"case": "one text per call", **compare(expected[: len(single)], got, metric=metric)})
    return summarise(cases, min_cosine)


def random_histories(num_items: int, batch: int, max_len: int, rng: np.random.Generator, side: str = "left",
                     lengths: Sequence[int] | None = None) -> np.ndarray:
    """Padded id histories int64 [batch, max_len] (0 = padding) of the given or random lengths 1..max_len."""
    lengths = list(lengths) if lengths is not None else list(rng.integers(1, max_len + 1, size=batch))
    out = np.zeros((batch, max_len), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids = rng.integers(1, num_items + 1, size=int(n))
        if side == "left":
            out[i, max_len - n :] = ids
        else:
            out[i, :n] = ids
    return out


def validate_user_encoder(model_path: str | Path, model: Any, table: np.ndarray,
                          min_cosine: float = DEFAULT_MIN_COSINE, seed: int = 0) -> dict[str, Any]:
    """Compare the exported user encoder with `model.user_vectors` (the torch SRS on id histories) on random
    histories of every length 1..max_len, left and right padded, batched and one at a time; top-k is the
    overlap of the items each user vector retrieves from `table` (inner product)."""
    import torch

    session = make_session(model_path, threads=validation_threads())
    rng = np.random.default_rng(seed)
    max_len, num_items = int(model.config.max_len), int(model.num_items)
    batch = max(17, max_len)
    every_length = [1 + i % max_len for i in range(batch)]
    cases_in = [
        (f"batch of {batch}, left padding", random_histories(num_items, batch, max_len, rng, "left", every_length)),
        (f"batch of {batch}, right padding", random_histories(num_items, batch, max_len, rng, "right", every_length)),
        ("one history, length 1", random_histories(num_items, 1, 1, rng, "left", [1])),
        (f"one history, length {max_len}", random_histories(num_items, 1, max_len, rng, "left", [max_len])),
    ]
    items = table[1:]
    cases = []
    for name, history in cases_in:
        with torch.no_grad():
            expected = model.user_vectors(torch.from_numpy(history)).float().numpy()
        got = session.run([USER_VECTOR], {ITEM_VECTORS: table[history].astype(np.float32),
                                          ATTENTION_MASK: (history != 0).astype(np.int64)})[0]
        cases.append({"case": name, **compare(expected, got, items=items, metric="inner_product")})
    return summarise(cases, min_cosine)
