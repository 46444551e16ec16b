"""Screening item embeddings in seconds, before any SASRec time is spent on them.

    python bench/screen_embeddings.py --threads 2            # the default grid (embeddings extracted if missing)
    python bench/screen_embeddings.py --only raw-bidir-mean/title-year-genres

Co-consumption check: for every training transition a -> b (b within 3 steps after a in a user's
training sequence), is b among a's 10 nearest items by cosine of the standardised embedding
(statistics over the catalogue, a itself excluded)? Reported as the hit rate over all transitions,
beside a random ranking and a no-LLM baseline: the year and genre columns as a plain multi-hot vector.
Only training interactions are read (no validation or test target). Writes
bench/results/screen_embeddings.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.data.dataset import SequenceData  # noqa: E402
from train.embed import ITEMS_FILE, MANIFEST_FILE, extract  # noqa: E402
from train.logs import setup_logging  # noqa: E402
from train.srs.items import read_embedding_file  # noqa: E402

WINDOW, K = 3, 10
# (pooling setup, item text): raw SmolLM2 in both modes over every item-text recipe
MODES = {"raw-bidir-mean": {"attention": "bidirectional", "pooling": "mean"},
         "raw-causal-last": {"attention": "causal", "pooling": "last"}}
TEXTS = ("title", "title-year", "title-year-genres", "attributes", "prompt")


def transitions(data: SequenceData, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) pairs of the training part of every sequence, b within `window` steps after a."""
    src, dst = [], []
    for s, p in zip(data.valid.seq_index, data.valid.position, strict=True):  # training part = before valid
        seq = data.sequences[int(s)][: int(p)]
        for d in range(1, window + 1):
            src.append(seq[:-d])
            dst.append(seq[d:])
    return np.concatenate(src), np.concatenate(dst)


def co_consumption(matrix: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], k: int = K) -> float:
    """Share of transitions a -> b with b among a's k nearest items (cosine of standardised rows)."""
    rows = matrix[1:].astype(np.float64)
    rows = (rows - rows.mean(0)) / np.maximum(rows.std(0), 1e-6)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k] + 1  # item ids
    neighbours = np.zeros((matrix.shape[0], matrix.shape[0]), dtype=bool)
    neighbours[np.repeat(np.arange(1, matrix.shape[0]), k), top.reshape(-1)] = True
    a, b = pairs
    return float(neighbours[a, b].mean())


def attribute_vector(data: SequenceData) -> np.ndarray:
    """Year (standardised) and every label of every list-like column as multi-hot, no LLM."""
    from train.data.text import item_attributes

    pairs = item_attributes(data)
    labels = sorted({v for item in pairs for key, value in item if key == "genres" for v in value.split(", ")})
    col = {v: i for i, v in enumerate(labels)}
    out = np.zeros((data.num_items + 1, len(labels) + 1), dtype=np.float32)
    for i, item in enumerate(pairs):
        for key, value in item:
            if key == "genres":
                out[i, [col[v] for v in value.split(", ")]] = 1.0
            elif key == "release year" and value.isdigit():
                out[i, -1] = float(value)
    return out


def ensure(name: str, runs: Path, data: SequenceData, progress: bool) -> np.ndarray:
    from train.stages.common import embedder_hash, load_input_embedder

    mode, text = name.split("/")
    out = runs / "embeddings" / f"{mode}@{text}"
    if not (out / MANIFEST_FILE).is_file():
        embedder = load_input_embedder("smollm2", **MODES[mode])
        extract(embedder, data, out, text=text, progress=progress,
                embedder_info={"source": "smollm2", "sha256": embedder_hash("smollm2"), "overrides": MODES[mode]})
    return read_embedding_file(out / ITEMS_FILE)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = [f"{m}/{t}" for m in MODES for t in TEXTS]
    p.add_argument("--only", nargs="+", default=grid, choices=grid, metavar="MODE/TEXT")
    p.add_argument("--runs", default="runs/bench", help="where embeddings are extracted (reused)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(verbose=False)
    data = load_dataset("ml-100k")
    pairs = transitions(data)
    rng = np.random.default_rng(0)
    rows = [{"key": "random", "hit@10": float(np.mean([co_consumption(rng.normal(size=(data.num_items + 1, 64)),
                                                                      pairs) for _ in range(3)]))},
            {"key": "year + genres multi-hot (no LLM)", "hit@10": co_consumption(attribute_vector(data), pairs)}]
    for name in args.only:
        rows.append({"key": name, "hit@10": co_consumption(ensure(name, Path(args.runs), data, True), pairs)})
    table = "\n".join(["| item embedding | co-consumption hit@10 |", "|---|---|"]
                      + [f"| {r['key']} | {r['hit@10']:.4f} |" for r in rows])
    print(table)
    write_result("screen_embeddings", {"dataset": data.name, "transitions": int(len(pairs[0])), "window": WINDOW,
                                       "k": K, "rows": rows})
    (RESULTS / "screen_embeddings.md").write_text(
        f"Co-consumption screen ({len(pairs[0])} training transitions, window {WINDOW}, k {K})\n\n{table}\n")


if __name__ == "__main__":
    main()
