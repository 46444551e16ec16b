"""Export speed: the item embedder and the user encoder under torch eager, ONNX Runtime fp32 and ORT int8.

    python bench/export_speed.py [--embedder EMBEDDER] [--srs SRS_SEED_DIR] [--threads 2]   (default: make demo's)
                                 [--recipes dynamic dynamic-pc-skip nbits8 nbits8-w] [--work runs/bench/export]

Item embedder (MovieLens-100k titles, the whole catalogue): items/s and p50 batch latency at batch 1 and
64 for torch eager, ORT fp32 without graph optimisation, ORT fp32 and each int8 recipe, all in the same
run with the same threads (ratios against torch eager are what to read: the machine is shared); batch 64
with and without length bucketing; export and quantization time, file sizes; quality of every variant
against ORT fp32 (cosine, top-10 neighbour overlap of the final item vectors, and the trained SRS's test
Recall@10 with its frozen item table recomputed from the variant's embeddings: `export.onnx.quantize.gate`).
Per-call cost: ms per call at batch 1, 2, 4 and 8 (the first texts of the batch-1 set) and the least-squares
intercept, the fixed part of a call that no batch amortises (it explains a variant far slower at batch 1 than
at batch 64).
User encoder: histories/s and p50 at batch 1 and 64, quality (cosine, top-10 retrieval overlap, Recall@10).
Bar for serving an int8 variant: the gate passed at >= 1.6x ORT fp32 items/s at batch 64 or >= 2x at batch 1.
Writes bench/results/export_speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, SCAN_BATCHES, per_call_scan, served, write_result  # noqa: E402
from export.onnx import quantize as Q  # noqa: E402

logger = logging.getLogger("llmrec.bench")


def size_mb(path: Path) -> float:
    files = [path, *path.parent.glob(path.name + "*data")]
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 1)


def timed_pass(run, ids: list[list[int]], batch_size: int, bucket: bool) -> tuple[np.ndarray, dict]:
    """Embed `ids` in batches with `run(batch_ids) -> [B, D]`; items/s over the pass and p50 batch latency."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i])) if bucket else list(range(len(ids)))
    out, times = None, []
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        t = time.perf_counter()
        v = run([ids[i] for i in rows])
        times.append(time.perf_counter() - t)
        if out is None:
            out = np.empty((len(ids), v.shape[1]), dtype=np.float32)
        out[rows] = v
    total = time.perf_counter() - t0
    return out, {"items_per_s": round(len(ids) / total, 2), "p50_ms": round(1000 * statistics.median(times), 2),
                 "seconds": round(total, 2), "items": len(ids), "batch_size": batch_size, "bucketed": bucket}


SPEED_BAR = {"batch64": 1.6, "batch1": 2.0}  # int8 items/s over ORT fp32's, either one, with the gate passed


def ort_runner(sess, pad_id: int):
    out_name = sess.get_outputs()[0].name

    def run(batch):
        feed = Q.collate(batch, pad_id)
        return Q.pool_output(sess.run([out_name], feed)[0], feed["attention_mask"])
    return run


def torch_runner(embedder):
    def run(batch):
        b = embedder.collate(batch)
        with torch.no_grad():
            return embedder(b["input_ids"], b["attention_mask"]).numpy()
    return run


# ----------------------------------------------------------------------------------------------- item embedder
def bench_embedder(args, data, srs, work: Path) -> dict:
    from export.onnx.embedder import export_embedder
    from train.embed import item_texts
    from train.stages.common import load_input_embedder

    out_dir = work / "item_embedder"
    if not (out_dir / "export.json").is_file():
        export_embedder(args.embedder, out_dir)
    manifest = json.loads((out_dir / "export.json").read_text())
    export_seconds = manifest["export_seconds"]  # Optimum export + splice + validation, as export recorded it
    fp32 = out_dir / "model.onnx"
    embedder = load_input_embedder(args.embedder, device="cpu")
    texts = item_texts(data, "title")[1:]
    ids = embedder.token_ids(texts)
    pad = embedder.pad_token_id
    files = {"fp32": {"path": str(fp32), "mb": size_mb(fp32), "seconds": export_seconds}}
    variants: dict[str, Path] = {"ort-fp32": fp32}
    for recipe in args.recipes:
        dst = work / f"item_embedder_int8_{recipe}.onnx"
        timing = dst.with_suffix(".seconds.json")  # the quantization time of a variant made by an earlier run
        if not (dst.is_file() and timing.is_file()):
            t = time.perf_counter()
            Q.quantize_int8(fp32, dst, recipe)
            timing.write_text(json.dumps({"seconds": round(time.perf_counter() - t, 1)}))
        files[recipe] = {"path": str(dst), "mb": size_mb(dst), **json.loads(timing.read_text())}
        variants[f"ort-int8-{recipe}"] = dst
    runners = {"torch-eager": torch_runner(embedder),
               "ort-fp32-noopt": ort_runner(Q.session(fp32, args.threads, "disabled"), pad)}
    runners.update({name: ort_runner(Q.session(path, args.threads, "all"), pad) for name, path in variants.items()})
    batch1 = [ids[i] for i in np.linspace(0, len(ids) - 1, args.batch1_items).astype(int)]
    rows, vectors = {}, {}
    for name, run in runners.items():
        run(ids[:4])  # warm-up
        logger.info("item embedder: %s", name)
        vectors[name], b64 = timed_pass(run, ids, 64, bucket=True)
        _, b1 = timed_pass(run, batch1, 1, bucket=False)
        rows[name] = {"batch64": b64, "batch1": b1, "scan": per_call_scan(run, batch1)}
        if name in ("torch-eager", "ort-fp32", f"ort-int8-{args.recipes[-1]}"):
            _, rows[name]["batch64_unbucketed"] = timed_pass(run, ids, 64, bucket=False)
    base = rows["torch-eager"]
    for r in rows.values():
        for key in ("batch64", "batch1", "batch64_unbucketed"):
            if key in r and key in base:
                r[key]["vs_torch"] = round(r[key]["items_per_s"] / base[key]["items_per_s"], 2)
    ref = vectors["ort-fp32"]
    quality = {"torch-vs-ort-fp32": Q.cosine(vectors["torch-eager"], ref).min().item(),
               "anisotropy_mean_pairwise_cosine": Q.mean_pairwise_cosine(ref)}
    final = hits = None
    h_ref = r_ref = None
    if srs is not None:
        model = srs

        def final(v):
            return Q.srs_item_space(model, v)

        def hits(v):
            return Q.srs_hits(model, data, v)
        h_ref = hits(ref)
        r_ref = float(h_ref.mean())
    gates = {name: Q.gate(ref, vectors[name], final=final, hits=hits, hits_reference=h_ref).to_dict()
             for name in vectors if name.startswith("ort-int8")}
    return {"threads": args.threads, "items": len(ids), "batch1_items": len(batch1), "files": files,
            "embedder_sha256": manifest["source"]["sha256"],  # what the gate was measured on (by content)
            "speed": rows, "quality": quality, "gate": gates, "srs_recall_fp32": r_ref}


# ----------------------------------------------------------------------------------------------- user encoder
def bench_user_encoder(args, data, work: Path) -> dict:
    from export.onnx.user_encoder import export_user_encoder
    from export.onnx.validate import compare
    from train.eval import full_ranking

    out_dir = work / "user_encoder"
    if not (out_dir / "export.json").is_file():
        export_user_encoder(args.srs, out_dir)
    seconds = json.loads((out_dir / "export.json").read_text())["export_seconds"]
    fp32 = out_dir / "model.onnx"
    int8 = work / "user_encoder_int8.onnx"
    Q.quantize_int8(fp32, int8, Q.Recipe("user-dynamic-pc", "dynamic", "", per_channel=True, op_types=("MatMul",)))
    model, _ = Q.load_srs(args.srs)
    cfg = model.config
    table = model.item_vectors().detach()
    table_np = table.numpy()
    examples = data.test
    idx = np.arange(len(examples))
    hist_all, _, _ = examples.batch(idx, cfg.max_len, cfg.padding)

    def torch_run(h):
        with torch.no_grad():
            return model.user_vectors(torch.from_numpy(h), table).numpy()

    def ort_run(sess):
        names = [i.name for i in sess.get_inputs()]

        def run(h):
            return sess.run(None, {names[0]: table_np[h], names[1]: (h != 0).astype(np.int64)})[0]
        return run

    runners = {"torch-eager": torch_run, "ort-fp32": ort_run(Q.session(fp32, args.threads)),
               "ort-int8": ort_run(Q.session(int8, args.threads))}
    rows, users = {}, {}
    for name, run in runners.items():
        run(hist_all[:2])
        res = {}
        for bs in (1, 64):
            n = len(hist_all) if bs == 64 else min(len(hist_all), 200)
            times, outs = [], []
            t0 = time.perf_counter()
            for s in range(0, n, bs):
                t = time.perf_counter()
                outs.append(run(hist_all[s : min(s + bs, n)]))
                times.append(time.perf_counter() - t)
            total = time.perf_counter() - t0
            res[f"batch{bs}"] = {"histories_per_s": round(n / total, 1),
                                 "p50_ms": round(1000 * statistics.median(times), 3)}
            if bs == 64:
                users[name] = np.concatenate(outs)
        rows[name] = res
    for r in rows.values():
        for k in ("batch1", "batch64"):
            r[k]["vs_torch"] = round(r[k]["histories_per_s"] / rows["torch-eager"][k]["histories_per_s"], 2)
    ref = users["ort-fp32"]
    quality = {}
    for name in ("torch-eager", "ort-int8"):
        cos = Q.cosine(ref, users[name])
        overlap = compare(ref, users[name], k=10, items=table_np[1:], metric="inner_product")["topk_overlap"]
        lookup = {int(i): k for k, i in enumerate(idx)}
        u = users[name]

        def score(batch_idx, u=u, lookup=lookup):
            return torch.from_numpy(u[[lookup[int(i)] for i in batch_idx]] @ table_np.T)
        rec = full_ranking(score, examples, data.num_items, ks=(10,), exclude_history=cfg.exclude_history).metrics
        quality[name] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                         "top10_retrieval_overlap": overlap, "recall@10": rec["recall@10"]}
    return {"export_seconds": seconds, "files": {"fp32_mb": size_mb(fp32), "int8_mb": size_mb(int8)},
            "histories": len(hist_all), "speed": rows, "quality": quality}


# ----------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    e = res["embedder"]
    lines = [f"Item embedder ({e['items']} MovieLens-100k titles, {e['threads']} threads; ratios vs torch eager)", "",
             "| variant | b64 items/s | b64 p50 ms | b1 items/s | b1 p50 ms | b64 no bucketing items/s | file MB | "
             "made in (s) | cosine | top-10 overlap (final) | top-10 overlap (raw) | R@10 | R@10 drop | "
             "R@10 drop, 95% worst end | gate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in e["speed"].items():
        g = e["gate"].get(name)
        recipe = name.replace("ort-int8-", "")
        made = e["files"].get(recipe, e["files"]["fp32"] if name == "ort-fp32" else {})
        unb = r.get("batch64_unbucketed")
        cells = [name, f"{r['batch64']['items_per_s']} ({r['batch64'].get('vs_torch', 1)}x)", r["batch64"]["p50_ms"],
                 f"{r['batch1']['items_per_s']} ({r['batch1'].get('vs_torch', 1)}x)", r["batch1"]["p50_ms"],
                 f"{unb['items_per_s']} ({unb.get('vs_torch', 1)}x)" if unb else "", made.get("mb", ""),
                 made.get("seconds", "")]
        if g:
            drop = g["recall_drop"]
            bound = g.get("recall_drop_bound")
            cells += [f"{g['cosine_mean']:.4f}", f"{g['overlap']:.3f}",
                      f"{g['overlap_raw']:.3f}" if g.get("overlap_raw") is not None else "",
                      f"{g['recall']:.4f}" if g.get("recall") is not None else "",
                      f"{100 * drop:+.1f}%" if drop is not None else "",
                      f"{100 * bound:+.1f}%" if bound is not None else "", "pass" if g["passed"] else "fail"]
        else:
            cells += ["1" if "fp32" in name else "", "", "", f"{e['srs_recall_fp32']:.4f}" if e.get("srs_recall_fp32")
                      and name == "ort-fp32" else "", "", "", ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    fp32 = e["speed"]["ort-fp32"]
    lines += ["", "Per-call cost (ms per call for the first 1, 2, 4 and 8 of the batch-1 texts; fixed = the "
                  "least-squares intercept, paid by every call whatever its batch; negative when the texts' lengths "
                  "dominate):", "",
              "| variant | " + " | ".join(f"b{b} ms" for b in SCAN_BATCHES) + " | fixed ms per call | ms per item | "
              "b64 vs ORT fp32 | b1 vs ORT fp32 | gate + speed bar |",
              "|---|" + "---:|" * (len(SCAN_BATCHES) + 4) + "---|"]
    meeting = []
    for name, r in e["speed"].items():
        scan = r.get("scan")
        if not scan or not name.startswith("ort-"):
            continue
        ratios = {key: r[key]["items_per_s"] / fp32[key]["items_per_s"] for key in SPEED_BAR}
        g = e["gate"].get(name)
        verdict = ""
        if g is not None:
            fast = any(ratios[key] >= bar for key, bar in SPEED_BAR.items())
            verdict = "meets" if g["passed"] and fast else ("gate only" if g["passed"] else
                                                            ("speed only" if fast else "neither"))
            if verdict == "meets":
                meeting.append(name)
        lines.append(f"| {name} | " + " | ".join(str(scan["ms_per_call"][str(b)]) for b in SCAN_BATCHES) +
                     f" | {scan['fixed_ms']} | {scan['ms_per_item']} | {ratios['batch64']:.2f}x | "
                     f"{ratios['batch1']:.2f}x | {verdict} |")
    lines += ["", f"int8 variants that pass the gate at >= {SPEED_BAR['batch64']:g}x ORT fp32 items/s at batch 64 or "
                  f">= {SPEED_BAR['batch1']:g}x at batch 1: " + (", ".join(meeting) if meeting else "none") + "."]
    u = res["user_encoder"]
    lines += ["", f"User encoder ({u['histories']} test histories; exported in {u['export_seconds']} s)", "",
              "| variant | b64 histories/s | b64 p50 ms | b1 histories/s | b1 p50 ms | cosine | top-10 overlap "
              "| R@10 |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in u["speed"].items():
        q = u["quality"].get(name, {})
        lines.append(f"| {name} | {r['batch64']['histories_per_s']} ({r['batch64']['vs_torch']}x) | "
                     f"{r['batch64']['p50_ms']} | {r['batch1']['histories_per_s']} ({r['batch1']['vs_torch']}x) | "
                     f"{r['batch1']['p50_ms']} | {q.get('cosine_mean', 1):.4f} | "
                     f"{q.get('top10_retrieval_overlap', 1):.3f} | "
                     f"{q['recall@10']:.4f} |" if q else
                     f"| {name} | {r['batch64']['histories_per_s']} ({r['batch64']['vs_torch']}x) | "
                     f"{r['batch64']['p50_ms']} | {r['batch1']['histories_per_s']} ({r['batch1']['vs_torch']}x) | "
                     f"{r['batch1']['p50_ms']} | 1 | 1 | |")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = res["embedder"]["speed"]
    names = list(speed)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(x - 0.2, [speed[n]["batch64"]["items_per_s"] for n in names], 0.4, label="batch 64 (bucketed)")
    ax.bar(x + 0.2, [speed[n]["batch1"]["items_per_s"] for n in names], 0.4, label="batch 1")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("items/s")
    ax.set_title(f"item embedder, {res['embedder']['threads']} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedder", default=None, help="embedder checkpoint (default: the one `make demo` serves)")
    p.add_argument("--srs", default=None,
                   help="SRS trained on this embedder's vectors (downstream gate, user encoder; default: the one "
                        "`make demo` serves)")
    p.add_argument("--recipes", nargs="+", default=list(Q.RECIPES), choices=list(Q.RECIPES),
                   help="int8 recipes (export.onnx.quantize)")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    p.add_argument("--batch1-items", type=int, default=64)
    p.add_argument("--work", default="runs/bench/export")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("llmrec").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    args.embedder = args.embedder or served("embedder")
    args.srs = args.srs or served("srs")
    from train.data import load_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = load_dataset("ml-100k")
    srs, _ = Q.load_srs(args.srs)
    res = {"embedder": bench_embedder(args, data, srs, work), "user_encoder": bench_user_encoder(args, data, work),
           "settings": vars(args)}
    write_result("export_speed", res)
    md = markdown(res)
    (RESULTS / "export_speed.md").write_text(md + "\n")
    plot(res, RESULTS / "export_speed.png")
    print(md)


if __name__ == "__main__":
    main()
