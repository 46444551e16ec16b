"""Screening item embeddings in seconds, before any SASRec time is spent on them.

    python bench/screen_embeddings.py --threads 2            # the default grid (embeddings extracted if missing)
    python bench/screen_embeddings.py --only raw-bidir-mean/title-year-genres
    python bench/screen_embeddings.py --layers                # every layer of SmolLM2, attribute sentence

Co-consumption check: for every training transition a -> b (b within 3 steps after a in a user's
training sequence), is b among a's 10 nearest items by cosine of the standardised embedding
(statistics over the catalogue, a itself excluded)? Reported as the hit rate over all transitions,
beside a random ranking and a no-LLM baseline: the year and genre columns as a plain multi-hot vector.

The cold column asks the same of the transitions from a warm item into an item of the cold-start split's cold
set (bench/embeddings_quality.py's, 20% of the items), with statistics over warm items only: can the embedding
place an item it never saw interactions of? It is the only fair column for the co-occurrence stage, which
trained on the warm transitions (on the cold-start split, under runs/bench/embedder-cold: screened when there).
Only training interactions are read (no validation or test target). Writes
bench/results/screen_embeddings.{json,md} (with --layers: screen_embeddings_layers.{json,md}).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from bench.embeddings_quality import COLD_FRACTION, COLD_SAFE_STAGES, ensure_embeddings, stage_dir  # noqa: E402
from llmrec.itemtext import DEFAULT_KIND, ItemText  # noqa: E402
from llmrec.logs import setup_logging  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.data.cold import cold_start_split  # noqa: E402
from train.data.dataset import SequenceData  # noqa: E402
from train.srs.items import read_embedding_file  # noqa: E402

WINDOW, K = 3, 10
# raw SmolLM2 in both modes (bench/embeddings_quality.py's EMBEDDINGS) over every item-text recipe
MODES = ("raw-bidir-mean", "raw-causal-last")
TEXTS = ("title", "title-year", "title-year-genres", "attributes", "prompt")
STAGES = COLD_SAFE_STAGES  # bench stages screened when trained: their own embedding mode, the default text


def transitions(data: SequenceData, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) pairs of the training part of every sequence, b within `window` steps after a."""
    src, dst = [], []
    for s, p in zip(data.valid.seq_index, data.valid.position, strict=True):  # training part = before valid
        seq = data.sequences[int(s)][: int(p)]
        for d in range(1, window + 1):
            src.append(seq[:-d])
            dst.append(seq[d:])
    return np.concatenate(src), np.concatenate(dst)


def co_consumption(matrix: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], k: int = K,
                   fit: np.ndarray | None = None) -> float:
    """Share of transitions a -> b with b among a's k nearest items (cosine of rows standardised with the
    statistics of the rows `fit` marks, bool [num_items + 1]; default all)."""
    rows = matrix[1:].astype(np.float64)
    stats = rows if fit is None else rows[fit[1:]]
    rows = (rows - stats.mean(0)) / np.maximum(stats.std(0), 1e-6)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k] + 1  # item ids
    neighbours = np.zeros((matrix.shape[0], matrix.shape[0]), dtype=bool)
    neighbours[np.repeat(np.arange(1, matrix.shape[0]), k), top.reshape(-1)] = True
    a, b = pairs
    return float(neighbours[a, b].mean())


def cold_transitions(data: SequenceData, cold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The transitions of `transitions` from a warm item into a cold one (`cold`: bool [num_items + 1])."""
    a, b = transitions(data)
    keep = cold[b] & ~cold[a]
    return a[keep], b[keep]


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
    """The MODE/TEXT embeddings (MODE a key of bench/embeddings_quality.py's EMBEDDINGS), extracted if missing."""
    mode, text = name.split("/")
    return read_embedding_file(ensure_embeddings(mode, runs, data, progress, text=text))[0]


@torch.no_grad()
def layer_matrices(data: SequenceData, text: str, attention: str, batch_size: int = 64) -> list[np.ndarray]:
    """Mean-pooled hidden states of every layer (0 = token embeddings) of raw SmolLM2, [num_items + 1, D] each."""
    from train.data.text import recipe_texts
    from train.stages.common import load_input_embedder

    embedder = load_input_embedder("smollm2", attention=attention, pooling="mean").eval()
    ids = embedder.token_ids(recipe_texts(data, ItemText(text))[1:])
    chunks: list[list[np.ndarray]] = []
    for start in tqdm(range(0, len(ids), batch_size), desc=f"layers ({attention})"):
        batch = embedder.collate(ids[start:start + batch_size])
        hidden = embedder.causal_lm.get_decoder()(**embedder._inputs(batch["input_ids"], batch["attention_mask"]),
                                                  use_cache=False, output_hidden_states=True).hidden_states
        weights = batch["attention_mask"].float().unsqueeze(-1)
        pooled = [((h.float() * weights).sum(1) / weights.sum(1)).numpy() for h in hidden]
        chunks = chunks or [[] for _ in pooled]
        for layer, vectors in enumerate(pooled):
            chunks[layer].append(vectors)
    return [np.concatenate([np.zeros((1, c[0].shape[1]), np.float32), *c]) for c in chunks]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = [f"{m}/{t}" for m in MODES for t in TEXTS]
    p.add_argument("--only", nargs="+", default=grid, choices=grid + [f"{s}/{DEFAULT_KIND}" for s in STAGES],
                   metavar="MODE/TEXT", help=f"default: the raw grid, and {STAGES} when trained")
    p.add_argument("--layers", action="store_true",
                   help=f"instead: every layer of raw SmolLM2 (mean pooling, {DEFAULT_KIND}), both attention modes")
    p.add_argument("--runs", default="runs/bench", help="where embeddings are extracted (reused)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(verbose=False)
    data = load_dataset("ml-100k")
    cold = cold_start_split(data, COLD_FRACTION, seed=0)[1]
    pairs, cold_pairs = transitions(data), cold_transitions(data, cold)
    runs = Path(args.runs)

    def row(key: str, matrix: np.ndarray) -> dict:
        return {"key": key, "hit@10": co_consumption(matrix, pairs),
                "cold hit@10": co_consumption(matrix, cold_pairs, fit=~cold)}

    rng = np.random.default_rng(0)
    rows = [row("random", rng.normal(size=(data.num_items + 1, 64))),
            row("year + genres multi-hot (no LLM)", attribute_vector(data))]
    if args.layers:
        name = "screen_embeddings_layers"
        for attention in ("bidirectional", "causal"):
            rows += [row(f"raw SmolLM2 {attention} + mean, layer {i} ({DEFAULT_KIND})", m)
                     for i, m in enumerate(layer_matrices(data, DEFAULT_KIND, attention))]
    else:
        name = "screen_embeddings"
        trained = [f"{s}/{DEFAULT_KIND}" for s in STAGES if (stage_dir(runs, s) / "stage.json").is_file()]
        rows += [row(key, ensure(key, runs, data, True)) for key in (args.only if args.only != grid
                                                                        else grid + trained)]
    table = "\n".join(["| item embedding | co-consumption hit@10 | cold hit@10 |", "|---|---|---|"]
                      + [f"| {r['key']} | {r['hit@10']:.4f} | {r['cold hit@10']:.4f} |" for r in rows])
    print(table)
    write_result(name, {"dataset": data.name, "transitions": int(len(pairs[0])),
                        "cold_transitions": int(len(cold_pairs[0])), "window": WINDOW, "k": K, "rows": rows})
    (RESULTS / f"{name}.md").write_text(
        f"Co-consumption screen ({len(pairs[0])} training transitions, {len(cold_pairs[0])} of them into a cold "
        f"item; window {WINDOW}, k {K})\n\n{table}\n")


if __name__ == "__main__":
    main()
