"""`python -m train report`: the summary tables and plots of a `make demo` run, on hand-written run folders.

The files copy the field names of what the real steps write (train/stages/loop.py's stage.json and
log.jsonl, train/srs/runs.py's summary.json and trainer.py's seed-*/{metrics,ranks}.json and log.jsonl,
train/select.py's served.json, export.json, deploy.json, llmrec.json, the index manifest,
bench/export_speed.py's result, serving/demo.py's --record) with small numbers whose table cells are worked
out by hand below. The SRS rows' test metrics are computed from the per-user ranks written next to them, so
the summaries and ranks.json agree as in a real run. CI has no runs/ folder: nothing here reads one.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train import report as R
from train.eval.compare import paired_bootstrap, per_example, seed_mean

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
USERS = 120  # test examples: one per user (stats.txt below)
ITEMS = 1682


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) if not isinstance(obj, str) else obj)
    return path


def _bytes(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ranks(hits: range, band: range = range(0)) -> list[int]:
    """0-based test ranks of the USERS users: a hit at 10 (rank u % 10) for `hits`, at 20 only (10 + u % 10) for
    `band`, far down (100 + u) for the rest."""
    return [u % 10 if u in hits else 10 + u % 10 if u in band else 100 + u for u in range(USERS)]


def _metrics(ranks: list[int]) -> dict[str, float]:
    """trainer.py's full-ranking test metrics of one seed, from its ranks."""
    return {f"{m}@{k}": float(per_example(np.array(ranks), m, k).mean()) for m in ("recall", "ndcg") for k in (10, 20)}


PRESET_CONFIG = {  # summary config fields of each preset (train/srs/config.py PRESETS)
    "llm2rec": {"sasrec_style": "post-ln", "train_targets": "last", "loss": "ce", "adapter": "linear",
                "early_stop_metric": "recall@20", "eval_every": 2},
    "llmemb": {"sasrec_style": "original", "train_targets": "tail", "loss": "bce", "adapter": "llmemb",
               "early_stop_metric": "sampled/ndcg@10", "eval_every": 1},
}


def _srs(folder: Path, preset: str, items: str, ranks: dict[int, list[int]], best: list[int],
         train_seconds: tuple, rat: bool = False, extra_test: dict | None = None) -> None:
    """An SRS row: summary.json (test = mean/std over seeds of the metrics of each seed's ranks) and every seed's
    metrics.json, ranks.json, log.jsonl, config.json."""
    config = {"backbone": "sasrec", "items": items, "ks": [5, 10, 20], "standardize": False, "fusion": "none",
              "max_len": 50, **PRESET_CONFIG[preset]}
    seeds = list(ranks)
    per_seed = []
    for seed, b in zip(seeds, best, strict=True):
        full = _metrics(ranks[seed])
        metrics = {"seed": seed, "best_epoch": b, "epochs_run": b + 1, "device": "cpu",
                   "valid": {"recall@20": 0.3}, "train_seconds": 1.0,
                   "test": {"full": full, "breakdown": {}, "num_examples": USERS}}
        per_seed.append(metrics)
        seed_dir = folder / f"seed-{seed}"
        _write(seed_dir / "metrics.json", metrics)
        _write(seed_dir / "ranks.json", {"test": ranks[seed]})
        _write(seed_dir / "config.json", {"srs": config})
        every = config["eval_every"]
        lines = [{"event": "epoch", "seed": seed, "epoch": e, "loss": 7.0 - 0.5 * e, "best_epoch": min(e, b),
                  "seconds": 1.5, **({"valid": {"recall@10": 0.2, "recall@20": 0.2 + 0.05 * min(e, b)}}
                                     if e % every == 0 else {})} for e in range(1, b + 2)]
        _write(seed_dir / "log.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    flat = [{**{f"full/{k}": v for k, v in m["test"]["full"].items()}, "num_examples": USERS} for m in per_seed]
    test = {k: {"mean": float(np.mean([f[k] for f in flat])), "std": float(np.std([f[k] for f in flat]))}
            for k in flat[0]}
    test.update({k: {"mean": v, "std": 0.0} for k, v in (extra_test or {}).items()})
    _write(folder / "summary.json", {
        "config": config, "dataset": "planted", "items": {"kind": "ids" if items == "ids" else "frozen"},
        **({"rat": {"alpha": 0.01, "temperature": 2.0}} if rat else {}),
        "per_seed": per_seed, "seeds": seeds, "test": test,
        "train_seconds": {"mean": train_seconds[0], "std": train_seconds[1]}})


def _stage(folder: Path, name: str, steps: int, wall: float, load: float, final: float, log: dict[int, float],
           samples: int, batch: int, finished: bool = True, evals: dict[int, float] | None = None,
           kept: int | None = None) -> None:
    lines = [{"step": s, "loss": loss, "lr": 0.0001, "seconds": 1.0, "elapsed": s * wall / steps}
             for s, loss in log.items()]
    lines += [{"step": s, "eval_loss": loss} for s, loss in (evals or {}).items()]  # held out: not a loss point
    lines.sort(key=lambda r: r["step"])
    _write(folder / name / "log.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    if finished:
        _write(folder / name / "stage.json", {
            "config": {"batch_size": batch, "steps": steps, "log_every": 5}, "created": "2026-01-01T00:00:00+00:00",
            "dataset": {"key": "abc", "name": "planted"}, "effective_batch": batch, "final_loss": final,
            "input_embedder": "smollm2", "load_seconds": load, "processes": 1, "samples": samples,
            "stage": name.rsplit("/", 1)[-1], "status": "finished", "steps": steps, "wall_seconds": wall,
            "evaluations": [{"step": s, "loss": v} for s, v in (evals or {}).items()],
            "kept_step": steps if kept is None else kept})


def _record() -> dict:
    """serving/demo.py's --record: GetItems 4, 2, 100, 1, 3 ms -> p50 3.0, mean 22.0, max 100.0;
    Recommend 10, 50, 30, 20, 40 -> p50 30.0, mean 30.0, max 50.0."""
    get, rec = iter([4.0, 2.0, 100.0, 1.0, 3.0]), iter([10.0, 50.0, 30.0, 20.0, 40.0])
    order = ["GetItems", "Recommend"] * 3 + ["EmbedItems", "UpsertItems", "Recommend", "GetItems", "Recommend",
                                             "DeleteItems", "GetItems"]
    fixed = {"EmbedItems": 70.0, "UpsertItems": 80.0, "DeleteItems": 5.0}
    calls = [{"method": m, "ms": next(get) if m == "GetItems" else next(rec) if m == "Recommend" else fixed[m],
              "ok": True, "status": "OK"} for m in order]
    ranked = [{"rank": i, "id": i + 10, "title": f"Item number {i + 10}", "score": 3.0 - 0.25 * i} for i in (1, 2, 3)]
    return {
        "format": "llmrec.demo-record/1", "ok": True, "error": None, "started": "2026-01-01T00:00:00Z",
        "wall_seconds": 20.0, "startup_seconds": 12.0,
        "inputs": {"requests": "s.json", "model_repository": "model_repository", "index": "i", "k": 3,
                   "title": "Toy Story 2", "genres": "Animation", "triton_url": None},
        "gateway": {"address": "127.0.0.1:1", "pid": 1, "triton_pid": 2, "stopped": "gateway pid 1 stopped"},
        "calls": calls,
        "users": [{"user": u, "history_length": n, "history_ids": [1] * n, "recent": [{"id": 1, "title": "a"}],
                   "recommendations": ranked} for u, n in (("7", 12), ("8", 30), ("9", 5))],
        "new_item": {"title": "Toy Story 2", "genres": "Animation", "user": "7", "id": 1683, "index_size": 1683,
                     "recommendations_with_new_item": ranked, "nearest": {"id": 5, "title": "Item number 5"},
                     "similar_history": [{"id": i, "title": f"Item number {i}"} for i in (9, 8, 7, 6, 5)],
                     "rank": 3, "rank_depth": 100, "candidates_ranked": 1680, "ranked_with_nearest": ranked,
                     "deleted": 1, "index_size_after_delete": 1682, "missing_after_delete": True},
    }


# the SRS rows' per-user test ranks (see _ranks): LLM2Rec's base row gains users 24..28 over its ID-SASRec and
# loses users 0..2 (a small difference, no difference at 120 users); LLM2Rec's two seeds hit on 60 and 54 users
# (clearly higher); LLMEmb's RAT row hits on 6 users where its ID-SASRec hits on 60 (clearly lower)
RANKS = {
    "llm2rec-ids": {2024: _ranks(range(0, 24), range(24, 36))},
    "llm2rec-base": {2024: _ranks(range(3, 29), range(29, 40))},
    "llm2rec": {1: _ranks(range(0, 60)), 2: _ranks(range(0, 54), range(54, 60))},
    "llmemb-ids": {2024: _ranks(range(0, 60), range(60, 70))},
    "llmemb": {2024: _ranks(range(0, 6), range(6, 30))},
}
COLD = {"breakdown/cold_items/count": 8, "breakdown/cold_items/num_items": 5, "breakdown/cold_items/recall@10": 0.125,
        "breakdown/cold_items/recall@20": 0.25, "breakdown/cold_items/ndcg@10": 0.05,
        "breakdown/cold_items/ndcg@20": 0.0625}
WHY = ("LLM2Rec (CSFT -> MNTP -> item contrastive), LLM2Rec's downstream: the best validation recall@20 of the models "
       "that can embed a new item (0.5500; llm2rec-base 0.3100, llmemb 0.1200); the ID-SASRec rows cannot place a "
       "new item")


def build_run(root: Path) -> dict[str, Path]:
    """A complete fake `make demo` run in root/run (+ repository, export-speed result and demo record)."""
    run = root / "run"
    _write(run / "data" / "stats.txt",  # train/data/__main__.py format_table
           "dataset                      planted\n"
           "users                        120\n"
           "items                        1,682\n"
           "interactions                 1,900\n"
           "density                      0.9413%\n"
           "examples (train/valid/test)  1,660 / 120 / 120\n"
           "sequence length\n"
           "  min                        12\n")
    srs, emb, embeddings = run / "srs", run / "embedder", run / "embeddings"
    _srs(srs / "llm2rec-ids", "llm2rec", "ids", RANKS["llm2rec-ids"], [3], (100.0, 0.0))
    _srs(srs / "llm2rec-base", "llm2rec", str(embeddings / "base" / "items.safetensors"), RANKS["llm2rec-base"], [4],
         (120.0, 0.0))
    _srs(srs / "llm2rec", "llm2rec", str(embeddings / "llm2rec" / "items.safetensors"), RANKS["llm2rec"], [4, 5],
         (150.0, 10.0))
    _srs(srs / "llmemb-ids", "llmemb", "ids", RANKS["llmemb-ids"], [6], (80.0, 0.0))
    _srs(srs / "llmemb", "llmemb", str(embeddings / "llmemb" / "items.safetensors"), RANKS["llmemb"], [2],
         (90.0, 0.0), rat=True, extra_test=COLD)
    _write(run / "served.json", {  # train/select.py
        "row": "llm2rec", "label": "LLM2Rec (CSFT -> MNTP -> item contrastive), LLM2Rec's downstream",
        "srs": str(srs / "llm2rec" / "seed-1"), "embedder": str(emb / "llm2rec" / "item-contrastive"),
        "metric": "valid/recall@20", "value": 0.55,
        "candidates": {"llm2rec-base": 0.31, "llm2rec": 0.55, "llmemb": 0.12},
        "not_served": {r: "item IDs only: no vector for an item added after training"
                       for r in ("llm2rec-ids", "llmemb-ids")},
        "why": WHY})
    _write(emb / "base" / "config.json", "{}")
    _stage(emb, "llm2rec/csft", 10, 100.0, 2.5, 3.0, {1: 6.0, 5: 4.0, 10: 3.5}, 80, 8, evals={5: 4.5, 10: 4.25})
    _stage(emb, "llm2rec/mntp", 20, 200.0, 1.0, 5.25, {1: 10.0, 10: 7.0, 20: 5.5}, 160, 16)
    _stage(emb, "llm2rec/item-contrastive", 20, 300.0, 1.0, 1.5, {1: 2.75, 10: 2.0, 20: 1.25}, 160, 16,
           evals={10: 2.2})  # kept: the last step (no patience), which has no evaluation
    _stage(emb, "scft", 10, 60.0, 1.5, 0.8, {1: 2.0, 10: 0.75}, 90, 9, evals={5: 3.0, 10: 3.5}, kept=5)
    for name, source, seconds in (("base", emb / "base", 12.5), ("llm2rec", emb / "llm2rec" / "item-contrastive", 13.0),
                                  ("llmemb", emb / "scft", 14.0)):
        _write(embeddings / name / "manifest.json", {
            "count": ITEMS, "dim": 576, "file": "items.safetensors", "format": "llmrec.embeddings/1",
            "rows": ITEMS + 1, "seconds": seconds, "text": "title" if name != "llmemb" else "attributes",
            "sha256": "e" * 64, "embedder": {"source": str(source), "config": {}}})
    onnx = run / "onnx"
    _bytes(onnx / "item_embedder" / "model.onnx", MIB)
    _bytes(onnx / "item_embedder" / "model.onnx_data", MIB)  # external weights count in the model's size
    _write(onnx / "item_embedder" / "tokenizer" / "tokenizer.json", "{}")
    validation = {"threshold": 0.9999, "passed": True, "min_cosine": 0.99999, "mean_cosine": 0.999999,
                  "max_abs_diff": 1e-5, "topk_overlap": 1.0, "cases": []}
    embedder_export = _write(onnx / "item_embedder" / "export.json", {
        "format": "llmrec.onnx/1", "kind": "embedder", "dim": 64, "hidden_size": 576,
        "adapter": {"checkpoint": str(srs / "llm2rec" / "seed-1"), "sha256": "a" * 64, "kind": "linear"},
        "source": {"checkpoint": str(emb / "llm2rec" / "item-contrastive" / "embedder"), "sha256": "b" * 64},
        "files": {"model.onnx": "c" * 64}, "validation": validation, "export_seconds": 90.0})
    _bytes(onnx / "user_encoder" / "model.onnx", MIB // 2)
    _bytes(onnx / "user_encoder" / "item_vectors.safetensors", MIB // 4)
    user_export = _write(onnx / "user_encoder" / "export.json", {
        "format": "llmrec.onnx/1", "kind": "user_encoder", "dim": 64, "max_len": 50,
        "source": {"checkpoint": str(srs / "llm2rec" / "seed-1"), "sha256": "a" * 64, "dataset": "planted"},
        "files": {"item_vectors.safetensors": "f" * 64, "model.onnx": "d" * 64},
        "validation": {**validation, "min_cosine": 0.999999}, "export_seconds": 30.0})
    _bytes(onnx / "item_embedder_int8" / "model.onnx", MIB // 2)
    _bytes(onnx / "item_embedder_int8" / "model.onnx.data", MIB // 2)
    _write(onnx / "item_embedder_int8" / "gate.json", {
        "recipe": "nbits8-w", "variant_sha256": hashlib.sha256((onnx / "item_embedder_int8" / "model.onnx")
                                                               .read_bytes()).hexdigest(),
        "cosine_mean": 0.995, "overlap": 0.81, "min_overlap": 0.8, "recall": 0.196, "recall_reference": 0.2,
        "recall_drop": 0.02, "recall_drop_bound": 0.019, "max_recall_drop": 0.02, "passed": True})
    _write(onnx / "deploy.json", {"steps": {
        step: {"fingerprint": "0" * 64, "output": "x", "seconds": sec, "finished": "2026-01-01T00:00:00Z"}
        for step, sec in (("embedder", 90.0), ("user-encoder", 30.0), ("int8", 12.0), ("repository", 3.0),
                          ("index", 1.5))}})
    repository = root / "model_repository"
    _write(repository / "llmrec.json", {
        "format": "llmrec.triton-repository/1", "flavour": "python", "created": "2026-01-01T00:00:00Z",
        "models": ["item_embedder", "item_encoder", "tokenizer", "user_encoder"],
        "sources": {"embedder": {"path": str(onnx / "item_embedder"), "export_sha256": _sha(embedder_export)},
                    "user_encoder": {"path": str(onnx / "user_encoder"), "export_sha256": _sha(user_export)}}})
    _write(run / "index" / "manifest.json", {"count": ITEMS, "dim": 64, "factory": "Flat", "metric": "inner_product",
                                             "format": "llmrec.index/1", "item_vectors_sha256": "f" * 64})
    speed = _write(root / "export_speed.json", {
        "environment": {"date": "2026-01-01T00:00:00+00:00"},
        "settings": {"embedder": str(emb / "llm2rec" / "item-contrastive")},
        "embedder": {"embedder_sha256": "b" * 64, "gate": {"ort-int8-nbits8": {
            "cosine_mean": 0.99, "cosine_min": 0.9, "overlap": 0.85, "overlap_raw": 0.9, "recall": 0.198,
            "recall_reference": 0.2, "k": 10, "min_overlap": 0.8, "max_recall_drop": 0.02, "extra": {},
            "recall_drop": 0.01, "passed": True}}}})  # written before the gate held the interval's bound
    record = _write(root / "demo-record.json", _record())
    return {"run": run, "repository": repository, "export_speed": speed, "record": record, "out": root / "report"}


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = R.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _row(text: str, first: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is `first`."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first} |")]
    assert len(rows) == 1, (first, rows)
    return [c.strip() for c in rows[0].strip("|").split(" | ")]


def _section(text: str, title: str) -> str:
    """The lines of one `## title` section."""
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _quality(text: str) -> tuple[str, str]:
    """(the quality table, the paired table) of the Quality section."""
    table, _, paired = _section(text, "Quality (test, full ranking)").partition("Paired against")
    return table, paired


def _notes(text: str) -> list[str]:
    """The report's lines about an input missing, unreadable or not usable (the Export section's bullets of what
    the exports and the deployment are made from are not such lines)."""
    facts = ("- The item embedder export ", "- The user encoder export ", "- Triton repository ", "- Index `")
    return [line for line in text.splitlines() if line.startswith("- ") and not line.startswith(facts)]


def _expected_cell(row: str, baseline: str, metric: str, k: int = 10) -> str:
    """The paired interval cell, from train.eval.compare on the fixture's ranks (as the report must compute it)."""
    res = paired_bootstrap(seed_mean(list(RANKS[row].values()), metric, k),
                           seed_mean(list(RANKS[baseline].values()), metric, k), samples=R.BOOTSTRAP_SAMPLES)
    verdict = ("higher" if res["diff"] > 0 else "lower") if res["excludes_zero"] else "no difference"
    sign = lambda v: f"{v:+.4f}".replace("-", "−")  # noqa: E731
    return f"{sign(res['diff'])} [{sign(res['low'])}, {sign(res['high'])}], {verdict}"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def full_run(tmp_path):
    return build_run(tmp_path)


def _full_args(p: dict[str, Path]) -> list[str]:
    return ["--run", str(p["run"]), "--demo-record", str(p["record"]), "--out", str(p["out"]), "--repository",
            str(p["repository"]), "--export-speed", str(p["export_speed"])]


def test_full_run_tables_hold_the_numbers_of_the_files(full_run, capsys):
    code, out, err = _main(capsys, *_full_args(full_run))
    assert code == 0, err
    assert "missing" not in out and "unreadable" not in out and "could not" not in out
    assert not _notes(out), _notes(out)

    assert _row(out, "planted") == ["planted", "120", "1,682", "1,900", "0.9413%", "1,660 / 120 / 120"]
    # quality: preset from the block style, items, mean over seeds (± std with several), best epoch per seed, time;
    # the metrics of the fixture's ranks worked out by hand: 24 of 120 users hit at 10, 36 at 20, ...
    quality, paired = _quality(out)
    assert _row(quality, "ID-SASRec (LLM2Rec's downstream)") == [
        "ID-SASRec (LLM2Rec's downstream)", "llm2rec", "ids", "1", "0.2000", "0.3000", "0.0971", "0.1220", "3",
        "100.0 s"]
    assert _row(quality, "SmolLM2 as it is (bidirectional, mean pooling)")[1:6] == [
        "llm2rec", "text (linear)", "1", "0.2167", "0.3083"]  # 26 / 120, 37 / 120
    assert _row(quality, "LLM2Rec (CSFT → MNTP → item contrastive, demo budget)") == [
        "LLM2Rec (CSFT → MNTP → item contrastive, demo budget)", "llm2rec", "text (linear)", "2", "0.4750 ± 0.0250",
        "0.5000 ± 0.0000", "0.2189 ± 0.0083", "0.2249 ± 0.0023", "4, 5", "2 min 30 s"]
    assert _row(quality, "ID-SASRec (LLMEmb's downstream)")[1:6] == ["llmemb", "ids", "1", "0.5000", "0.5833"]
    assert _row(quality, "LLMEmb (SCFT → RAT, demo budget)") == [
        "LLMEmb (SCFT → RAT, demo budget)", "llmemb", "text (llmemb) + RAT", "1", "0.0500", "0.2500", "0.0275",
        "0.0769", "2", "90.0 s"]
    # a random order of 1,682 items: 10 / 1682 and 20 / 1682
    assert _row(quality, "random ranking of 1,682 items") == [
        "random ranking of 1,682 items", "—", "—", "—", "0.0059", "0.0119", "—", "—", "—", "—"]
    assert "Relative to" not in out
    # paired: the rows with a baseline, against it, on the 120 test users
    firsts = [line.split(" | ")[0][2:] for line in paired.splitlines() if line.startswith("| ") and "---" not in line]
    assert firsts[1:] == [R.LABELS["llm2rec-base"], R.LABELS["llm2rec"], R.LABELS["llmemb"]]
    assert _row(paired, "LLMEmb (SCFT → RAT, demo budget)")[1:3] == ["ID-SASRec (LLMEmb's downstream)", "120"]
    # cold items: only the LLMEmb row's summary has the breakdown
    cold = _section(out, "Cold items")
    assert _row(cold, "LLMEmb (SCFT → RAT, demo budget)") == [
        "LLMEmb (SCFT → RAT, demo budget)", "8", "5", "0.1250", "0.2500", "0.0500", "0.0625"]
    assert "| ID-SASRec" not in cold
    # stages: stage.json's wall time, load time, final loss and held-out loss at the kept step; log.jsonl's first
    # and last logged training loss (its eval_loss lines are not training losses)
    stages = _section(out, "Embedder stages")
    assert _row(stages, "csft") == ["csft", "LLM2Rec", "finished", "10", "100.0 s", "2.5 s", "3.0000",
                                    "6.0000 → 3.5000", "4.2500 (step 10, 2 evaluations)", "80", "8"]
    assert _row(stages, "mntp") == ["mntp", "LLM2Rec", "finished", "20", "3 min 20 s", "1.0 s", "5.2500",
                                    "10.0000 → 5.5000", "—", "160", "16"]
    assert _row(stages, "item-contrastive")[4:9] == ["5 min 00 s", "1.0 s", "1.5000", "2.7500 → 1.2500",
                                                     "2.2000 (step 10; kept step 20, 1 evaluation)"]
    assert _row(stages, "scft")[1:9] == ["LLMEmb", "finished", "10", "60.0 s", "1.5 s", "0.8000", "2.0000 → 0.7500",
                                         "3.0000 (step 5, 2 evaluations)"]  # kept: the best, not the last
    assert _row(stages, "total")[4] == "11 min 00 s"
    run = full_run["run"]
    assert _row(stages, "base") == ["base", "SmolLM2 as it is (bidirectional, mean pooling)",
                                    f"`{run / 'embedder' / 'base'}`", "1682", "576", "title", "12.5 s"]
    assert _row(stages, "llmemb")[1:] == ["LLMEmb (SCFT stage)", f"`{run / 'embedder' / 'scft'}`", "1682", "576",
                                          "attributes", "14.0 s"]
    # export: validation, sizes (model = model.onnx + external data; folder = everything), times
    assert _row(out, "item embedder (+ SRS adapter)") == [
        "item embedder (+ SRS adapter)", "passed (min cosine ≥ 0.9999)", "0.9999900000", "1.000", "64", "2.0", "2.0",
        "90.0 s"]
    assert _row(out, "user encoder") == ["user encoder", "passed (min cosine ≥ 0.9999)", "0.9999990000", "1.000", "64",
                                         "0.5", "0.8", "30.0 s"]
    assert _row(out, "item embedder int8 (not deployed)")[5:7] == ["1.0", "1.0"]
    assert "embedder 90.0 s, user-encoder 30.0 s, int8 12.0 s, repository 3.0 s, index 1.5 s." in out
    export = _section(out, "Export")
    assert "this run's LLM2Rec item-contrastive stage; the served model's embedder." in export
    assert f"this run's row `llm2rec` ({R.LABELS['llm2rec']}); the served seed." in export
    assert "**" not in export.split("int8 quality gate", 1)[0]
    assert "measured on the embedder exported here (same sha256)" in out
    assert "int8 quality gate of this run's variant" in out and "Recall@10 0.1960 vs fp32 0.2000" in out
    assert _row(out, "int8 nbits8-w") == ["int8 nbits8-w", "0.9950", "0.810 (≥ 0.8)", "+2.0%", "+1.9% (≤ 2%)",
                                        "pass"]
    assert _row(out, "ort-int8-nbits8") == ["ort-int8-nbits8", "0.9900", "0.850 (≥ 0.8)", "+1.0%", "—", "pass"]
    assert "python flavour, models item_embedder, item_encoder, tokenizer, user_encoder" in out
    assert "built from these exports: yes" in out
    assert "1682 items × 64, Flat, inner_product; holds the user encoder's item table: yes" in out
    # serving: p50 / mean / max per method from the record's calls, in the order first called
    assert _row(out, "GetItems") == ["GetItems", "5", "0", "3.0", "22.0", "100.0"]
    assert _row(out, "Recommend") == ["Recommend", "5", "0", "30.0", "30.0", "50.0"]
    assert _row(out, "EmbedItems") == ["EmbedItems", "1", "0", "70.0", "70.0", "70.0"]
    methods = [line.split(" | ")[0][2:] for line in out.split("\n| method |", 1)[1].splitlines()[2:7]]
    assert methods == ["GetItems", "Recommend", "EmbedItems", "UpsertItems", "DeleteItems"]
    assert "start-up to SERVING 12.0 s, total wall time 20.0 s" in out and "all calls succeeded" in out
    assert ('New item "Toy Story 2" (id 1683, added live, deleted again: yes): for a user who just watched the 5 '
            'catalogue items nearest to it (the nearest: "Item number 5") it ranks **#3** of 1683 items.') in out
    assert _row(out, "7") == ["7", "12", "Item number 11 (2.75); Item number 12 (2.50); Item number 13 (2.25)"]


def test_paired_interval_cells_are_train_eval_compare_numbers(full_run, capsys):
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    paired = _quality(out)[1]
    for row, baseline in (("llm2rec-base", "llm2rec-ids"), ("llm2rec", "llm2rec-ids"), ("llmemb", "llmemb-ids")):
        cells = _row(paired, R.LABELS[row])
        assert cells[1:] == [R.LABELS[baseline], "120", _expected_cell(row, baseline, "recall"),
                             _expected_cell(row, baseline, "ndcg")], row
    # by hand: the differences of the means of the users' Recall@10 (each row's seeds averaged per user first)
    base, llm2rec, llmemb = (_row(paired, R.LABELS[r])[3] for r in ("llm2rec-base", "llm2rec", "llmemb"))
    assert base.startswith("+0.0167 [") and base.endswith("], no difference")  # +5 - 3 users of 120; holds 0
    assert llm2rec.startswith("+0.2750 [+") and llm2rec.endswith(", higher")  # (54 + 6 × 0.5 - 24) / 120
    assert llmemb.startswith("−0.4500 [−") and llmemb.endswith("−0.3583], lower")  # (6 - 60) / 120
    low, high = (float(x.replace("−", "-")) for x in base.split("[", 1)[1].split("]", 1)[0].split(", "))
    assert low < 0 < high
    assert "no difference: the interval contains 0" in paired


def test_the_verdict_of_an_interval_follows_the_ranks(full_run, capsys):
    """The same rows with other ranks: no difference becomes higher, higher becomes no difference."""
    srs = full_run["run"] / "srs"
    _write(srs / "llm2rec-base" / "seed-2024" / "ranks.json", {"test": _ranks(range(0, 80))})
    for seed in (1, 2):  # LLM2Rec ranks every user as its ID-SASRec does: a difference of exactly 0
        _write(srs / "llm2rec" / f"seed-{seed}" / "ranks.json", {"test": RANKS["llm2rec-ids"][2024]})
    paired = _quality(_main(capsys, *_full_args(full_run))[1])[1]
    assert _row(paired, R.LABELS["llm2rec-base"])[3].endswith(", higher")
    assert _row(paired, R.LABELS["llm2rec"])[3:] == ["+0.0000 [+0.0000, +0.0000], no difference"] * 2
    _write(srs / "llmemb" / "seed-2024" / "ranks.json", {"test": _ranks(range(0, 58), range(58, 70))})
    assert _row(_quality(_main(capsys, *_full_args(full_run))[1])[1], R.LABELS["llmemb"])[3].endswith(
        ", no difference")  # 58 against 60 of 120 users


def test_served_section_shows_the_row_every_candidate_and_why(full_run, capsys):
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    served = _section(out, "Served model")
    assert ("Served: **LLM2Rec (CSFT -> MNTP -> item contrastive), LLM2Rec's downstream** (row `llm2rec`), "
            "valid/recall@20 0.5500;") in served
    assert f"SRS `{full_run['run'] / 'srs' / 'llm2rec' / 'seed-1'}`" in served
    assert _row(served, "llm2rec") == ["llm2rec", R.LABELS["llm2rec"], "0.5500", "**served**"]
    assert _row(served, "llm2rec-base") == ["llm2rec-base", R.LABELS["llm2rec-base"], "0.3100", "candidate"]
    assert _row(served, "llmemb")[2:] == ["0.1200", "candidate"]
    assert _row(served, "llm2rec-ids")[2:] == ["—", "not servable: item IDs only: no vector for an item added after "
                                                    "training"]
    assert _row(served, "llmemb-ids")[3].startswith("not servable: ")
    assert f"Why: {WHY}." in served
    # the exports of another seed than the one served are flagged
    served_file = full_run["run"] / "served.json"
    other = {**json.loads(served_file.read_text()), "srs": str(full_run["run"] / "srs" / "llm2rec" / "seed-2"),
             "embedder": str(full_run["run"] / "embedder" / "scft")}
    served_file.write_text(json.dumps(other))
    export = _section(_main(capsys, *_full_args(full_run))[1], "Export")
    assert f"; **not** the served seed (`{full_run['run'] / 'srs' / 'llm2rec' / 'seed-2'}`)." in export
    assert f"; **not** the served model's embedder (`{full_run['run'] / 'embedder' / 'scft'}`)." in export


def test_missing_served_json_is_one_line(full_run, capsys):
    served = full_run["run"] / "served.json"
    served.unlink()
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    assert _notes(out) == [f"- missing: `{served}` (the model served: `make demo` step 5, `python -m train select`)"]
    assert _section(out, "Served model").strip() == _notes(out)[0]
    assert "the served" not in _section(out, "Export")  # nothing to compare the exports with: no verdict


def test_a_missing_row_is_one_line_and_the_rest_is_reported(full_run, capsys):
    import shutil

    run = full_run["run"]
    shutil.rmtree(run / "srs" / "llm2rec")
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    assert _notes(out) == [f"- missing: `{run / 'srs' / 'llm2rec' / 'summary.json'}` ({R.LABELS['llm2rec']}: "
                           "`make demo` step 4); other SRS runs next to it: llm2rec-base, llm2rec-ids, llmemb, "
                           "llmemb-ids (choose one with --srs-llm2rec)"]
    quality, paired = _quality(out)
    assert R.LABELS["llm2rec"] not in quality
    assert _row(paired, R.LABELS["llm2rec-base"])[3] == _expected_cell("llm2rec-base", "llm2rec-ids", "recall")
    # a missing baseline: its one line; the rows against it have no interval
    (run / "srs" / "llmemb-ids" / "summary.json").unlink()
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    assert len(_notes(out)) == 2 and "llmemb-ids/summary.json" in _notes(out)[1]
    assert _row(_quality(out)[1], R.LABELS["llmemb"])[1:] == [R.LABELS["llmemb-ids"], "—", "—", "—"]


def test_a_missing_ranks_json_is_one_line_even_for_two_rows_against_it(full_run, capsys):
    ranks = full_run["run"] / "srs" / "llm2rec-ids" / "seed-2024" / "ranks.json"
    ranks.unlink()
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    assert _notes(out) == [f"- missing: `{ranks}` (per-example test ranks of {R.LABELS['llm2rec-ids']}, seed 2024): "
                           f"no paired interval with {R.LABELS['llm2rec-ids']}"]
    quality, paired = _quality(out)
    assert _row(quality, R.LABELS["llm2rec-ids"])[4] == "0.2000"  # the summary is still reported
    for row in ("llm2rec-base", "llm2rec"):
        assert _row(paired, R.LABELS[row])[2:] == ["—", "—", "—"]
    assert _row(paired, R.LABELS["llmemb"])[3] == _expected_cell("llmemb", "llmemb-ids", "recall")
    # ranks of another test set (another length) than the baseline's: a line, no interval
    _write(full_run["run"] / "srs" / "llmemb" / "seed-2024" / "ranks.json", {"test": [0, 1, 2]})
    out = _main(capsys, *_full_args(full_run))[1]
    assert any(line.startswith(f"- no paired interval of {R.LABELS['llmemb']} against {R.LABELS['llmemb-ids']}: ")
               for line in _notes(out))
    assert _row(_quality(out)[1], R.LABELS["llmemb"])[2:] == ["—", "—", "—"]


def test_srs_rows_can_be_pointed_at_by_parent_or_one_by_one(full_run, capsys, tmp_path):
    moved = tmp_path / "elsewhere"
    (full_run["run"] / "srs").rename(moved)
    other = tmp_path / "other-llmemb"
    (moved / "llmemb").rename(other)
    code, out, _ = _main(capsys, *_full_args(full_run), "--srs", str(moved), "--srs-llmemb", str(other))
    assert code == 0 and not [n for n in _notes(out) if "summary.json" in n or "ranks" in n], _notes(out)
    assert _row(_quality(out)[1], R.LABELS["llmemb"])[3] == _expected_cell("llmemb", "llmemb-ids", "recall")
    # the exports recorded the rows' old place: not this run's rows any more
    assert f"**not** one of this run's SRS rows (`{moved}`); the served seed." in _section(out, "Export")
    help_text = R.build_parser().format_help()
    assert all(f"--srs-{row} DIR" in help_text for row, *_ in R.MODELS) and "--srs DIR" in help_text


def test_report_md_has_the_same_tables_and_valid_pngs(full_run, capsys):
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    md = (full_run["out"] / "report.md").read_text()
    images = [line for line in md.splitlines() if line.startswith("![")]
    names = [line.split("](", 1)[1].rstrip(")") for line in images]
    assert sorted(names) == sorted(R.PLOTS)
    # report.md = the printed Markdown + the image lines and a "Written ..." line
    assert [line for line in md.splitlines() if line and not line.startswith(("![", "Written "))] == \
        [line for line in out.splitlines() if line]
    for name in R.PLOTS:
        width, height = _png_size(full_run["out"] / name)
        assert width > 200 and height > 200
    import matplotlib.image

    assert matplotlib.image.imread(full_run["out"] / "latency.png").shape[2] in (3, 4)  # decodes
    assert sorted(p.name for p in full_run["out"].iterdir()) == sorted([*R.PLOTS, "report.md"])  # no temp files


def test_partial_run_names_what_is_missing_and_never_a_traceback(tmp_path):
    run = tmp_path / "run"
    _srs(run / "srs" / "llm2rec-ids", "llm2rec", "ids", RANKS["llm2rec-ids"], [3], (100.0, 0.0))
    _srs(run / "srs" / "llm2rec-old", "llm2rec", "x", RANKS["llm2rec-ids"], [3], (1.0, 0.0))
    # csft running: its log, no stage.json yet (written last); a torn last line
    _stage(run / "embedder", "llm2rec/csft", 10, 100.0, 2.5, 3.0, {1: 6.0, 5: 4.0}, 80, 8, finished=False)
    with open(run / "embedder" / "llm2rec" / "csft" / "log.jsonl", "a") as f:
        f.write('{"step": 10, "lo')
    _write(run / "onnx" / "item_embedder" / "export.json", "{not json")
    _write(run / "onnx" / "user_encoder" / "export.json", "[1, 2]")  # valid JSON of the wrong shape
    out_dir = tmp_path / "report"
    code = ("import sys; from train.__main__ import main; rc = main(sys.argv[1:]); "
            "sys.stderr.write(f'\\nTORCH={\"torch\" in sys.modules}\\n'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "report", "--run", str(run), "--out", str(out_dir),
                           "--repository", str(tmp_path / "no-repository"), "--export-speed",
                           str(tmp_path / "none.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "TORCH=False" in done.stderr
    out = done.stdout
    for path, what in ((run / "data" / "stats.txt", "dataset statistics"),
                       (run / "srs" / "llm2rec-base" / "summary.json", "SmolLM2 as it is"),
                       (run / "srs" / "llm2rec" / "summary.json", "LLM2Rec (CSFT"),
                       (run / "srs" / "llmemb-ids" / "summary.json", "LLMEmb's downstream"),
                       (run / "srs" / "llmemb" / "summary.json", "LLMEmb (SCFT → RAT"),
                       (run / "served.json", "the model served"),
                       (run / "embeddings" / "base" / "manifest.json", "item embeddings"),
                       (run / "embeddings" / "llm2rec" / "manifest.json", "item embeddings"),
                       (run / "embeddings" / "llmemb" / "manifest.json", "item embeddings"),
                       (run / "embedder" / "llm2rec" / "mntp" / "stage.json", "mntp"),
                       (run / "embedder" / "llm2rec" / "item-contrastive" / "stage.json", "item-contrastive"),
                       (run / "embedder" / "scft" / "stage.json", "LLMEmb's scft"),
                       (run / "onnx" / "item_embedder_int8" / "model.onnx", "int8"),
                       (tmp_path / "no-repository" / "llmrec.json", "Triton"),
                       (run / "index" / "manifest.json", "FAISS index"),
                       (run / "serving" / "demo-record.json", "demo")):
        line = [x for x in out.splitlines() if f"`{path}`" in x]
        assert len(line) == 1 and line[0].startswith("- missing: ") and what in line[0], (path, line)
    # the other SRS folder is pointed at, not guessed
    assert "other SRS runs next to it: llm2rec-ids, llm2rec-old (choose one with --srs-llm2rec)" in out
    assert f"- unreadable: `{run / 'onnx' / 'item_embedder' / 'export.json'}`" in out
    assert f"- unreadable: `{run / 'onnx' / 'user_encoder' / 'export.json'}` (the user encoder export: `make " \
           "deploy`): not a JSON object" in out
    assert "int8 gate: not recorded in this run; missing: " in out
    # no item count anywhere: the random row is left out with a line
    assert "- no random-ranking row: the item count is unknown" in out and "random ranking of" not in out
    # what exists is still reported: the ID row, the unfinished stage from its log; no baseline pair: no interval
    assert _row(out, "ID-SASRec (LLM2Rec's downstream)")[4] == "0.2000"
    assert "Paired against" not in out
    assert _row(out, "csft") == ["csft", "LLM2Rec", "not finished", "5", "50.0 s", "—", "—", "6.0000 → 4.0000", "—",
                                 "—", "—"]
    assert "csft: no stage.json yet (unfinished); its log reaches step 5" in out
    assert "## Serving (live demo)" in out and "## Cold items" in out and "## Served model" in out
    md = (out_dir / "report.md").read_text()
    assert "- missing: " in md and "![" in md
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["quality.png", "srs-validation.png", "stage-losses.png"]


def test_an_input_of_an_unexpected_shape_costs_its_section_a_line_not_the_report(full_run, capsys):
    summary = full_run["run"] / "srs" / "llm2rec-ids" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "seeds": 5}))  # not a list
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    quality = _section(out, "Quality (test, full ranking)")
    assert quality.strip().startswith("- could not read the inputs of this section: TypeError")
    assert _row(out, "csft")[2] == "finished" and _row(out, "Recommend")[3] == "30.0"  # the rest is there


def test_empty_run_folder_is_all_missing_lines_and_no_plots(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, out, err = _main(capsys, "--run", str(tmp_path / "run"), "--repository", str(tmp_path / "r"),
                           "--export-speed", str(tmp_path / "e.json"))
    assert code == 0 and "(no plots)" in err
    assert [line.split("## ", 1)[1] for line in out.splitlines() if line.startswith("## ")] == [
        "Dataset", "Quality (test, full ranking)", "Cold items (test targets never seen in training)",
        "Served model", "Embedder stages", "Export", "Serving (live demo)"]
    body = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert all(line.startswith("- ") for line in body), body
    assert list((tmp_path / "run" / "report").iterdir()) == [tmp_path / "run" / "report" / "report.md"]


def test_plots_of_inputs_gone_since_the_last_report_are_removed(full_run, capsys):
    assert _main(capsys, *_full_args(full_run))[0] == 0
    assert (full_run["out"] / "latency.png").is_file()
    full_run["record"].unlink()
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0 and f"- missing: `{full_run['record']}`" in out
    assert not (full_run["out"] / "latency.png").exists() and (full_run["out"] / "quality.png").is_file()
    assert "latency.png" not in (full_run["out"] / "report.md").read_text()


def test_failed_demo_record_and_mismatched_deployment_are_flagged(full_run, capsys):
    record = json.loads(full_run["record"].read_text())
    record.update(ok=False, error="call failed: UNAVAILABLE: no Triton")
    record["calls"][-1].update(ok=False, status="UNAVAILABLE")
    record["new_item"]["rank"] = None
    full_run["record"].write_text(json.dumps(record))
    # the repository written from other exports, the index of another item table, the gate of another embedder
    repo = json.loads((full_run["repository"] / "llmrec.json").read_text())
    repo["sources"]["embedder"].update(export_sha256="0" * 64, path="/elsewhere/item_embedder")
    (full_run["repository"] / "llmrec.json").write_text(json.dumps(repo))
    index = full_run["run"] / "index" / "manifest.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "item_vectors_sha256": "9" * 64}))
    speed = json.loads(full_run["export_speed"].read_text())
    speed["settings"]["embedder"] = "runs/other/embedder/item-contrastive"
    speed["embedder"]["embedder_sha256"] = "c" * 64
    full_run["export_speed"].write_text(json.dumps(speed))
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    assert "**the demo failed**: call failed: UNAVAILABLE: no Triton" in out
    assert _row(out, "GetItems")[:3] == ["GetItems", "5", "1 (UNAVAILABLE)"]
    assert "it is not in the top 100 of 1683 items" in out
    assert "built from these exports: **no** (from `/elsewhere/item_embedder`)" in out
    assert "holds the user encoder's item table: **no**" in out
    assert "measured on `runs/other/embedder/item-contrastive`, **not** the embedder exported here" in out
    assert "**" not in _section(out, "Export").split("- The item embedder export", 1)[1].split("\n", 1)[0]
    export = full_run["run"] / "onnx" / "item_embedder" / "export.json"  # an embedder of another run
    exported = json.loads(export.read_text())
    exported["source"]["checkpoint"] = "/elsewhere/embedder/scft/embedder"
    export.write_text(json.dumps(exported))
    out = _main(capsys, *_full_args(full_run))[1]
    assert (f"- The item embedder export is of `/elsewhere/embedder/scft/embedder`: **not** one of this run's "
            f"embedders (`{full_run['run'] / 'embedder'}`); **not** the served model's embedder") in out
    del speed["embedder"]["embedder_sha256"]  # older results: the path alone proves nothing
    full_run["export_speed"].write_text(json.dumps(speed))
    out = _main(capsys, *_full_args(full_run))[1]
    assert "whether that is the embedder exported here is not recorded (no sha256)" in out


def test_demo_record_fixture_has_the_fields_serving_demo_writes():
    """The hand-written record above must keep up with serving/demo.py's build_record."""
    import argparse

    from serving.demo import build_record

    args = argparse.Namespace(requests="r", model_repository="m", index="i", k=3, title="t", genres="g",
                              triton_url=None)
    real = build_record(args, "2026-01-01T00:00:00Z", 1.0, None, None, None, None, None)
    fake = _record()
    assert set(real) == set(fake) and set(real["inputs"]) == set(fake["inputs"])


def test_cli_is_registered_and_refuses_a_run_that_is_not_a_folder(tmp_path):
    listing = subprocess.run([sys.executable, "-m", "train"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "report" in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "train", "report", "--run", str(tmp_path / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --run") and "Traceback" not in bad.stderr
    assert not (tmp_path / "nope").exists()
