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
    BOS_ID, EOS_ID = toks.bos, toks.eos
    tok = toks.build()
    ids = lambda words: [tok.convert_tokens_to_ids(w) for w in words.split()]  # noqa: E731
    row, n_prompt = encode_pair(tok, EOS_ID, "toy story , star wars ,", " the movie", max_length=32)
    prompt = [BOS_ID, *ids("toy story <unk> star wars <unk>")]
    assert row == [*prompt, *ids("the movie"), EOS_ID] and n_prompt == len(prompt)
    short, _ = encode_pair(tok, EOS_ID, "a b", " jedi", max_length=32)
    batch = collate_labeled([(row, n_prompt), (short, 3)], pad_id=EOS_ID)
    expected = torch.tensor([[IGNORE] * 7 + [*ids("the movie"), EOS_ID],
                             [IGNORE] * 3 + [tok.convert_tokens_to_ids("jedi"), EOS_ID] + [IGNORE] * 5])
    assert torch.equal(batch["labels"], expected)
    assert batch["attention_mask"].sum(1).tolist() == [10, 5]
    assert batch["input_ids"][1, 5:].tolist() == [EOS_ID] * 5


def test_long_prompts_lose_their_oldest_tokens_but_keep_bos(toks):
    BOS_ID, EOS_ID = toks.bos, toks.eos
    tok = toks.build()
    row, n_prompt = encode_pair(tok, EOS_ID, "a b toy story star", " jedi", max_length=5)
    assert row == [BOS_ID, *tok.convert_tokens_to_ids(["story", "star", "jedi"]), EOS_ID] and n_prompt == 3


def test_samples_come_from_training_positions_only(planted_data):
    data = planted_data
    titles = [""] + [f"#{i}" for i in range(1, data.num_items + 1)]
    pairs = csft_texts(data, history=10, texts=titles)
    parse = lambda text: tuple(int(t.strip(" ,#")) for t in text.split(",") if t.strip(" ,"))  # noqa: E731
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
    subset = csft_texts(data, history=10, num_samples=20, seed=3, texts=titles)
    assert len(subset) == 20 and set(subset) <= set(pairs)
    assert subset == csft_texts(data, history=10, num_samples=20, seed=3, texts=titles)


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


def test_csft_learns_on_a_repeated_batch(tiny_dir, worded_data, tmp_path):
    for arch in ("llama", "qwen2"):
        stage = make_stage("csft", "demo", steps=15, batch_size=4, num_samples=4, lora=False, lr=2e-3,
                           warmup_ratio=0.0, log_every=1, history=3)
        result = run_stage(stage, str(tiny_dir(arch)), worded_data, tmp_path / arch, device="cpu", progress=False)
        losses = [json.loads(line)["loss"] for line in (tmp_path / arch / "log.jsonl").read_text().splitlines()]
        assert len(losses) == 15 and all(map(torch.isfinite, torch.tensor(losses)))
        assert losses[-1] < 0.7 * losses[0], losses
        saved = json.loads((tmp_path / arch / "stage.json").read_text())
        assert saved["stage"] == "csft" and saved["steps"] == 15 and saved["config"]["history"] == 3
        assert saved["dataset"]["key"] == worded_data.manifest["key"] and result["status"] == "finished"
        assert not (tmp_path / arch / "checkpoint").exists()
        reloaded = ItemEmbedder.load(tmp_path / arch / "embedder")
        assert reloaded.config.attention == "causal"  # extracted the way it trained


def test_profiles_hold_the_paper_defaults():
    paper = CSFTConfig.profile("paper")
    assert (paper.lr, paper.effective_batch(), paper.lora, paper.history) == (3e-4, 128, False, 10)
    small = CSFTStage(CSFTConfig.profile("cpu-small")).config
    assert small.lora and small.lora_r == 16 and small.batch_size == 16 and small.num_samples > 0
