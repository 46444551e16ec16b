"""Training with early stopping on a validation metric (Recall@20 by default), then a test evaluation.

One call trains one seed. Everything random (initialisation, dropout, shuffling,
negative sampling) derives from that seed, so a run is repeatable.

`extra_loss(model, history, targets)` (optional) returns a scalar added to every
batch's next-item loss, e.g. LLMEmb's alignment term (train/srs/rat.py); its epoch
mean is logged as "extra_loss" (the logged "loss" is the sum that is optimised).
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llmrec.files import write_json_atomic
from train.data.dataset import Examples, SequenceData
from train.eval import evaluate, full_ranking
from train.eval.ranking import sampled_ranking

from .checkpoint import save_checkpoint
from .coldmap import fit_ranked_cold_map
from .config import SRSConfig
from .losses import full_softmax_ce, sample_negatives, sampled_bce
from .model import SequentialRecommender

log = logging.getLogger("llmrec.srs")

RANKS_FILE = "ranks.json"  # per-example test ranks (trainer.test_ranks)
ExtraLoss = Callable[[SequentialRecommender, torch.Tensor, torch.Tensor], torch.Tensor]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class TrainResult:
    seed: int
    best_epoch: int
    epochs_run: int
    valid: dict
    test: dict
    train_seconds: float
    out_dir: Path | None


def score_fn(model: SequentialRecommender, examples: Examples, config: SRSConfig,
             device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
    """Scores over all items for a batch of example indices (model in eval mode)."""
    table = model.item_vectors().detach()

    def scores(idx: np.ndarray) -> torch.Tensor:
        hist, _, _ = examples.batch(idx, config.max_len, config.padding)
        with torch.no_grad():
            user = model.user_vectors(torch.from_numpy(hist).to(device), table)
            return (user @ table.T).cpu()

    return scores


def extra_sets(data: SequenceData, split: str) -> dict[str, Examples]:
    """The dataset's extra evaluation sets reported with `split` ("valid": names ending in _valid)."""
    return {name: ex for name, ex in data.extra_eval.items()
            if name.endswith("_valid") == (split == "valid") and len(ex) > 0}


def _ranking(model: SequentialRecommender, data: SequenceData, examples: Examples, config: SRSConfig,
             device: torch.device):
    return full_ranking(score_fn(model, examples, config, device), examples, data.num_items, ks=config.ks,
                        exclude_history=config.exclude_history, batch_size=config.eval_batch_size)


@torch.no_grad()
def validate(model: SequentialRecommender, data: SequenceData, config: SRSConfig, device: torch.device,
             epoch: int = 0) -> dict:
    """Validation metrics; those of an extra set (e.g. cold_valid) are prefixed with its name. The sampled
    negatives are the same at every epoch unless `redraw_valid_negatives` (LLMEmb draws them anew each time)."""
    model.eval()
    metrics = dict(_ranking(model, data, data.valid, config, device).metrics)
    if config.early_stop_metric.startswith("sampled/"):  # 100 sampled negatives, LLMEmb's validation
        sampled = sampled_ranking(score_fn(model, data.valid, config, device), data.valid, data.num_items,
                                  seed=epoch if config.redraw_valid_negatives else 0,
                                  batch_size=config.eval_batch_size)
        metrics.update({f"sampled/{k}": v for k, v in sampled.metrics.items()})
    for name, examples in extra_sets(data, "valid").items():
        metrics.update({f"{name}/{k}": v for k, v in _ranking(model, data, examples, config, device).metrics.items()})
    return metrics


@torch.no_grad()
def evaluate_test(model: SequentialRecommender, data: SequenceData, config: SRSConfig,
                 device: torch.device) -> dict:
    model.eval()
    head = data.user_counts() >= config.tail_threshold if config.tail_threshold else None
    report = evaluate(score_fn(model, data.test, config, device), data.test, data.num_items,
                      data.train_item_counts(), ks=config.ks, exclude_history=config.exclude_history,
                      sampled=True, batch_size=config.eval_batch_size, head=head,
                      long_threshold=config.short_threshold - 1 if config.short_threshold else None)
    for name, examples in extra_sets(data, "test").items():
        report[name] = {"num_examples": len(examples),
                        "full": _ranking(model, data, examples, config, device).metrics}
    return report


@torch.no_grad()
def test_ranks(model: SequentialRecommender, data: SequenceData, config: SRSConfig,
               device: torch.device) -> dict[str, list[int]]:
    """0-based target rank of every test example (and of every extra test set's), in example order:
    what a paired comparison of two models on the same users needs."""
    model.eval()
    sets = {"test": data.test, **extra_sets(data, "test")}
    return {name: _ranking(model, data, ex, config, device).ranks.tolist() for name, ex in sets.items()}


@torch.no_grad()
def example_ranks(model: SequentialRecommender, data: SequenceData, config: SRSConfig,
                  device: torch.device) -> dict[str, np.ndarray]:
    """0-based target rank of every validation and test example (full ranking, the training setting): the
    per-user outcomes a paired comparison of two item tables of one trained model needs."""
    model.eval()
    return {name: _ranking(model, data, ex, config, device).ranks for name, ex in (("valid", data.valid),
                                                                                   ("test", data.test))}


def batch_loss(model: SequentialRecommender, hist: torch.Tensor, targets: torch.Tensor, config: SRSConfig,
               num_items: int, generator: torch.Generator, unseen: torch.Tensor | None = None,
               inside: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of one batch: targets [B] for the last position, or [B, L] for every position (0 = none).
    `unseen`: items never a training target, left out of the full softmax (see full_softmax_ce); `inside` (bool
    [B, num_items + 1], with `negatives_outside_history`): each row's user's training items, never negatives."""
    table = model.item_vectors()
    rows = torch.arange(hist.shape[0], device=hist.device)  # the training row of every target
    if targets.dim() == 1:
        user = model.user_vectors(hist, table)
    else:
        has_target = targets != 0
        user, targets = model.sequence_states(hist, table)[has_target], targets[has_target]
        rows = rows.unsqueeze(1).expand_as(has_target)[has_target]
    if config.loss == "ce":
        return full_softmax_ce(user, table, targets, unseen)
    negatives = sample_negatives(targets, num_items, config.num_negatives, generator)
    if inside is not None:
        negatives = redraw_inside(negatives, inside, rows, num_items, generator)
    return sampled_bce(user, table, targets, negatives)


def redraw_inside(negatives: torch.Tensor, inside: torch.Tensor, rows: torch.Tensor, num_items: int,
                  generator: torch.Generator, tries: int = 20) -> torch.Tensor:
    """Negatives [N, n] of target rows `rows` [N] redrawn while they are among their row's user's training items
    (`inside` [B, num_items + 1]), as LLMEmb's random_neq draws them outside the user's sequence; after `tries`
    rounds a negative still inside (a user who has nearly every item) is kept."""
    for _ in range(tries):
        bad = inside[rows.unsqueeze(1), negatives]
        if not bool(bad.any()):
            break
        fresh = torch.randint(1, num_items + 1, negatives.shape, generator=generator, device=negatives.device)
        negatives = torch.where(bad, fresh, negatives)
    return negatives


def train_one_seed(
    data: SequenceData,
    config: SRSConfig,
    seed: int,
    out_dir: str | Path | None = None,
    frozen_embeddings: torch.Tensor | None = None,
    meta: dict | None = None,
    progress: bool = True,
    extra_loss: ExtraLoss | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    if len(data.train) == 0:
        raise ValueError(f"dataset {data.name!r} has no training examples")
    if config.loss == "bce" and data.num_items < 2:
        raise ValueError("loss='bce' needs at least 2 items to sample negatives")
    device = torch.device(device) if device is not None else pick_device()
    seed_everything(seed)
    seen = torch.from_numpy(data.train_item_counts() > 0)
    seen[0] = True
    unseen = None if bool(seen.all()) else (~seen).to(device)
    warm = seen if config.items != "ids" else None  # fusions' ID mask; warm-only standardisation
    model = SequentialRecommender(config, data.num_items, frozen_embeddings, warm).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    neg_gen = torch.Generator(device=device).manual_seed(seed)
    out_dir = Path(out_dir) if out_dir is not None else None
    log_file = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(out_dir / "log.jsonl", "w")

    windows = (data.train.windows(config.max_len, last_only=config.train_targets == "tail")
               if config.train_targets in ("all", "tail") else None)
    num_rows = len(windows[0]) if windows is not None else len(data.train)
    user_items = None  # each user's training items (LLMEmb's negatives avoid them), bool [users, num_items + 1]
    if config.loss == "bce" and config.negatives_outside_history:
        user_items = torch.from_numpy(data.train.training_items(data.num_items)).to(device)
    owners = windows[2] if windows is not None else data.train.seq_index
    best_metric, best_epoch, best_state, best_valid = -1.0, 0, None, {}
    start = time.perf_counter()
    epochs = tqdm(range(1, config.max_epochs + 1), desc=f"{config.backbone} seed {seed}", unit="epoch",
                  disable=not progress)
    epoch = 0
    for epoch in epochs:
        model.train()
        order = rng.permutation(num_rows)
        total, extra_total, batches, t0 = 0.0, 0.0, 0, time.perf_counter()
        for b in range(0, num_rows, config.batch_size):
            rows = order[b:b + config.batch_size]
            if windows is not None:
                hist, targets = windows[0][rows], windows[1][rows]
            else:
                hist, _, targets = data.train.batch(rows, config.max_len, config.padding)
            hist_t, targets_t = torch.from_numpy(hist).to(device), torch.from_numpy(targets).to(device)
            inside = user_items[torch.from_numpy(owners[rows]).to(device)] if user_items is not None else None
            loss = batch_loss(model, hist_t, targets_t, config, data.num_items, neg_gen, unseen, inside)
            if extra_loss is not None:
                extra = extra_loss(model, hist_t, targets_t)
                loss = loss + extra
                extra_total += float(extra.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        record = {"event": "epoch", "seed": seed, "epoch": epoch, "loss": total / max(batches, 1)}
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            valid = validate(model, data, config, device, epoch)
            metric = valid[config.early_stop_metric]
            if metric > best_metric:
                best_metric, best_epoch, best_valid = metric, epoch, valid
                best_state = copy.deepcopy(model.state_dict())
            record["valid"] = valid
        record.update(best_epoch=best_epoch, seconds=round(time.perf_counter() - t0, 3))
        if extra_loss is not None:
            record["extra_loss"] = extra_total / max(batches, 1)
        log.info("epoch", extra={k: v for k, v in record.items() if k != "event"})
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        epochs.set_postfix(loss=f"{record['loss']:.4f}", best=best_epoch,
                           **{config.early_stop_metric: f"{best_metric:.4f}"})
        if "valid" in record and epoch - best_epoch >= config.patience:  # patience in epochs, as both papers
            break
    train_seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    if config.cold_map > 0:  # fusion init: place cold items by their text; the validation the map is read on
        model.items.fit_cold_map(config.cold_map)
        if config.cold_map_rank_epochs > 0:
            losses = fit_ranked_cold_map(model, data, config.cold_map_rank_epochs, config.cold_map_pretend, seed=seed)
            log.info("cold_map_ranked", extra={"seed": seed, "losses": losses})
        best_valid = validate(model, data, config, device)
    test = evaluate_test(model, data, config, device)
    result = TrainResult(seed, best_epoch, epoch, best_valid, test, train_seconds, out_dir)
    if out_dir is not None:
        log_file.close()
        save_checkpoint(model, out_dir, {"seed": seed, "best_epoch": best_epoch, **(meta or {})})
        write_json_atomic(out_dir / RANKS_FILE, test_ranks(model, data, config, device))
        write_json_atomic(out_dir / "metrics.json", {
            "seed": seed, "best_epoch": best_epoch, "epochs_run": epoch, "valid": best_valid, "test": test,
            "train_seconds": round(train_seconds, 3), "device": str(device),
        })
    return result
