"""LLMEmb SCFT: the soft-target loss by hand, attribute augmentation, a loss that learns, tau saved and resumed."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from train.embedder import ItemEmbedder
from train.stages import make_stage, run_stage
from train.stages.scft import SCFTConfig, SCFTStage, augment_attributes, soft_contrastive_loss


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _soft_ce(logits, targets):
    return sum(-sum(t * math.log(p) for t, p in zip(trow, _softmax(lrow), strict=True))
               for lrow, trow in zip(logits, targets, strict=True)) / len(logits)


def test_soft_contrastive_loss_matches_a_hand_computation():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # unit rows: normalising changes nothing
    tau = 0.5
    logits = [[0.6 / tau, 0.0], [0.8 / tau, 1.0 / tau]]  # x y^T / tau
    sim = [[(1 + 1) / 2, (0 + 0.8) / 2], [(0 + 0.8) / 2, (1 + 1) / 2]]  # (xx^T + yy^T) / 2

    def expected_loss(times: bool) -> float:
        targets = [_softmax([v * tau if times else v / tau for v in row]) for row in sim]
        transposed = [[logits[j][i] for j in range(2)] for i in range(2)]
        targets_t = [[targets[j][i] for j in range(2)] for i in range(2)]
        return (_soft_ce(logits, targets) + _soft_ce(transposed, targets_t)) / 2

    expected = expected_loss(times=False)
    for normalize in (True, False):
        # LLMEmb's targets: softmax(sim * tau); the project's: softmax(sim / tau)
        assert math.isclose(soft_contrastive_loss(x, y, tau, normalize).item(), expected_loss(True), rel_tol=1e-6)
        assert math.isclose(soft_contrastive_loss(x, y, tau, normalize, targets_times_tau=False).item(), expected,
                            rel_tol=1e-6)
    assert not math.isclose(expected_loss(True), expected, rel_tol=1e-3)
    # scaling the vectors only matters without normalisation
    assert math.isclose(soft_contrastive_loss(3 * x, 2 * y, tau, True, targets_times_tau=False).item(), expected,
                        rel_tol=1e-6)
    assert not math.isclose(soft_contrastive_loss(3 * x, 2 * y, tau, targets_times_tau=False).item(), expected,
                            rel_tol=1e-3)
    # a learnable tau gets a gradient; detached targets give the same value
    log_tau = torch.tensor(math.log(tau), requires_grad=True)
    loss = soft_contrastive_loss(x, y, log_tau.exp(), detach_targets=True, targets_times_tau=False)
    loss.backward()
    assert math.isclose(loss.item(), expected, rel_tol=1e-6) and log_tau.grad is not None and log_tau.grad != 0


def test_augmentation_drops_a_floor_share_shuffles_and_is_seeded():
    pairs = [(f"k{i}", f"v{i}") for i in range(10)]
    view = augment_attributes(pairs, 0.4, np.random.default_rng(0))
    assert len(view) == 6 and len(set(view)) == 6 and set(view) <= set(pairs)
    for n, kept in [(1, 1), (2, 2), (3, 2), (5, 3)]:  # int(n x 0.4) dropped, as LLMEmb's data processor
        assert len(augment_attributes(pairs[:n], 0.4, np.random.default_rng(1))) == kept
    assert len(augment_attributes(pairs[:4], 0.99, np.random.default_rng(2))) == 1
    assert augment_attributes([], 0.4, np.random.default_rng(0)) == []
    orders = {tuple(augment_attributes(pairs, 0.0, np.random.default_rng(s))) for s in range(5)}
    assert len(orders) > 1 and all(sorted(o) == sorted(pairs) for o in orders)  # shuffled, nothing dropped
    same = [augment_attributes(pairs, 0.4, np.random.default_rng([7, 3])) for _ in range(2)]
    assert same[0] == same[1]


def test_stage_views_are_prompts_of_two_different_augmentations(worded_data):
    stage = SCFTStage(SCFTConfig(drop_ratio=0.5))
    stage.samples = [[("title", f"w{i}"), ("genres", "g"), ("year", "1990"), ("maker", "m")] for i in range(6)]
    x, y = stage.views(np.arange(6), [42, 0])
    assert (x, y) == stage.views(np.arange(6), [42, 0])
    assert x != y and all(t.startswith("The movie item has the following attributes: \n ") for t in x + y)
    assert all(t.count(" is ") == 2 for t in x + y)  # 4 attributes, half dropped
    # fixed views (the reference draws them once): an item's views do not depend on the batch it is in
    x2, y2 = stage.views(np.arange(6)[::-1], [42, 5])
    assert (x2[::-1], y2[::-1]) == (x, y)
    fresh = SCFTStage(SCFTConfig(drop_ratio=0.5, fixed_views=False))
    fresh.samples = stage.samples
    assert fresh.views(np.arange(6), [42, 0]) != fresh.views(np.arange(6), [42, 1])


@pytest.fixture(scope="module")
def attribute_data(worded_data):
    """worded_data with three more attribute columns of tokenizer-known words."""
    titles = worded_data.item_features["movie_title"]
    words = [t.split() for t in titles]
    extra = {name: [""] + [w[k % len(w)] + " " + w[(k + 1) % len(w)] for w in words[1:]]
             for k, name in enumerate(("director", "studio", "country"))}
    return dataclasses.replace(worded_data, item_features={**worded_data.item_features, **extra})


def test_scft_learns_tau_and_saves_a_causal_mean_embedder(tiny_dir, attribute_data, tmp_path):
    stage = make_stage("scft", "paper", "demo", steps=20, batch_size=8, lora=False, lr=2e-3, warmup_steps=0,
                       log_every=1,
                       fields="movie_title,director,studio,country")
    result = run_stage(stage, str(tiny_dir("llama")), attribute_data, tmp_path / "scft", device="cpu",
                       progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "scft" / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    done = json.loads((tmp_path / "scft" / "stage.json").read_text())
    assert done["temperature"] == result["temperature"] and done["temperature"] != 3.0
    assert done["text"] == "attributes:movie" and done["samples"] == attribute_data.num_items
    saved = ItemEmbedder.load(tmp_path / "scft" / "embedder")
    assert saved.config.attention == "causal" and saved.config.pooling == "mean" and saved.config.append_eos
    assert saved.token_ids(["toy story"])[0][-1] == saved.eos_token_id  # LLMEmb averages text + EOS
    weights = load_file(str(tmp_path / "scft" / "embedder" / "model" / "model.safetensors"))
    assert not any("scft" in k for k in weights)


def test_scft_paper_profile_and_lora_resume_restores_tau(tiny_dir, attribute_data, tmp_path):
    paper = SCFTConfig.profile("paper")
    assert (paper.lora, paper.lora_r, paper.lora_alpha, paper.drop_ratio, paper.lr) == (True, 8, 32, 0.4, 2e-4)
    assert paper.effective_batch() == 256 and paper.attention == "causal" and paper.learn_temperature
    assert (paper.temperature, paper.min_temperature, paper.normalize, paper.targets_times_tau, paper.fixed_views,
            paper.max_length, paper.warmup_steps) == (3.0, 0.0, False, True, True, 1024, 0)

    def stage():
        return make_stage("scft", "paper", "demo", steps=5, batch_size=4, lr=1e-2, log_every=1, save_every=100)
    source = str(tiny_dir("qwen2"))
    straight = run_stage(stage(), source, attribute_data, tmp_path / "straight", device="cpu", progress=False)
    stopped = run_stage(stage(), source, attribute_data, tmp_path / "resumed", device="cpu", progress=False,
                        stop_after=3)
    assert stopped["status"] == "stopped"
    trainable = load_file(str(tmp_path / "resumed" / "checkpoint" / "trainable.safetensors"))
    assert "scft_temperature.log_tau" in trainable and any("lora_" in k for k in trainable)
    resumed = run_stage(stage(), source, attribute_data, tmp_path / "resumed", device="cpu", progress=False)
    assert resumed["final_loss"] == straight["final_loss"]
    assert resumed["temperature"] == straight["temperature"] != 3.0


def test_bad_scft_settings_are_refused():
    for field, value, message in [("drop_ratio", 1.0, "drop_ratio"), ("attention", "sideways", "attention"),
                                  ("min_temperature", 5.0, "min_temperature"), ("batch_size", 1, "batch_size")]:
        with pytest.raises(ValueError, match=message):
            SCFTConfig.profile("paper", "demo", **{field: value})


def test_scft_and_rat_are_on_the_command_line(tiny_dir, planted_folder, tmp_path, capsys):
    from train.stages.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert "scft," in usage and ",rat}" in usage
    common = ["scft", "--embedder", str(tiny_dir("llama")), "--dataset", str(planted_folder), "--k-core", "5",
              "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet", "--budget", "demo"]
    assert main([*common, "--out", str(tmp_path / "s"), "--steps", "2", "--batch-size", "4",
                 "--domain", "film"]) == 0
    done = json.loads((tmp_path / "s" / "stage.json").read_text())
    assert done["steps"] == 2 and done["text"] == "attributes:film" and "temperature" in done
    capsys.readouterr()
    for extra, message in [(["--fields", "nope"], "no item feature 'nope'"),
                           (["--drop-ratio", "1.5"], "drop_ratio must be")]:
        code = main([*common, "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
