"""CSFT: samples from training positions only, labels on the target tokens only, a loss that learns."""

from __future__ import annotations

import json
from collections import Counter

import torch
import torch.nn.functional as F

from train.embedder import EmbedderConfig, ItemEmbedder
from train.stages import CSFTConfig, CSFTStage, make_stage, run_stage
from train.stages.common import IGNORE, shifted_token_loss
from train.stages.csft import collate_labeled, csft_texts, encode_pair


def test_labels_mask_the_prompt_exactly(toks):
    EOS_ID = toks.eos
    tok = toks.build()
    ids = lambda words: [tok.convert_tokens_to_ids(w) for w in words.split()]  # noqa: E731
    # LLM2Rec's format: titles joined by ", ", no BOS, target = title + "\n" + EOS
    row, n_prompt = encode_pair(tok, EOS_ID, "toy story , star wars", "the movie\n", max_length=32)
    prompt = ids("toy story <unk> star wars")
    assert row == [*prompt, *ids("the movie"), EOS_ID] and n_prompt == len(prompt)
    short, _ = encode_pair(tok, EOS_ID, "a b", "jedi\n", max_length=32)
    batch = collate_labeled([(row, n_prompt), (short, 2)], pad_id=EOS_ID)
    expected = torch.tensor([[IGNORE] * 5 + [*ids("the movie"), EOS_ID],
                             [IGNORE] * 2 + [tok.convert_tokens_to_ids("jedi"), EOS_ID] + [IGNORE] * 4])
    assert torch.equal(batch["labels"], expected)
    assert batch["attention_mask"].sum(1).tolist() == [8, 4]
    assert batch["input_ids"][1, 4:].tolist() == [EOS_ID] * 4


def test_long_samples_keep_their_last_tokens(toks):
    EOS_ID = toks.eos
    tok = toks.build()
    row, n_prompt = encode_pair(tok, EOS_ID, "a b toy story star", "jedi", max_length=4)
    assert row == [*tok.convert_tokens_to_ids(["story", "star", "jedi"]), EOS_ID] and n_prompt == 2
    row, n_prompt = encode_pair(tok, EOS_ID, "a", "toy story star jedi", max_length=3)  # the target alone is cut
    assert row == [*tok.convert_tokens_to_ids(["star", "jedi"]), EOS_ID] and n_prompt == 0


def test_samples_come_from_training_positions_only(planted_data):
    data = planted_data
    titles = [""] + [f"#{i}" for i in range(1, data.num_items + 1)]
    pairs = csft_texts(data.train, history=10, texts=titles)
    assert all(t.endswith("\n") and not p.endswith(",") for p, t in pairs)
    parse = lambda text: tuple(int(t.strip(" ,#\n")) for t in text.split(",") if t.strip(" ,"))  # noqa: E731
    got = Counter((parse(p), parse(t)[0]) for p, t in pairs)
    train = data.train
    expected = Counter()
    for i in range(len(train)):
        s, p = int(train.seq_index[i]), int(train.position[i])
        assert p < len(data.sequences[s]) - 2  # the last two positions are validation and test targets
        expected[(tuple(int(x) for x in data.sequences[s][max(0, p - 10):p]), int(data.sequences[s][p]))] += 1
    assert got == expected
    held_out = {(int(ex.seq_index[i]), int(ex.position[i])) for ex in (data.valid, data.test) for i in range(len(ex))}
    used = {(int(train.seq_index[i]), int(train.position[i])) for i in range(len(train))}
    assert not used & held_out
    valid = csft_texts(data.valid, history=10, texts=titles)  # the held-out loss reads validation targets
    assert Counter(parse(t)[0] for _, t in valid) == Counter(int(x) for x in data.valid.targets)


def test_fast_loss_equals_full_logits_loss(tiny_dir, toks):
    EOS_ID = toks.eos
    embedder = ItemEmbedder.from_base(EmbedderConfig(base=str(tiny_dir("qwen2")), attention="causal"), device="cpu")
    tok = embedder.tokenizer
    batch = collate_labeled([encode_pair(tok, EOS_ID, "toy story , a b ,", " star wars", 32),
                             encode_pair(tok, EOS_ID, "jedi ,", " the movie title", 32)], EOS_ID)
    logits = embedder.forward_logits(batch["input_ids"], batch["attention_mask"])
    reference = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                                ignore_index=IGNORE)
    fast = shifted_token_loss(embedder, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.allclose(fast, reference, atol=1e-5)


def test_csft_learns_and_keeps_its_best_evaluation(tiny_dir, worded_data, tmp_path):
    for arch in ("llama", "qwen2"):
        stage = make_stage("csft", "paper", "demo", steps=15, batch_size=4, lora=False, lr=2e-3, warmup_steps=0,
                           log_every=1, history=3, eval_every=5, eval_samples=8, patience=5)
        result = run_stage(stage, str(tiny_dir(arch)), worded_data, tmp_path / arch, device="cpu", progress=False)
        lines = [json.loads(line) for line in (tmp_path / arch / "log.jsonl").read_text().splitlines()]
        losses = [line["loss"] for line in lines if "loss" in line]
        assert len(losses) == 15 and all(map(torch.isfinite, torch.tensor(losses)))
        saved = json.loads((tmp_path / arch / "stage.json").read_text())
        assert [e["step"] for e in saved["evaluations"]] == [5, 10, 15] == [
            line["step"] for line in lines if "eval_loss" in line]
        best = min(saved["evaluations"], key=lambda e: e["loss"])
        assert saved["kept_step"] == best["step"] and saved["held_out"] == 8
        assert saved["stage"] == "csft" and saved["steps"] == 15 and saved["config"]["history"] == 3
        assert saved["dataset"]["key"] == worded_data.manifest["key"] and result["status"] == "finished"
        assert not (tmp_path / arch / "checkpoint").exists()
        reloaded = ItemEmbedder.load(tmp_path / arch / "embedder")
        assert reloaded.config.attention == "causal"  # extracted the way it trained
        # the saved weights are those of the kept evaluation: their held-out loss is the best one
        check = make_stage("csft", "paper", "demo", batch_size=4, history=3, eval_samples=8)
        check.setup(reloaded, worded_data)
        assert abs(check.evaluate(reloaded) - best["loss"]) < 1e-4


def test_training_stops_after_patience_evaluations_without_improvement(tiny_dir, worded_data, tmp_path):
    # a learning rate far too high: the held-out loss rises after the first evaluation
    stage = make_stage("csft", "paper", "demo", steps=40, batch_size=4, lora=False, lr=0.5, warmup_steps=0,
                       history=3, eval_every=2, eval_samples=8, patience=2, max_grad_norm=0.0)
    result = run_stage(stage, str(tiny_dir("llama")), worded_data, tmp_path / "s", device="cpu", progress=False)
    evals = result["evaluations"]
    best = min(range(len(evals)), key=lambda i: evals[i]["loss"])
    assert result["steps"] < 40 and len(evals) == best + 3 and result["kept_step"] == evals[best]["step"]


def test_profiles_hold_the_paper_settings_and_budgets_keep_the_recipe():
    paper = CSFTConfig.profile("paper")
    assert (paper.lr, paper.effective_batch(), paper.lora, paper.history, paper.item_text) == (
        3e-4, 128, False, 10, "title")
    assert (paper.steps, paper.warmup_steps, paper.eval_every, paper.eval_samples, paper.patience) == (
        10_000, 200, 2000, 2000, 5)
    assert CSFTConfig.profile("project").item_text == "attributes"
    small = CSFTStage(CSFTConfig.profile("paper", "cpu-small")).config
    assert small.lora and small.lora_r == 16 and small.batch_size == 16 and small.lr == paper.lr
