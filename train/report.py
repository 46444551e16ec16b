"""`python -m train report --run RUN`: the end-of-`make demo` summary, as Markdown tables and PNG plots.

    python -m train report --run runs/demo [--demo-record FILE] [--out DIR]
        [--stats FILE] [--srs DIR] [--srs-ROW DIR ...] [--served FILE] [--embedder DIR]
        [--embeddings DIR] [--onnx DIR] [--repository DIR] [--index DIR] [--export-speed FILE]

Reads what the `make demo` steps wrote; the defaults are the Makefile's layout under RUN, each input can
be pointed elsewhere: --srs DIR is the parent of the five SRS rows (RUN/srs), --srs-ROW DIR one row's folder
(--srs-llm2rec-ids, --srs-llm2rec-base, --srs-llm2rec, --srs-llmemb-ids, --srs-llmemb; it wins over --srs):
  dataset     RUN/data/stats.txt                                    (python -m train data stats)
  quality     RUN/srs/<row>/summary.json for the rows of `MODELS` (LLM2Rec's downstream: llm2rec-ids,
              llm2rec-base, llm2rec; LLMEmb's: llmemb-ids, llmemb): preset, test Recall/NDCG@10/20 (full
              ranking, mean over seeds), best epoch, train time; a random ranking's expected Recall (the item
              count of stats.txt); every row against the ID-SASRec of its downstream on the same test users: the
              paired bootstrap 95% interval of the Recall@10 and NDCG@10 difference from the seeds'
              seed-*/ranks.json (train.eval.compare); the cold-items breakdown when there is one; seed-*/log.jsonl:
              the per-epoch training loss and validation Recall@20
  served      RUN/served.json (python -m train select): the row served, every candidate's validation value,
              the rows that cannot be served and why
  stages      RUN/embedder/llm2rec/{csft,mntp,item-contrastive} and RUN/embedder/scft: stage.json (wall time,
              final loss, held-out loss at the kept step) + log.jsonl (loss per logged step);
              RUN/embeddings/{base,llm2rec,llmemb}/manifest.json
  export      RUN/onnx/{item_embedder,user_encoder}/export.json (validation against torch, sizes, made from the
              served model?), RUN/onnx/item_embedder_int8/model.onnx + gate.json, RUN/onnx/deploy.json (step
              times); the int8 recipes' gates where bench/export_speed.py recorded them
              (bench/results/export_speed.json)
  deployment  model_repository/llmrec.json (checked to come from these exports), RUN/index/manifest.json
  serving     the live demo's record (python -m serving demo --record FILE), by default
              RUN/serving/demo-record.json: latency p50 / mean / max per method, the new item's rank
Prints the tables (Markdown) to stdout and writes DIR/report.md (default RUN/report/) with the same tables
and the plots next to it: stage-losses.png, srs-validation.png, quality.png, latency.png. An input that is
missing or unreadable is one line naming it (a partial run still gets a report), never a traceback.
JSON + numpy + matplotlib (Agg backend) only, no torch: it runs in a few seconds.
Exit codes: 0 report written (also for a partial run), 2 RUN is not a folder or DIR cannot be written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrec.cli import HelpFormatter
from llmrec.files import sha256_file

ROOT = Path(__file__).resolve().parents[1]  # the project folder
EXPORT_SPEED = ROOT / "bench" / "results" / "export_speed.json"
# (method, stage, folder under RUN/embedder): LLM2Rec's stages in their order (train/stages/pipeline.py), LLMEmb's SCFT
STAGES = (
    ("LLM2Rec", "csft", "llm2rec/csft"),
    ("LLM2Rec", "mntp", "llm2rec/mntp"),
    ("LLM2Rec", "item-contrastive", "llm2rec/item-contrastive"),
    ("LLMEmb", "scft", "scft"),
)
BASE_EMBEDDER = "base"  # RUN/embedder/base: the base model as it is, as a checkpoint (train.embed --save-embedder)
# this run's embedders (folder under RUN/embedder, name) and item embeddings (folder under RUN/embeddings, made from)
EMBEDDERS = (
    (BASE_EMBEDDER, "base model checkpoint (SmolLM2 as it is)"),
    ("llm2rec/item-contrastive", "LLM2Rec item-contrastive stage"),
    ("scft", "LLMEmb SCFT stage"),
)
EMBEDDINGS = (
    ("base", "SmolLM2 as it is (bidirectional, mean pooling)"),
    ("llm2rec", "LLM2Rec (item-contrastive stage)"),
    ("llmemb", "LLMEmb (SCFT stage)"),
)
# the SRS rows of `make demo` step 4: (row, label, folder under RUN, baseline row: the ID-SASRec of the same
# downstream, against which the row's paired interval is computed)
MODELS = (
    ("llm2rec-ids", "ID-SASRec (LLM2Rec's downstream)", "srs/llm2rec-ids", None),
    ("llm2rec-base", "SmolLM2 as it is (bidirectional, mean pooling)", "srs/llm2rec-base", "llm2rec-ids"),
    ("llm2rec", "LLM2Rec (CSFT → MNTP → item contrastive, demo budget)", "srs/llm2rec", "llm2rec-ids"),
    ("llmemb-ids", "ID-SASRec (LLMEmb's downstream)", "srs/llmemb-ids", None),
    ("llmemb", "LLMEmb (SCFT → RAT, demo budget)", "srs/llmemb", "llmemb-ids"),
)
LABELS = {row: label for row, label, *_ in MODELS}
COLOURS = {row: f"C{i}" for i, (row, *_) in enumerate(MODELS)}  # one colour per row in every plot
PRESETS = {"post-ln": "llm2rec", "original": "llmemb"}  # summary config sasrec_style -> preset (else "project")
PAIRED = (("recall", 10), ("ndcg", 10))  # the paired intervals shown: (train.eval.compare metric, k)
BOOTSTRAP_SAMPLES = 10_000
VALID_METRIC = "recall@20"  # the validation curve of every row (full ranking; what train/select.py decides on)
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
METRIC_NAMES = {"recall@10": "Recall@10", "recall@20": "Recall@20", "ndcg@10": "NDCG@10", "ndcg@20": "NDCG@20"}
PLOTS = ("stage-losses.png", "srs-validation.png", "quality.png", "latency.png")
DASH = "—"


# ----------------------------------------------------------------------------------------------- reading
class Unavailable(Exception):
    """An input that is missing or cannot be read; the message is the report's line about it."""


def rel(path: Path) -> str:
    """`path` as the user would type it: relative to the working folder when under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path` (every input of the report is one); Unavailable saying why not."""
    if not path.is_file():
        raise Unavailable(f"missing: `{rel(path)}` ({what})")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Unavailable(f"unreadable: `{rel(path)}` ({what}): {exc}") from None
    if not isinstance(obj, dict):
        raise Unavailable(f"unreadable: `{rel(path)}` ({what}): not a JSON object")
    return obj


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log file, one a line; a torn last line (a run still writing) is skipped."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value) else None


def mb(nbytes: int | None) -> str:
    return DASH if nbytes is None else f"{nbytes / 2**20:.1f}"


def onnx_bytes(model: Path) -> int | None:
    """model.onnx plus its external weights (model.onnx_data from the exporter, model.onnx.data from quantize)."""
    if not model.is_file():
        return None
    extra = [model.with_name(model.name + suffix) for suffix in ("_data", ".data")]
    return model.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


def folder_bytes(folder: Path) -> int | None:
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------- formatting
def cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]], right: set[int] | None = None) -> list[str]:
    right = set(range(1, len(header))) if right is None else right
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def fmt(value: Any, digits: int = 4) -> str:
    v = number(value)
    return DASH if v is None else f"{v:.{digits}f}"


def duration(seconds: Any) -> str:
    """98.3 s, 27 min 36 s, 1 h 02 min."""
    s = number(seconds)
    if s is None:
        return DASH
    if s < 120:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def mean_std(stats: Any, seeds: int) -> str:
    """A summary.json {"mean", "std"} entry: 0.1888, or 0.1888 ± 0.0040 over several seeds."""
    if not isinstance(stats, dict) or number(stats.get("mean")) is None:
        return DASH
    text = f"{stats['mean']:.4f}"
    if seeds > 1 and number(stats.get("std")) is not None:
        text += f" ± {stats['std']:.4f}"
    return text


# ----------------------------------------------------------------------------------------------- sections
@dataclass
class Plot:
    name: str  # file name in DIR
    alt: str
    draw: Callable[[Any], Any]  # pyplot module -> the figure drawn


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown after the tables: what is missing, not applicable

    def note(self, text: str) -> None:
        self.notes.append(f"- {text}")

    def block(self, lines: list[str]) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")
        self.lines.extend(lines)


@dataclass
class Inputs:
    run: Path
    stats: Path
    srs: dict[str, Path]  # row -> its folder
    served: Path
    embedder: Path
    embeddings: Path
    onnx: Path
    repository: Path
    index: Path
    export_speed: Path
    demo_record: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Inputs:
        run = Path(args.run)

        def pick(value: str | None, default: Path) -> Path:
            return Path(value) if value else default

        srs = Path(args.srs) if args.srs else None  # the rows' parent, when not RUN/srs
        return cls(
            run=run,
            stats=pick(args.stats, run / "data" / "stats.txt"),
            srs={row: pick(getattr(args, option_dest(row)), srs / Path(folder).name if srs else run / folder)
                 for row, _, folder, _ in MODELS},
            served=pick(args.served, run / "served.json"),
            embedder=pick(args.embedder, run / "embedder"),
            embeddings=pick(args.embeddings, run / "embeddings"),
            onnx=pick(args.onnx, run / "onnx"),
            repository=pick(args.repository, Path("model_repository")),
            index=pick(args.index, run / "index"),
            export_speed=pick(args.export_speed, EXPORT_SPEED),
            demo_record=pick(args.demo_record, run / "serving" / "demo-record.json"),
        )


def option(row: str) -> str:
    """The option that points at one SRS row's folder: --srs-llm2rec-base."""
    return f"--srs-{row}"


def option_dest(row: str) -> str:
    return option(row)[2:].replace("-", "_")


def stats_values(path: Path) -> dict[str, str]:
    """The "key  value" lines of `python -m train data stats` (indented sub-lines left out); {} when unreadable."""
    values = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        key, _, value = line.strip().partition("  ")
        if value.strip() and not line.startswith(" "):
            values[key.strip()] = value.strip()
    return values


def dataset_section(inputs: Inputs) -> Section:
    """RUN/data/stats.txt (`python -m train data stats`): "key  value" lines, one table row."""
    section = Section("Dataset")
    if not inputs.stats.is_file():
        section.note(f"missing: `{rel(inputs.stats)}` (dataset statistics: `make demo` step 1)")
        return section
    values = stats_values(inputs.stats)
    keys = [k for k in ("dataset", "users", "items", "interactions", "density", "examples (train/valid/test)")
            if k in values]
    if not keys:
        section.note(f"unreadable: `{rel(inputs.stats)}` has no `key  value` lines")
        return section
    section.block(table(keys, [[values[k] for k in keys]], right=set()))
    return section


def srs_label(summary: dict[str, Any]) -> str:
    """What the items of an SRS run are, from its summary: ids, text (linear), text (llmemb) + RAT, ids + text."""
    config = summary.get("config") or {}
    items = config.get("items")
    if items in (None, "ids"):
        return "ids"
    adapter = config.get("adapter") or "?"
    detail = adapter + (", standardized" if config.get("standardize") else "")
    fusion = config.get("fusion") or "none"
    text = f"text ({detail})" if fusion == "none" else f"ids + text, {fusion} ({detail})"
    return text + (" + RAT" if isinstance(summary.get("rat"), dict) else "")


def preset(summary: dict[str, Any]) -> str:
    """The downstream preset an SRS run was trained with (python -m train srs --preset), from its block style."""
    return PRESETS.get((summary.get("config") or {}).get("sasrec_style"), "project")


def other_srs_runs(folder: Path) -> list[str]:
    parent = folder.parent
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if (p / "summary.json").is_file() and p != folder)


def load_srs(inputs: Inputs, section: Section) -> dict[str, dict[str, Any]]:
    """The summaries found, by row; a note for every missing one."""
    found = {}
    for row, label, _, _ in MODELS:
        path = inputs.srs[row] / "summary.json"
        try:
            summary = read_json(path, f"{label}: `make demo` step 4")
            if not isinstance(summary.get("test"), dict):
                raise Unavailable(f"unreadable: `{rel(path)}` ({label}): no `test` metrics")
        except Unavailable as exc:
            others = other_srs_runs(inputs.srs[row])
            hint = f"; other SRS runs next to it: {', '.join(others)} (choose one with {option(row)})" if others else ""
            section.note(f"{exc}{hint}")
            continue
        found[row] = summary
    return found


def catalogue_size(inputs: Inputs) -> int | None:
    """The number of items: stats.txt's `items` line, else an item-embeddings manifest's count."""
    items = stats_values(inputs.stats).get("items", "").replace(",", "")
    if items.isdigit():
        return int(items)
    for name, _ in EMBEDDINGS:
        try:
            count = read_json(inputs.embeddings / name / "manifest.json", "item embeddings").get("count")
        except Unavailable:
            continue
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return count
    return None


def quality_section(inputs: Inputs, summaries: dict[str, dict[str, Any]], section: Section) -> None:
    rows = []
    for row, summary in summaries.items():
        test, seeds = summary["test"], len(summary.get("seeds") or summary.get("per_seed") or [None])
        per_seed = [s for s in summary.get("per_seed") or [] if isinstance(s, dict)]
        best = ", ".join(str(s.get("best_epoch", "?")) for s in per_seed) or DASH
        rows.append([LABELS[row], preset(summary), srs_label(summary), seeds,
                     *[mean_std(test.get(f"full/{m}"), seeds) for m in METRICS],
                     best, duration((summary.get("train_seconds") or {}).get("mean"))])
    if not rows:
        return
    items = catalogue_size(inputs)
    if items is None:
        section.note("no random-ranking row: the item count is unknown (neither the dataset statistics nor an "
                     "item-embeddings manifest give it)")
    else:
        from train.eval.compare import random_recall
        counted = next(iter(summaries.values()))["test"].get("num_examples")
        examples = max(1, int(number(counted.get("mean")) or 1)) if isinstance(counted, dict) else 1
        every = [items] * examples  # every test example's candidates: the whole catalogue (full ranking)
        rows.append([f"random ranking of {items:,} items", DASH, DASH, DASH,
                     fmt(random_recall(every, 10)), fmt(random_recall(every, 20)), DASH, DASH, DASH, DASH])
    header = ["model", "preset", "items", "seeds", *[METRIC_NAMES[m] for m in METRICS], "best epoch", "train time"]
    section.block(table(header, rows, right={3, 4, 5, 6, 7, 8, 9}))
    if items is not None:
        section.block([f"random ranking: the expected Recall@k of a uniformly random order of the catalogue "
                       f"(min(1, k / {items:,}) per test example, train.eval.compare.random_recall)."])


def signed(value: float) -> str:
    """+0.0123, −0.0040 (a true minus sign)."""
    return f"{value:+.4f}".replace("-", "−")


def interval_cell(result: dict[str, Any]) -> str:
    """A paired_bootstrap result: +0.0123 [−0.0040, +0.0290], no difference (the interval holds 0), else higher or
    lower."""
    verdict = ("higher" if result["diff"] > 0 else "lower") if result["excludes_zero"] else "no difference"
    return f"{signed(result['diff'])} [{signed(result['low'])}, {signed(result['high'])}], {verdict}"


def load_ranks(inputs: Inputs, row: str, summary: dict[str, Any], section: Section) -> list[list[int]] | None:
    """Every seed's 0-based test ranks of a row (seed-*/ranks.json "test"); None, with a note, when one is not there."""
    seeds = summary.get("seeds") or []
    if not seeds:
        section.note(f"no paired interval with {LABELS[row]}: its summary lists no seeds")
        return None
    ranks = []
    for seed in seeds:
        path = inputs.srs[row] / f"seed-{seed}" / "ranks.json"
        try:
            test = read_json(path, f"per-example test ranks of {LABELS[row]}, seed {seed}").get("test")
            if not isinstance(test, list) or not test or \
                    not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in test):
                raise Unavailable(f"unreadable: `{rel(path)}` ({LABELS[row]}, seed {seed}): no `test` list of ranks")
        except Unavailable as exc:
            section.note(f"{exc}: no paired interval with {LABELS[row]}")
            return None
        ranks.append(test)
    return ranks


def paired_section(inputs: Inputs, summaries: dict[str, dict[str, Any]], section: Section) -> None:
    """Every row with a baseline against it on the same test users: the paired bootstrap interval of the
    per-user Recall@10 and NDCG@10 difference, each row's users averaged over its seeds first."""
    from train.eval.compare import paired_bootstrap, seed_mean
    ranks: dict[str, list[list[int]] | None] = {}  # loaded once per row: one note per missing file

    def of(row: str) -> list[list[int]] | None:
        if row not in ranks:
            ranks[row] = load_ranks(inputs, row, summaries[row], section)
        return ranks[row]

    rows = []
    for row, _, _, baseline in MODELS:
        if baseline is None or row not in summaries:
            continue
        cells, users = [DASH] * len(PAIRED), DASH
        if baseline in summaries and of(row) is not None and of(baseline) is not None:
            try:
                results = [paired_bootstrap(seed_mean(of(row), metric, k), seed_mean(of(baseline), metric, k),
                                            samples=BOOTSTRAP_SAMPLES) for metric, k in PAIRED]
                cells, users = [interval_cell(r) for r in results], f"{results[0]['examples']:,}"
            except ValueError as exc:  # seeds or rows that ranked other test examples
                section.note(f"no paired interval of {LABELS[row]} against {LABELS[baseline]}: {exc}")
        rows.append([LABELS[row], LABELS[baseline], users, *cells])
    if rows:
        header = ["model", "against", "test users",
                  *[f"{METRIC_NAMES[f'{metric}@{k}']} difference [95%]" for metric, k in PAIRED]]
        section.block(["Paired against the ID-SASRec of the same downstream, on the same test users:", ""]
                      + table(header, rows, right={2, 3, 4}))
        section.block([f"difference: the row's mean minus the baseline's over the test users (each user's metric "
                       f"averaged over the row's seeds first); [95%]: paired bootstrap over the users "
                       f"({BOOTSTRAP_SAMPLES:,} resamples, train.eval.compare); no difference: the interval "
                       "contains 0 at this test-set size."])


def cold_section(summaries: dict[str, dict[str, Any]]) -> Section:
    section = Section("Cold items (test targets never seen in training)")
    rows = []
    for row, summary in summaries.items():
        test, seeds = summary["test"], len(summary.get("seeds") or [None])
        if not any(k.startswith("breakdown/cold_items/") for k in test):
            continue
        count = (test.get("breakdown/cold_items/count") or {}).get("mean")
        items = (test.get("breakdown/cold_items/num_items") or {}).get("mean")
        if not number(count):
            continue  # the group exists but holds no test case: no cold item in this split
        rows.append([LABELS[row], fmt(count, 0), fmt(items, 0),
                     *[mean_std(test.get(f"breakdown/cold_items/{m}"), seeds) for m in METRICS]])
    if not summaries:
        section.note("no SRS summary to break down (see Quality)")
    elif not rows:
        section.note("no cold test case in these summaries (`breakdown/cold_items` has count 0 or is absent): "
                     "every test target was also a training target")
    else:
        header = ["model", "test cases", "cold items", *[METRIC_NAMES[m] for m in METRICS]]
        section.block(table(header, rows))
    return section


def srs_curves(inputs: Inputs, summaries: dict[str, dict[str, Any]], section: Section) -> None:
    """Per-epoch training loss and validation Recall@20 of every seed (seed-*/log.jsonl), as a plot."""
    curves = []  # (row, label, epochs, losses, validated epochs, their valid metric, best epoch)
    for row, summary in summaries.items():
        for seed in summary.get("seeds") or []:
            log = inputs.srs[row] / f"seed-{seed}" / "log.jsonl"
            epochs = [r for r in read_jsonl(log) if r.get("event") == "epoch" and number(r.get("epoch")) is not None]
            if not epochs:
                section.note(f"no epoch log: `{rel(log)}` ({LABELS[row]}, seed {seed})")
                continue
            # a preset validates every eval_every epochs: only those epochs have a point
            checked = [(r["epoch"], number((r.get("valid") or {}).get(VALID_METRIC))) for r in epochs]
            checked = [(e, v) for e, v in checked if v is not None]
            curves.append((row, f"{LABELS[row]} (seed {seed})", [r["epoch"] for r in epochs],
                           [number(r.get("loss")) for r in epochs], [e for e, _ in checked], [v for _, v in checked],
                           epochs[-1].get("best_epoch")))
    if not curves:
        return

    def draw(plt: Any) -> Any:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
        styles, drawn = ("-", "--", ":", "-."), {}
        for row, label, epochs, losses, checked, valid, best in curves:
            drawn[row] = drawn.get(row, -1) + 1  # the n-th seed of this row: its line style
            kw = {"color": COLOURS[row], "linestyle": styles[drawn[row] % len(styles)], "linewidth": 1.2}
            left.plot(epochs, [math.nan if v is None else v for v in losses], label=label, **kw)
            right.plot(checked, valid, label=label, marker="." if len(checked) < 30 else None, **kw)
            if best in checked:
                right.plot([best], [valid[checked.index(best)]], "o", color=COLOURS[row])
        left.set(xlabel="epoch", ylabel="training loss", title="SASRec training loss (each preset its own loss)")
        right.set(xlabel="epoch", ylabel=f"validation {METRIC_NAMES[VALID_METRIC]}",
                  title=f"validation {METRIC_NAMES[VALID_METRIC]}, full ranking (dot = best epoch, kept)")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        right.legend(fontsize=7)
        fig.tight_layout()
        return fig

    section.plots.append(Plot("srs-validation.png", "SASRec training loss and validation Recall@20 per epoch, per "
                                                    "row", draw))


def quality_plot(summaries: dict[str, dict[str, Any]], section: Section) -> None:
    series = []
    for row, summary in summaries.items():
        means = [number((summary["test"].get(f"full/{m}") or {}).get("mean")) for m in METRICS]
        stds = [number((summary["test"].get(f"full/{m}") or {}).get("std")) or 0.0 for m in METRICS]
        if any(v is not None for v in means):
            series.append((row, [math.nan if v is None else v for v in means], stds))
    if not series:
        return

    def draw(plt: Any) -> Any:
        fig, ax = plt.subplots(figsize=(10, 4.4))
        width = 0.8 / len(series)
        for i, (row, means, stds) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(METRICS))]
            bars = ax.bar(xs, means, width, yerr=stds if any(stds) else None, capsize=3, label=LABELS[row],
                          color=COLOURS[row], hatch="//" if row.endswith("-ids") else None, edgecolor="white")
            ax.bar_label(bars, fmt="%.3f", fontsize=6)
        ax.set_xticks(range(len(METRICS)), [METRIC_NAMES[m] for m in METRICS])
        ax.set(ylabel="test, full ranking", title="LLM2Rec's and LLMEmb's rows beside the ID-SASRec of each downstream")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return fig

    section.plots.append(Plot("quality.png", "test Recall and NDCG of every SRS row (hatched: ID-SASRec)", draw))


def held_out(stage: dict[str, Any]) -> str:
    """stage.json's held-out loss at the kept step: 2.1000 (step 40 of 4 evaluations); the last evaluation's when
    the kept step has none; — without evaluations."""
    evals = [e for e in stage.get("evaluations") or [] if isinstance(e, dict)
             and number(e.get("step")) is not None and number(e.get("loss")) is not None]
    if not evals:
        return DASH
    kept = stage.get("kept_step")
    at = next((e for e in evals if e["step"] == kept), evals[-1])
    where = f"step {at['step']}" + ("" if at["step"] == kept else f"; kept step {kept if kept is not None else '?'}")
    return f"{at['loss']:.4f} ({where}, {len(evals)} evaluation{'' if len(evals) == 1 else 's'})"


def stages_section(inputs: Inputs) -> Section:
    section = Section("Embedder stages")
    rows, curves, total = [], [], 0.0
    for method, name, folder_name in STAGES:
        folder = inputs.embedder / folder_name
        records = read_jsonl(folder / "log.jsonl")
        log = [r for r in records if number(r.get("step")) is not None and number(r.get("loss")) is not None]
        by_step = {int(r["step"]): r for r in log}  # a resumed run trims its log; keep the last of a step anyway
        steps = sorted(by_step)
        evals = {int(r["step"]): r["eval_loss"] for r in records  # held-out evaluations: points, not the curve
                 if number(r.get("step")) is not None and number(r.get("eval_loss")) is not None}
        if steps:
            curves.append((f"{method} {name}", steps, [by_step[s]["loss"] for s in steps], sorted(evals.items())))
        logged = f"{by_step[steps[0]]['loss']:.4f} → {by_step[steps[-1]]['loss']:.4f}" if steps else DASH
        try:
            stage = read_json(folder / "stage.json", f"{method}'s {name} stage: `make demo` step 2")
        except Unavailable as exc:
            if steps:  # started, not finished: stage.json is written last
                rows.append([name, method, "not finished", steps[-1], duration(by_step[steps[-1]].get("elapsed")),
                             DASH, DASH, logged, DASH, DASH, DASH])
                section.note(f"{name}: no stage.json yet (unfinished); its log reaches step {steps[-1]}")
            else:
                section.note(str(exc))
            continue
        wall = number(stage.get("wall_seconds"))
        total += wall or 0.0
        rows.append([name, method, stage.get("status", DASH), stage.get("steps", DASH), duration(wall),
                     duration(stage.get("load_seconds")), fmt(stage.get("final_loss")), logged, held_out(stage),
                     stage.get("samples", DASH), stage.get("effective_batch", DASH)])
    if rows:
        header = ["stage", "method", "status", "steps", "wall time", "load time", "final loss",
                  "logged loss (first → last)", "held-out loss (kept step)", "samples", "batch"]
        if total:
            rows.append(["total", "", "", "", duration(total), "", "", "", "", "", ""])
        section.block(table(header, rows, right={3, 4, 5, 6, 7, 8, 9, 10}))
        section.block(["final loss: the last step's (stage.json); logged loss: the mean over each logging window "
                       "(log.jsonl); held-out loss: the evaluation at the step whose weights were kept (stage.json)."])
    embeddings = []
    for name, made_from in EMBEDDINGS:
        path = inputs.embeddings / name / "manifest.json"
        try:
            manifest = read_json(path, f"item embeddings of {made_from}: `make demo` step 3")
        except Unavailable as exc:
            section.note(str(exc))
            continue
        source = (manifest.get("embedder") or {}).get("source") if isinstance(manifest.get("embedder"), dict) else None
        embeddings.append([name, made_from, f"`{source}`" if source else DASH, manifest.get("count", DASH),
                           manifest.get("dim", DASH), manifest.get("text", DASH), duration(manifest.get("seconds"))])
    if embeddings:
        section.block([f"Item embeddings (`{rel(inputs.embeddings)}`):", ""]
                      + table(["embeddings", "of", "embedder", "items", "dim", "text", "time"], embeddings,
                              right={3, 4, 6}))
    if curves:
        def draw(plt: Any) -> Any:
            fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), squeeze=False)
            for ax, (name, steps, losses, evals) in zip(axes[0], curves, strict=True):
                ax.plot(steps, losses, marker=".", label="training")
                if evals:
                    ax.plot([s for s, _ in evals], [v for _, v in evals], "o--", label="held-out")
                    ax.legend(fontsize=7)
                ax.set(title=name, xlabel="step", ylabel="loss")
                ax.grid(alpha=0.3)
            fig.tight_layout()
            return fig

        section.plots.append(Plot("stage-losses.png", "training loss per logged step of each embedder stage (LLM2Rec's "
                                                      "three, LLMEmb's SCFT), held-out evaluations as points", draw))
    return section


def served_section(inputs: Inputs) -> Section:
    """RUN/served.json (train/select.py): the row served, every candidate's validation value, the rows not served."""
    section = Section("Served model")
    try:
        served = read_json(inputs.served, "the model served: `make demo` step 5, `python -m train select`")
    except Unavailable as exc:
        section.note(str(exc))
        return section
    row, metric = served.get("row"), served.get("metric") or "?"
    label = served.get("label") or LABELS.get(row, "?")
    section.block([f"Served: **{label}** (row `{row}`), {metric} {fmt(served.get('value'))}; SRS "
                   f"`{served.get('srs', '?')}`, embedder `{served.get('embedder', '?')}` (`{rel(inputs.served)}`)."])
    candidates = served.get("candidates") if isinstance(served.get("candidates"), dict) else {}
    not_served = served.get("not_served") if isinstance(served.get("not_served"), dict) else {}
    rows = [[name, LABELS.get(name, DASH), fmt(value), "**served**" if name == row else "candidate"]
            for name, value in candidates.items()]
    rows += [[name, LABELS.get(name, DASH), DASH, f"not servable: {reason}"] for name, reason in not_served.items()]
    if rows:
        section.block(table(["row", "model", metric, "status"], rows, right={2}))
    else:
        section.note(f"`{rel(inputs.served)}` lists no candidate")
    if served.get("why"):
        section.block([f"Why: {str(served['why']).rstrip('.')}."])
    else:
        section.note(f"`{rel(inputs.served)}` has no `why`")
    return section


def recorded_path(path: str) -> Path:
    """A path recorded in a JSON file: absolute, or relative to the project folder (where the tools run)."""
    return (Path(path) if Path(path).is_absolute() else ROOT / path).resolve()


def same_embedder(recorded: str | None, folder: Path) -> bool:
    """Does `recorded` name the stage `folder`? Either may be the stage's out folder or its `embedder/`."""
    def stage(path: Path) -> Path:
        return path.parent if path.name == "embedder" else path

    return bool(recorded) and stage(recorded_path(recorded)) == stage(folder.resolve())


def provenance_lines(inputs: Inputs, exports: dict[str, dict[str, Any]]) -> list[str]:
    """Are the exports made from the served model (RUN/served.json: its embedder and its SRS seed) and from this
    run's embedders and SRS rows? (`make deploy` exports exactly the served ones; a folder put together by hand
    may not.)"""
    try:
        served = read_json(inputs.served, "the model served")  # its absence is the Served model section's note
    except Unavailable:
        served = {}
    lines = []
    embedder = ((exports.get("item_embedder") or {}).get("source") or {}).get("checkpoint")
    if embedder:
        name = next((n for folder, n in EMBEDDERS if same_embedder(embedder, inputs.embedder / folder)), None)
        text = f"- The item embedder export is of `{rel(recorded_path(embedder))}`: " + (
            f"this run's {name}" if name else f"**not** one of this run's embedders (`{rel(inputs.embedder)}`)")
        if served.get("embedder"):
            text += ("; the served model's embedder" if same_embedder(embedder, recorded_path(str(served["embedder"])))
                     else f"; **not** the served model's embedder (`{served['embedder']}`)")
        lines.append(text + ".")
    user = (exports.get("user_encoder") or {}).get("source") or {}
    if user.get("checkpoint"):
        checkpoint = recorded_path(user["checkpoint"])
        row = next((r for r, *_ in MODELS if checkpoint.parent == inputs.srs[r].resolve()), None)
        text = f"- The user encoder export is of `{rel(checkpoint)}`: " + (
            f"this run's row `{row}` ({LABELS[row]})" if row else
            f"**not** one of this run's SRS rows (`{rel(inputs.srs[MODELS[0][0]].parent)}`)")
        if served.get("srs"):
            text += ("; the served seed" if checkpoint == recorded_path(str(served["srs"]))
                     else f"; **not** the served seed (`{served['srs']}`)")
        lines.append(text + ".")
    adapter = ((exports.get("item_embedder") or {}).get("adapter") or {}).get("sha256")
    if adapter and user.get("sha256") and adapter != user["sha256"]:
        lines.append("- **The item embedder's adapter and the user encoder come from different SRS checkpoints**: "
                     "new items would land in another item space than the user vectors.")
    return lines


def export_section(inputs: Inputs) -> Section:
    section = Section("Export")
    rows, exports = [], {}
    for name, label in (("item_embedder", "item embedder (+ SRS adapter)"), ("user_encoder", "user encoder")):
        folder = inputs.onnx / name
        try:
            export = read_json(folder / "export.json", f"the {label} export: `make deploy`")
        except Unavailable as exc:
            section.note(str(exc))
            continue
        exports[name] = export
        validation = export.get("validation") or {}
        passed = validation.get("passed")
        state = DASH if passed is None else ("passed" if passed else "FAILED")
        if number(validation.get("threshold")) is not None:
            state += f" (min cosine ≥ {validation['threshold']})"
        rows.append([label, state, fmt(validation.get("min_cosine"), 10), fmt(validation.get("topk_overlap"), 3),
                     export.get("dim", DASH), mb(onnx_bytes(folder / "model.onnx")), mb(folder_bytes(folder)),
                     duration(export.get("export_seconds"))])
    int8 = inputs.onnx / "item_embedder_int8" / "model.onnx"
    if int8.is_file():
        rows.append(["item embedder int8 (not deployed)", "gate below", DASH, DASH,
                     (exports.get("item_embedder") or {}).get("dim", DASH), mb(onnx_bytes(int8)),
                     mb(folder_bytes(int8.parent)), DASH])
    else:
        section.note(f"missing: `{rel(int8)}` (the int8 variant: `make deploy` with --int8)")
    if rows:
        header = ["artifact", "validation vs torch", "min cosine", "top-k overlap", "dim", "model MB", "folder MB",
                  "export time"]
        section.block(table(header, rows, right={2, 3, 4, 5, 6, 7}))
    if provenance_lines(inputs, exports):
        section.block(provenance_lines(inputs, exports))

    deploy = inputs.onnx / "deploy.json"
    if deploy.is_file():
        try:
            steps = json.loads(deploy.read_text()).get("steps") or {}
            section.block(["Deployment steps (last run of each, `deploy.json`): " + ", ".join(
                f"{step} {duration((info or {}).get('seconds'))}" for step, info in steps.items()) + "."])
        except (OSError, ValueError, AttributeError) as exc:
            section.note(f"unreadable: `{rel(deploy)}`: {exc}")

    gate_lines(inputs, exports.get("item_embedder"), section)
    deployment_lines(inputs, exports, section)
    return section


def gate_row(variant: str, gate: dict[str, Any]) -> list[str]:
    drop, bound = number(gate.get("recall_drop")), number(gate.get("recall_drop_bound"))
    return [variant, fmt(gate.get("cosine_mean")), f"{fmt(gate.get('overlap'), 3)} (≥ {gate.get('min_overlap', '?')})",
            DASH if drop is None else f"{100 * drop:+.1f}%",
            DASH if bound is None else f"{100 * bound:+.1f}% (≤ {100 * gate.get('max_recall_drop', 0):.0f}%)",
            "pass" if gate.get("passed") else "fail"]


GATE_HEADER = ["variant", "cosine mean", "top-10 overlap", "Recall@10 drop", "drop at the 95% bound", "gate"]


def gate_lines(inputs: Inputs, embedder_export: dict[str, Any] | None, section: Section) -> None:
    """The int8 quality gate: of this run's variant (gate.json, written by `export.onnx all --int8`), and where
    bench/export_speed.py recorded it for other recipes."""
    int8 = inputs.onnx / "item_embedder_int8" / "model.onnx"
    gate_file = int8.parent / "gate.json"
    if gate_file.is_file() and int8.is_file():
        try:
            gate = json.loads(gate_file.read_text())
            same = gate.get("variant_sha256") == sha256_file(int8)
            section.block([f"int8 quality gate of this run's variant (`{rel(gate_file)}`, every catalogue item; "
                           f"SASRec Recall@10 {fmt(gate.get('recall'))} vs fp32 {fmt(gate.get('recall_reference'))}"
                           + ("" if same else "; **stale**: the variant changed since it was gated") + "):", ""]
                          + table(GATE_HEADER, [gate_row(f"int8 {gate.get('recipe', '?')}", gate)], right={1, 2, 3}))
        except (OSError, ValueError, AttributeError) as exc:
            section.note(f"unreadable: `{rel(gate_file)}`: {exc}")
    try:
        result = read_json(inputs.export_speed, "the int8 quality gate: `bench/export_speed.py`")
        gates = ((result.get("embedder") or {}).get("gate") or {})
    except Unavailable as exc:
        section.note(f"int8 gate: not recorded in this run; {exc}")
        return
    if not gates:
        section.note(f"int8 gate: `{rel(inputs.export_speed)}` records no gate")
        return
    # identity by content only: the same path in another clone or after retraining is another embedder
    measured = (result.get("settings") or {}).get("embedder")
    measured_sha = (result.get("embedder") or {}).get("embedder_sha256")
    exported_sha = ((embedder_export or {}).get("source") or {}).get("sha256")
    if measured_sha and exported_sha and measured_sha == exported_sha:
        whose = "the embedder exported here (same sha256)"
    elif measured_sha and exported_sha:
        whose = f"`{measured}`, **not** the embedder exported here (another sha256)"
    else:
        whose = f"`{measured}`; whether that is the embedder exported here is not recorded (no sha256)"
    rows = [gate_row(variant, gate) for variant, gate in gates.items()]
    date = (result.get("environment") or {}).get("date", "?")
    section.block([f"int8 quality gate of the speed benchmark's recipes (`{rel(inputs.export_speed)}`, {date}; "
                   f"measured on {whose}):", ""] + table(GATE_HEADER, rows, right={1, 2, 3}))


def deployment_lines(inputs: Inputs, exports: dict[str, dict[str, Any]], section: Section) -> None:
    """The Triton repository (is it built from these exports?) and the index (the user encoder's item table?)."""
    lines = []
    try:
        repo = read_json(inputs.repository / "llmrec.json", "the Triton model repository: `make deploy`")
        sources = repo.get("sources") or {}
        text = (f"Triton repository `{rel(inputs.repository)}`: {repo.get('flavour', '?')} flavour, models "
                f"{', '.join(repo.get('models') or []) or '?'}, written {repo.get('created', '?')}")
        checks = []
        for name, key in (("item_embedder", "embedder"), ("user_encoder", "user_encoder")):
            path = inputs.onnx / name / "export.json"
            recorded = (sources.get(key) or {}).get("export_sha256")
            if path.is_file() and recorded:
                checks.append(recorded == sha256_file(path))
        written_from = (sources.get("embedder") or {}).get("path")
        if checks:
            text += "; built from these exports: " + ("yes" if all(checks) else f"**no** (from `{written_from}`)")
        else:
            text += f"; built from `{written_from}` (no export.json here to check it against)"
        lines.append(f"- {text}.")
    except Unavailable as exc:
        lines.append(f"- {exc}")
    try:
        index = read_json(inputs.index / "manifest.json", "the FAISS index: `make deploy`")
        text = (f"Index `{rel(inputs.index)}`: {index.get('count', '?')} items × {index.get('dim', '?')}, "
                f"{index.get('factory', '?')}, {index.get('metric', '?')}")
        table_sha = ((exports.get("user_encoder") or {}).get("files") or {}).get("item_vectors.safetensors")
        if table_sha and index.get("item_vectors_sha256"):
            text += "; holds the user encoder's item table: " + (
                "yes" if table_sha == index["item_vectors_sha256"] else "**no**")
        lines.append(f"- {text}.")
    except Unavailable as exc:
        lines.append(f"- {exc}")
    section.block(lines)


def serving_section(inputs: Inputs) -> Section:
    section = Section("Serving (live demo)")
    try:
        record = read_json(inputs.demo_record, "the live demo's record: `python -m serving demo --record FILE`")
    except Unavailable as exc:
        section.note(str(exc))
        return section
    calls = [c for c in record.get("calls") or [] if isinstance(c, dict) and number(c.get("ms")) is not None]
    head = [f"Record `{rel(inputs.demo_record)}` of {record.get('started', '?')}: "
            + ("all calls succeeded" if record.get("ok") else f"**the demo failed**: {record.get('error')}")
            + f"; start-up to SERVING {duration(record.get('startup_seconds'))}, "
            f"total wall time {duration(record.get('wall_seconds'))}."]
    section.block(head)
    methods: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        methods.setdefault(str(call.get("method")), []).append(call)
    if methods:
        rows = []
        for method, group in methods.items():
            ms = [float(c["ms"]) for c in group]
            failed = [c for c in group if not c.get("ok")]
            status = ", ".join(sorted({str(c.get("status")) for c in failed}))
            rows.append([method, len(ms), f"{len(failed)} ({status})" if failed else "0",
                         f"{statistics.median(ms):.1f}", f"{statistics.fmean(ms):.1f}", f"{max(ms):.1f}"])
        section.block(table(["method", "calls", "failed", "p50 ms", "mean ms", "max ms"], rows))

        def draw(plt: Any) -> Any:
            names = list(methods)
            p50 = [statistics.median([float(c["ms"]) for c in methods[n]]) for n in names]
            top = [max(float(c["ms"]) for c in methods[n]) for n in names]
            fig, ax = plt.subplots(figsize=(7, 3.6))
            xs = range(len(names))
            for offset, values, label in ((-0.2, p50, "p50"), (0.2, top, "max")):
                bars = ax.bar([x + offset for x in xs], values, 0.4, label=label)
                ax.bar_label(bars, fmt="%.1f", fontsize=7)
            ax.set_xticks(list(xs), names)
            ax.set(ylabel="ms (client side)", title="live demo calls")
            if max(top) > 50 * max(min(p50), 1e-3):
                ax.set_yscale("log")
            ax.legend()
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            return fig

        section.plots.append(Plot("latency.png", "latency of the live demo's calls, p50 and max per method", draw))
    else:
        section.note("the record holds no calls")

    new = record.get("new_item")
    if isinstance(new, dict) and new.get("id") is not None:
        nearest = new.get("nearest") or {}
        if new.get("rank") is not None:
            where = f"ranks **#{new['rank']}** of {new.get('index_size', '?')} items"
        elif nearest:
            where = f"is not in the top {new.get('rank_depth', '?')} of {new.get('index_size', '?')} items"
        else:
            where = "was not ranked (the demo stopped before)"
        section.block([f"New item \"{new.get('title')}\" (id {new['id']}, added live, deleted again: "
                       f"{'yes' if new.get('missing_after_delete') else 'no'}): for a user who just watched the "
                       f"{len(new.get('similar_history') or [nearest])} catalogue items nearest to it (the nearest: "
                       f"\"{nearest.get('title', '?')}\") it {where}."])
    else:
        section.note("no new item in the record (the demo stopped before UpsertItems)")
    users = [u for u in record.get("users") or [] if isinstance(u, dict)]
    if users:
        rows = [[u.get("user", "?"), u.get("history_length", "?"),
                 "; ".join(f"{r.get('title')} ({r.get('score', 0):.2f})" for r in (u.get("recommendations") or [])[:3])
                 or DASH] for u in users]
        section.block(["Recommendations shown (top 3 of each user; score = inner product):", ""]
                      + table(["user", "history", "top 3"], rows, right={1}))
    return section


# ----------------------------------------------------------------------------------------------- the report
def build(inputs: Inputs) -> list[Section]:
    """Every section; each guarded, so one malformed input costs a line, not the report."""
    sections: list[Section] = []

    def guarded(title: str, make: Callable[[], Section | list[Section]]) -> None:
        try:
            made = make()
        except Exception as exc:  # a file of an unexpected shape: say which section, keep the rest
            failed = Section(title)
            failed.note(f"could not read the inputs of this section: {type(exc).__name__}: {exc}")
            made = failed
        sections.extend(made if isinstance(made, list) else [made])

    def quality() -> list[Section]:
        section = Section("Quality (test, full ranking)")
        summaries = load_srs(inputs, section)
        quality_section(inputs, summaries, section)
        paired_section(inputs, summaries, section)
        quality_plot(summaries, section)
        srs_curves(inputs, summaries, section)
        return [section, cold_section(summaries)]

    guarded("Dataset", lambda: dataset_section(inputs))
    guarded("Quality (test, full ranking)", quality)
    guarded("Served model", lambda: served_section(inputs))
    guarded("Embedder stages", lambda: stages_section(inputs))
    guarded("Export", lambda: export_section(inputs))
    guarded("Serving (live demo)", lambda: serving_section(inputs))
    return sections


def render(inputs: Inputs, sections: list[Section], with_plots: bool) -> str:
    lines = [f"# llmrec run report: `{rel(inputs.run)}`", ""]
    if with_plots:
        lines += [f"Written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by "
                  f"`python -m train report`.", ""]
    for section in sections:
        lines += [f"## {section.title}", "", *section.lines]
        if section.notes:
            lines += ([""] if section.lines else []) + section.notes
        if with_plots:
            for plot in section.plots:
                lines += ["", f"![{plot.alt}]({plot.name})"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def draw_plots(sections: list[Section], out: Path) -> list[str]:
    """Write every section's plots into `out` (atomically); returns the file names written. A plot that fails
    is dropped from its section with a line saying so."""
    wanted = [plot for section in sections for plot in section.plots]
    written = []
    if wanted:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for section in sections:
            for plot in list(section.plots):
                path = out / plot.name
                tmp = out / f".{plot.name}.{os.getpid()}.tmp"
                try:
                    fig = plot.draw(plt)
                    fig.savefig(tmp, format="png", dpi=100)
                    os.replace(tmp, path)
                    written.append(plot.name)
                except Exception as exc:  # a plot must not cost the report
                    section.plots.remove(plot)
                    section.note(f"plot `{plot.name}` failed: {type(exc).__name__}: {exc}")
                finally:
                    plt.close("all")
                    tmp.unlink(missing_ok=True)
    for name in PLOTS:  # a plot of an earlier report whose input is gone now would mislead
        if name not in written:
            (out / name).unlink(missing_ok=True)
    return written


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def report(inputs: Inputs, out: Path) -> tuple[str, list[str]]:
    """(the Markdown printed, the plots written); writes out/report.md and the plots."""
    sections = build(inputs)
    out.mkdir(parents=True, exist_ok=True)
    written = draw_plots(sections, out)
    write_text_atomic(out / "report.md", render(inputs, sections, with_plots=True))
    return render(inputs, sections, with_plots=False), written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train report", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--run", required=True, help="the run folder of `make demo` (RUN, e.g. runs/demo)")
    parser.add_argument("--demo-record", default=None, metavar="FILE",
                        help="record of `python -m serving demo --record FILE` (default RUN/serving/demo-record.json)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where report.md and the plots go (default "
                                                                    "RUN/report)")
    where = parser.add_argument_group("inputs laid out otherwise than by the Makefile")
    where.add_argument("--stats", default=None, metavar="FILE", help="dataset statistics (RUN/data/stats.txt)")
    where.add_argument("--srs", default=None, metavar="DIR",
                       help="the parent of the SRS rows' folders, each DIR/<row> (RUN/srs)")
    for row, label, folder, _ in MODELS:
        where.add_argument(option(row), default=None, metavar="DIR",
                           help=f"the {row} row's folder, {label} (RUN/{folder}, or DIR/{Path(folder).name} of --srs)")
    where.add_argument("--served", default=None, metavar="FILE",
                       help="the served model, written by `python -m train select` (RUN/served.json)")
    where.add_argument("--embedder", default=None, metavar="DIR",
                       help="the embedders' folder: base/, llm2rec/<stage>/, scft/ (RUN/embedder)")
    where.add_argument("--embeddings", default=None, metavar="DIR",
                       help="item embeddings: base/, llm2rec/, llmemb/ (RUN/embeddings)")
    where.add_argument("--onnx", default=None, metavar="DIR", help="the ONNX exports (RUN/onnx)")
    where.add_argument("--repository", default=None, metavar="DIR",
                       help="the Triton model repository (model_repository)")
    where.add_argument("--index", default=None, metavar="DIR", help="the FAISS index snapshot (RUN/index)")
    where.add_argument("--export-speed", default=None, metavar="FILE",
                       help=f"bench/export_speed.py's result, for the int8 gate ({rel(EXPORT_SPEED)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.run).is_dir():
        print(f"error: --run {args.run} is not a folder", file=sys.stderr)
        return 2
    inputs = Inputs.from_args(args)
    out = Path(args.out) if args.out else inputs.run / "report"
    try:
        text, written = report(inputs, out)
    except OSError as exc:
        print(f"error: cannot write the report into {out}: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"report: {rel(out / 'report.md')}" + (f" + {', '.join(written)}" if written else " (no plots)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
