"""`python -m train report`: the summary tables and plots of a `make demo` run, on hand-written run folders.

The files copy the field names of what the real steps write (train/stages/loop.py's stage.json and
log.jsonl, train/srs/runs.py's summary.json and trainer.py's seed-*/log.jsonl, export.json, deploy.json,
llmrec.json, the index manifest, bench/export_speed.py's result, serving/demo.py's --record) with small
numbers whose table cells are worked out by hand below. CI has no runs/ folder: nothing here reads one.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from train import report as R

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) if not isinstance(obj, str) else obj)
    return path


def _bytes(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stats(**m):
    """summary.json's `test`: flattened keys -> {"mean", "std"} (train/srs/runs.py summarise)."""
    return {k: {"mean": v[0], "std": v[1]} if isinstance(v, tuple) else {"mean": v, "std": 0.0} for k, v in m.items()}


def _full(r10, r20, n10, n20):
    return {"full/recall@10": r10, "full/recall@20": r20, "full/ndcg@10": n10, "full/ndcg@20": n20,
            "full/recall@5": 0.01, "full/ndcg@5": 0.01, "num_examples": 40.0}


def _srs(folder: Path, items: str, seeds: list[int], test: dict, best: list[int], train_seconds: tuple,
         fusion: str = "none", standardize: bool = False, adapter: str = "mlp") -> None:
    config = {"adapter": adapter, "backbone": "sasrec", "early_stop_metric": "recall@20", "fusion": fusion,
              "items": items, "ks": [5, 10, 20], "standardize": standardize, "max_len": 50}
    per_seed = [{"best_epoch": b, "device": "cpu", "epochs_run": b + 1, "seed": s,
                 "test": {"full": {}, "breakdown": {}, "num_examples": 40}, "train_seconds": 1.0,
                 "valid": {"recall@20": 0.3}} for s, b in zip(seeds, best, strict=True)]
    _write(folder / "summary.json", {
        "config": config, "dataset": "planted", "items": {"kind": "ids" if items == "ids" else "frozen"},
        "per_seed": per_seed, "seeds": seeds, "test": _stats(**test),
        "train_seconds": {"mean": train_seconds[0], "std": train_seconds[1]}})
    for seed, b in zip(seeds, best, strict=True):
        lines = [{"event": "epoch", "seed": seed, "epoch": e, "loss": 7.0 - 0.5 * e,
                  "valid": {"recall@5": 0.1, "ndcg@5": 0.05, "recall@10": 0.2, "ndcg@10": 0.1,
                            "recall@20": 0.2 + 0.05 * min(e, b), "ndcg@20": 0.12},
                  "best_epoch": min(e, b), "seconds": 1.5} for e in range(1, b + 2)]
        _write(folder / f"seed-{seed}" / "log.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
        _write(folder / f"seed-{seed}" / "metrics.json", per_seed[0])


def _stage(folder: Path, name: str, steps: int, wall: float, load: float, final: float, log: dict[int, float],
           samples: int, batch: int, finished: bool = True) -> None:
    lines = [{"step": s, "loss": loss, "lr": 0.0001, "seconds": 1.0, "elapsed": s * wall / steps}
             for s, loss in log.items()]
    _write(folder / name / "log.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    if finished:
        _write(folder / name / "stage.json", {
            "config": {"batch_size": batch, "steps": steps, "log_every": 5}, "created": "2026-01-01T00:00:00+00:00",
            "dataset": {"key": "abc", "name": "planted"}, "effective_batch": batch, "final_loss": final,
            "input_embedder": "smollm2", "load_seconds": load, "processes": 1, "samples": samples, "stage": name,
            "status": "finished", "steps": steps, "wall_seconds": wall})


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
        "new_item": {"title": "Toy Story 2", "genres": "Animation", "user": "7", "id": 41, "index_size": 41,
                     "recommendations_with_new_item": ranked, "nearest": {"id": 5, "title": "Item number 5"},
                     "similar_history": [{"id": i, "title": f"Item number {i}"} for i in (9, 8, 7, 6, 5)],
                     "rank": 3, "rank_depth": 100, "candidates_ranked": 38, "ranked_with_nearest": ranked,
                     "deleted": 1, "index_size_after_delete": 40, "missing_after_delete": True},
    }


def build_run(root: Path) -> dict[str, Path]:
    """A complete fake `make demo` run in root/run (+ repository, export-speed result and demo record)."""
    run = root / "run"
    _write(run / "data" / "stats.txt",  # train/data/__main__.py format_table
           "dataset                      planted\n"
           "users                        120\n"
           "items                        40\n"
           "interactions                 1,900\n"
           "density                      39.5833%\n"
           "examples (train/valid/test)  1,660 / 120 / 120\n"
           "sequence length\n"
           "  min                        12\n")
    # ID: 1 seed; text: 2 seeds (mean ± std); hybrid: 1 seed with cold items
    _srs(run / "srs" / "sasrec-ids", "ids", [2024], _full(0.2, 0.3, 0.1, 0.125), [3], (100.0, 0.0), adapter="linear")
    _srs(run / "srs" / "sasrec-text", "run/embeddings/items.safetensors", [1, 2],
         _full((0.25, 0.01), (0.33, 0.02), 0.12, (0.15, 0.005)), [4, 5], (150.0, 10.0), standardize=True)
    hybrid = {**_full(0.22, 0.36, 0.11, 0.15), "breakdown/cold_items/count": 8, "breakdown/cold_items/num_items": 5,
              "breakdown/cold_items/recall@10": 0.125, "breakdown/cold_items/recall@20": 0.25,
              "breakdown/cold_items/ndcg@10": 0.05, "breakdown/cold_items/ndcg@20": 0.0625}
    _srs(run / "srs" / "sasrec-hybrid", "run/embeddings/items.safetensors", [2024], hybrid, [2], (90.0, 0.0),
         fusion="init")
    emb = run / "embedder"
    _stage(emb, "csft", 10, 100.0, 2.5, 3.0, {1: 6.0, 5: 4.0, 10: 3.5}, 80, 8)
    _stage(emb, "mntp", 20, 200.0, 1.0, 5.25, {1: 10.0, 10: 7.0, 20: 5.5}, 160, 16)
    _stage(emb, "item-contrastive", 20, 300.0, 1.0, 1.5, {1: 2.75, 10: 2.0, 20: 1.25}, 160, 16)
    _write(run / "embeddings" / "manifest.json", {"count": 40, "dim": 576, "file": "items.safetensors",
                                                  "format": "llmrec.embeddings/1", "rows": 41, "seconds": 12.5,
                                                  "text": "title", "sha256": "e" * 64})
    onnx = run / "onnx"
    _bytes(onnx / "item_embedder" / "model.onnx", MIB)
    _bytes(onnx / "item_embedder" / "model.onnx_data", MIB)  # external weights count in the model's size
    _write(onnx / "item_embedder" / "tokenizer" / "tokenizer.json", "{}")
    validation = {"threshold": 0.9999, "passed": True, "min_cosine": 0.99999, "mean_cosine": 0.999999,
                  "max_abs_diff": 1e-5, "topk_overlap": 1.0, "cases": []}
    embedder_export = _write(onnx / "item_embedder" / "export.json", {
        "format": "llmrec.onnx/1", "kind": "embedder", "dim": 64, "hidden_size": 576,
        "adapter": {"checkpoint": str(run / "srs" / "sasrec-text" / "seed-1"), "sha256": "a" * 64, "kind": "mlp"},
        "source": {"checkpoint": str(emb / "item-contrastive" / "embedder"), "sha256": "b" * 64},
        "files": {"model.onnx": "c" * 64}, "validation": validation, "export_seconds": 90.0})
    _bytes(onnx / "user_encoder" / "model.onnx", MIB // 2)
    _bytes(onnx / "user_encoder" / "item_vectors.safetensors", MIB // 4)
    user_export = _write(onnx / "user_encoder" / "export.json", {
        "format": "llmrec.onnx/1", "kind": "user_encoder", "dim": 64, "max_len": 50,
        "source": {"checkpoint": str(run / "srs" / "sasrec-text" / "seed-1"), "sha256": "a" * 64,
                   "dataset": "planted"},
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
    _write(run / "index" / "manifest.json", {"count": 40, "dim": 64, "factory": "Flat", "metric": "inner_product",
                                             "format": "llmrec.index/1", "item_vectors_sha256": "f" * 64})
    speed = _write(root / "export_speed.json", {
        "environment": {"date": "2026-01-01T00:00:00+00:00"}, "settings": {"embedder": str(emb / "item-contrastive")},
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

    assert _row(out, "planted") == ["planted", "120", "40", "1,900", "39.5833%", "1,660 / 120 / 120"]
    # quality: mean over seeds, ± std with several seeds; best epoch per seed; train time
    assert _row(out, "ID-SASRec") == ["ID-SASRec", "ids", "1", "0.2000", "0.3000", "0.1000", "0.1250", "3", "100.0 s"]
    assert _row(out, "SASRec on SmolLM2 item embeddings") == [
        "SASRec on SmolLM2 item embeddings", "text (mlp, standardized)", "2", "0.2500 ± 0.0100", "0.3300 ± 0.0200",
        "0.1200 ± 0.0000", "0.1500 ± 0.0050", "4, 5", "2 min 30 s"]
    quality = out.split("## Quality", 1)[1].split("## ", 1)[0]
    assert _row(quality, "hybrid (IDs + SmolLM2)") == [
        "hybrid (IDs + SmolLM2)", "ids + text, init (mlp)", "1", "0.2200", "0.3600", "0.1100", "0.1500", "2",
        "90.0 s"]
    assert ("SASRec on SmolLM2 item embeddings: Recall@10 +25.0%, Recall@20 +10.0%, NDCG@10 +20.0%, NDCG@20 +20.0%; "
            "hybrid (IDs + SmolLM2): Recall@10 +10.0%, Recall@20 +20.0%, NDCG@10 +10.0%, "
            "NDCG@20 +20.0%.") in out
    # cold items: only the hybrid's summary has the breakdown
    cold = out.split("## Cold items", 1)[1].split("## ", 1)[0]
    assert _row(cold, "hybrid (IDs + SmolLM2)") == [
        "hybrid (IDs + SmolLM2)", "8", "5", "0.1250", "0.2500", "0.0500", "0.0625"]
    assert "| ID-SASRec |" not in cold
    # stages: stage.json's wall time, load time and final loss; log.jsonl's first and last logged loss
    assert _row(out, "csft") == ["csft", "finished", "10", "100.0 s", "2.5 s", "3.0000", "6.0000 → 3.5000", "80", "8"]
    assert _row(out, "mntp") == ["mntp", "finished", "20", "3 min 20 s", "1.0 s", "5.2500", "10.0000 → 5.5000", "160",
                                 "16"]
    assert _row(out, "item-contrastive")[3:7] == ["5 min 00 s", "1.0 s", "1.5000", "2.7500 → 1.2500"]
    assert _row(out, "total")[3] == "10 min 00 s"
    assert "Item embeddings: 40 items × 576 (title) in 12.5 s" in out
    # export: validation, sizes (model = model.onnx + external data; folder = everything), times
    assert _row(out, "item embedder (+ SRS adapter)") == [
        "item embedder (+ SRS adapter)", "passed (min cosine ≥ 0.9999)", "0.9999900000", "1.000", "64", "2.0", "2.0",
        "90.0 s"]
    assert _row(out, "user encoder") == ["user encoder", "passed (min cosine ≥ 0.9999)", "0.9999990000", "1.000", "64",
                                         "0.5", "0.8", "30.0 s"]
    assert _row(out, "item embedder int8 (not deployed)")[5:7] == ["1.0", "1.0"]
    assert "embedder 90.0 s, user-encoder 30.0 s, int8 12.0 s, repository 3.0 s, index 1.5 s." in out
    assert "this run's item-contrastive stage." in out and "this run's text SASRec." in out and "**" not in \
        out.split("## Export", 1)[1].split("int8 quality gate", 1)[0]
    assert "measured on the embedder exported here (same sha256)" in out
    assert "int8 quality gate of this run's variant" in out and "Recall@10 0.1960 vs fp32 0.2000" in out
    assert _row(out, "int8 nbits8-w") == ["int8 nbits8-w", "0.9950", "0.810 (≥ 0.8)", "+2.0%", "+1.9% (≤ 2%)",
                                        "pass"]
    assert _row(out, "ort-int8-nbits8") == ["ort-int8-nbits8", "0.9900", "0.850 (≥ 0.8)", "+1.0%", "—", "pass"]
    assert "python flavour, models item_embedder, item_encoder, tokenizer, user_encoder" in out
    assert "built from these exports: yes" in out
    assert "40 items × 64, Flat, inner_product; holds the user encoder's item table: yes" in out
    # serving: p50 / mean / max per method from the record's calls, in the order first called
    assert _row(out, "GetItems") == ["GetItems", "5", "0", "3.0", "22.0", "100.0"]
    assert _row(out, "Recommend") == ["Recommend", "5", "0", "30.0", "30.0", "50.0"]
    assert _row(out, "EmbedItems") == ["EmbedItems", "1", "0", "70.0", "70.0", "70.0"]
    methods = [line.split(" | ")[0][2:] for line in out.split("| method |", 1)[1].splitlines()[2:7]]
    assert methods == ["GetItems", "Recommend", "EmbedItems", "UpsertItems", "DeleteItems"]
    assert "start-up to SERVING 12.0 s, total wall time 20.0 s" in out and "all calls succeeded" in out
    assert ('New item "Toy Story 2" (id 41, added live, deleted again: yes): for a user who just watched the 5 '
            'catalogue items nearest to it (the nearest: "Item number 5") it ranks **#3** of 41 items.') in out
    assert _row(out, "7") == ["7", "12", "Item number 11 (2.75); Item number 12 (2.50); Item number 13 (2.25)"]


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
    _srs(run / "srs" / "sasrec-ids", "ids", [2024], _full(0.2, 0.3, 0.1, 0.125), [3], (100.0, 0.0))
    _srs(run / "srs" / "sasrec-text-std", "x", [2024], _full(0.2, 0.3, 0.1, 0.125), [3], (1.0, 0.0))
    # csft running: its log, no stage.json yet (written last); a torn last line
    _stage(run / "embedder", "csft", 10, 100.0, 2.5, 3.0, {1: 6.0, 5: 4.0}, 80, 8, finished=False)
    with open(run / "embedder" / "csft" / "log.jsonl", "a") as f:
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
                       (run / "srs" / "sasrec-text" / "summary.json", "SASRec on SmolLM2 item embeddings"),
                       (run / "srs" / "sasrec-hybrid" / "summary.json", "hybrid"),
                       (run / "embeddings" / "manifest.json", "item embeddings"),
                       (run / "embedder" / "mntp" / "stage.json", "mntp"),
                       (run / "embedder" / "item-contrastive" / "stage.json", "item-contrastive"),
                       (run / "onnx" / "item_embedder_int8" / "model.onnx", "int8"),
                       (tmp_path / "no-repository" / "llmrec.json", "Triton"),
                       (run / "index" / "manifest.json", "FAISS index"),
                       (run / "serving" / "demo-record.json", "demo")):
        line = [x for x in out.splitlines() if f"`{path}`" in x]
        assert len(line) == 1 and line[0].startswith("- missing: ") and what in line[0], (path, line)
    # the other SRS folder is pointed at, not guessed
    assert "other SRS runs next to it: sasrec-ids, sasrec-text-std (choose one with --srs-text)" in out
    assert f"- unreadable: `{run / 'onnx' / 'item_embedder' / 'export.json'}`" in out
    assert f"- unreadable: `{run / 'onnx' / 'user_encoder' / 'export.json'}` (the user encoder export: `make " \
           "deploy`): not a JSON object" in out
    assert "int8 gate: not recorded in this run; missing: " in out
    # what exists is still reported: the ID row, the unfinished stage from its log
    assert _row(out, "ID-SASRec")[3] == "0.2000"
    assert _row(out, "csft") == ["csft", "not finished", "5", "50.0 s", "—", "—", "6.0000 → 4.0000", "—", "—"]
    assert "csft: no stage.json yet (unfinished); its log reaches step 5" in out
    assert "## Serving (live demo)" in out and "## Cold items" in out
    md = (out_dir / "report.md").read_text()
    assert "- missing: " in md and "![" in md
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["quality.png", "srs-validation.png", "stage-losses.png"]


def test_an_input_of_an_unexpected_shape_costs_its_section_a_line_not_the_report(full_run, capsys):
    summary = full_run["run"] / "srs" / "sasrec-ids" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "seeds": 5}))  # not a list
    code, out, _ = _main(capsys, *_full_args(full_run))
    assert code == 0
    quality = out.split("## Quality (test, full ranking)", 1)[1].split("## ", 1)[0]
    assert quality.strip().startswith("- could not read the inputs of this section: TypeError")
    assert _row(out, "csft")[1] == "finished" and _row(out, "Recommend")[3] == "30.0"  # the rest is there


def test_empty_run_folder_is_all_missing_lines_and_no_plots(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, out, err = _main(capsys, "--run", str(tmp_path / "run"), "--repository", str(tmp_path / "r"),
                           "--export-speed", str(tmp_path / "e.json"))
    assert code == 0 and "(no plots)" in err
    assert [line.split("## ", 1)[1] for line in out.splitlines() if line.startswith("## ")] == [
        "Dataset", "Quality (test, full ranking)", "Cold items (test targets never seen in training)",
        "LLM2Rec stages", "Export", "Serving (live demo)"]
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
    assert "it is not in the top 100 of 41 items" in out
    assert "built from these exports: **no** (from `/elsewhere/item_embedder`)" in out
    assert "holds the user encoder's item table: **no**" in out
    assert "measured on `runs/other/embedder/item-contrastive`, **not** the embedder exported here" in out
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
