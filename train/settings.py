"""python -m train settings: the papers' settings beside each profile's value, rendered as docs/settings.md.

Every row names a setting as the authors' code runs it (LLM2Rec: HappyPointer/LLM2Rec, LLMEmb:
liuqidong07/LLMEmb), the file it comes from, and the value of each profile and budget here, read from the
config dataclasses themselves, so the page cannot drift from the code: tests/train/test_settings.py checks that
every "paper" profile equals the paper's value and that docs/settings.md is this module's output. Rows without a
config field are behaviour in code; their note names the test that checks it. A difference that remains is said
in the row's note with its reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

# a run the authors' code does not record in its repository is marked so, never guessed
CSFT_REF = "llm2rec/run_csft.py, run_LLM2Rec_CSFT.sh"
MNTP_REF = "llm2rec/run_mntp.py, llm2rec/train_mntp_config.json"
SIMCSE_REF = "llm2rec/run_unsupervised_SimCSE.py, llm2rec/train_simcse_config.json"
SCFT_REF = "experiments/*/scft/avg.bash, main_llm.py, llm/llama.py"


@dataclass(frozen=True)
class PaperSetting:
    method: str  # "LLM2Rec" or "LLMEmb"
    stage: str  # a stage of train.stages.pipeline.STAGES
    field: str | None  # the config field; None: behaviour in code (see note)
    paper: Any  # the value in the authors' code (a description for behaviour rows)
    reference: str  # where in the authors' repository
    note: str = ""  # how it is checked, or why a difference remains


SETTINGS: tuple[PaperSetting, ...] = (
    # ---------------------------------------------------------------- LLM2Rec, stage 1: CSFT
    PaperSetting("LLM2Rec", "csft", "item_text", "title", "llm2rec/dataset.py (PurePromptDataset)"),
    PaperSetting("LLM2Rec", "csft", None, "prompt: the history's titles joined by \", \", no BOS; target: title + "
                 "\"\\n\" + EOS; labels on the target only; the last cutoff tokens kept",
                 "llm2rec/dataset.py (Tokenizer.encode, pre)",
                 "test_stages_csft.py::test_labels_mask_the_prompt_exactly, "
                 "::test_long_samples_keep_their_last_tokens"),
    PaperSetting("LLM2Rec", "csft", "history", 10, "data/*/5-core/train/*.csv (prepared histories, not in the "
                 "repository)", "10 = the downstream max_seq_length (seqrec/default.yaml); the CSVs are not "
                 "published"),
    PaperSetting("LLM2Rec", "csft", "max_length", 1024, CSFT_REF + " (cutoff_len)"),
    PaperSetting("LLM2Rec", "csft", "lora", False, "run_LLM2Rec_CSFT.sh (--use_lora False)"),
    PaperSetting("LLM2Rec", "csft", "lr", 3e-4, CSFT_REF + " (learning_rate)"),
    PaperSetting("LLM2Rec", "csft", "steps", 10_000, CSFT_REF + " (max_steps)"),
    PaperSetting("LLM2Rec", "csft", "warmup_steps", 200, CSFT_REF + " (warmup_steps)"),
    PaperSetting("LLM2Rec", "csft", "eval_every", 2000, CSFT_REF + " (eval_steps)"),
    PaperSetting("LLM2Rec", "csft", "eval_samples", 2000, CSFT_REF + " (validation PurePromptDataset sample=2000)"),
    PaperSetting("LLM2Rec", "csft", "patience", 5, CSFT_REF + " (EarlyStoppingCallback(5), load_best_model_at_end)",
                 "test_stages_csft.py::test_training_stops_after_patience_evaluations_without_improvement"),
    PaperSetting("LLM2Rec", "csft", "bucket_batches", 1, CSFT_REF + " (group_by_length False)"),
    PaperSetting("LLM2Rec", "csft", "weight_decay", 0.0, "transformers TrainingArguments default"),
    PaperSetting("LLM2Rec", "csft", "max_grad_norm", 1.0, "transformers TrainingArguments default"),
    PaperSetting("LLM2Rec", "csft", None, "effective batch 128 (micro-batch 4, accumulation over 2 GPUs)",
                 CSFT_REF + " (batch_size, micro_batch_size)", "batch_size 4 x grad_accum 32 on one process"),
    PaperSetting("LLM2Rec", "csft", None, "linear warm-up then linear decay to 0, AdamW",
                 "transformers Trainer defaults (the cosine schedule in run_csft.py is never passed)",
                 "test_stages_config.py::test_linear_schedule_matches_transformers"),
    # ---------------------------------------------------------------- LLM2Rec, stage 2a: MNTP
    PaperSetting("LLM2Rec", "mntp", "item_text", "title", MNTP_REF + " (item_titles.txt)"),
    PaperSetting("LLM2Rec", "mntp", "batch_size", 32, MNTP_REF + " (per_device_train_batch_size)"),
    PaperSetting("LLM2Rec", "mntp", "lr", 5e-5, "transformers default (the config sets no learning_rate)"),
    PaperSetting("LLM2Rec", "mntp", "warmup_steps", 0, "transformers default"),
    PaperSetting("LLM2Rec", "mntp", "steps", 1000, MNTP_REF + " (stop_after_n_steps)"),
    PaperSetting("LLM2Rec", "mntp", "epochs", 3.0, "transformers default num_train_epochs: the schedule's length",
                 "test_stages_config.py::test_schedule_spans_steps_or_epochs"),
    PaperSetting("LLM2Rec", "mntp", "mask_ratio", 0.2, MNTP_REF + " (mlm_probability)"),
    PaperSetting("LLM2Rec", "mntp", "mask_replace", 0.8, MNTP_REF + " (data_collator_type default: "
                 "DataCollatorForLanguageModeling)"),
    PaperSetting("LLM2Rec", "mntp", "random_replace", 0.1, "DataCollatorForLanguageModeling"),
    PaperSetting("LLM2Rec", "mntp", None, "each non-special token selected independently",
                 "DataCollatorForLanguageModeling (bernoulli over special_tokens_mask)",
                 "test_stages_mntp.py::test_selects_each_text_token_independently_then_80_10_10"),
    PaperSetting("LLM2Rec", "mntp", "mask_token", "_", MNTP_REF + " (mask_token_type blank)"),
    PaperSetting("LLM2Rec", "mntp", "holdout", 0.1, "llm2rec/run_mntp.py (train_test_split(test_size=0.1))"),
    PaperSetting("LLM2Rec", "mntp", "eval_every", 100, MNTP_REF + " (eval_steps)"),
    PaperSetting("LLM2Rec", "mntp", "lora", False, MNTP_REF + " (lora_r null)"),
    PaperSetting("LLM2Rec", "mntp", "max_length", 512, MNTP_REF + " (max_seq_length)"),
    PaperSetting("LLM2Rec", "mntp", None, "bidirectional attention; token i predicted from position i-1",
                 "llm2vec *BiForMNTP", "test_stages_mntp.py::test_label_at_i_is_predicted_from_position_i_minus_1"),
    # ---------------------------------------------------------------- LLM2Rec, stage 2b: item contrastive
    PaperSetting("LLM2Rec", "item-contrastive", "item_text", "title", "llm2rec/recdata/ItemTitleData.py"),
    PaperSetting("LLM2Rec", "item-contrastive", "batch_size", 256, SIMCSE_REF),
    PaperSetting("LLM2Rec", "item-contrastive", "lr", 2e-4, SIMCSE_REF),
    PaperSetting("LLM2Rec", "item-contrastive", "warmup_steps", 300, SIMCSE_REF),
    PaperSetting("LLM2Rec", "item-contrastive", "epochs", 5.0, SIMCSE_REF + " (num_train_epochs)"),
    PaperSetting("LLM2Rec", "item-contrastive", "steps", 1000, SIMCSE_REF + " (stop_after_n_steps)"),
    PaperSetting("LLM2Rec", "item-contrastive", "temperature", 0.1, SIMCSE_REF + " (loss_scale 10)"),
    PaperSetting("LLM2Rec", "item-contrastive", "dropout", 0.2, SIMCSE_REF + " (simcse_dropout)"),
    PaperSetting("LLM2Rec", "item-contrastive", "symmetric", False, "llm2vec HardNegativeNLLLoss"),
    PaperSetting("LLM2Rec", "item-contrastive", "bucket_batches", 1, "transformers Trainer (random sampler)"),
    PaperSetting("LLM2Rec", "item-contrastive", "lora", False, SIMCSE_REF + " (lora_r null)"),
    PaperSetting("LLM2Rec", "item-contrastive", "max_length", 512, SIMCSE_REF + " (max_seq_length)"),
    PaperSetting("LLM2Rec", "item-contrastive", None, "mean pooling over the text tokens (no BOS: embed_mask)",
                 "utils/llm2vec_encoder.py (tokenize, get_pooling)",
                 "test_embedder_pooling.py::test_the_embedder_averages_the_text_tokens_not_the_bos"),
    PaperSetting("LLM2Rec", "item-contrastive", None, "extraction: titles, bidirectional, mean; row 0 = \"Null\"",
                 "extract_llm_embedding.py", "row 0 is zeros here: padding, masked out of attention and never scored"),
    # ---------------------------------------------------------------- LLMEmb, stage 1: SCFT
    PaperSetting("LLMEmb", "scft", None, "\"The <domain> item has the following attributes: \\n key is value; "
                 "key is value\"", "data/*/item_prompt.ipynb", "test_itemtext.py::test_recipes_by_hand; attributes "
                 "in one fixed order (a gRPC map has none: served and offline texts must be equal)"),
    PaperSetting("LLMEmb", "scft", "drop_ratio", 0.4, SCFT_REF + " (--dropout_ratio)"),
    PaperSetting("LLMEmb", "scft", "fixed_views", True, "main_llm.py (views drawn once in dataset.map)",
                 "test_stages_scft.py::test_stage_views_are_prompts_of_two_different_augmentations"),
    PaperSetting("LLMEmb", "scft", None, "int(n x 0.4) attributes dropped from each shuffled view",
                 "llm/data_processor/llama.py", "test_stages_scft.py::"
                 "test_augmentation_drops_a_floor_share_shuffles_and_is_seeded"),
    PaperSetting("LLMEmb", "scft", "temperature", 3.0, "llm/llama.py (nn.Parameter(3.0); --tau is overwritten)"),
    PaperSetting("LLMEmb", "scft", "learn_temperature", True, "llm/llama.py"),
    PaperSetting("LLMEmb", "scft", "min_temperature", 0.0, "llm/llama.py (no clamp)"),
    PaperSetting("LLMEmb", "scft", "normalize", False, "llm/llama.py (raw dot products)"),
    PaperSetting("LLMEmb", "scft", "targets_times_tau", True, "llm/llama.py (softmax(sim * tau))",
                 "test_stages_scft.py::test_soft_contrastive_loss_matches_a_hand_computation"),
    PaperSetting("LLMEmb", "scft", "lora", True, SCFT_REF),
    PaperSetting("LLMEmb", "scft", "lora_r", 8, SCFT_REF + " (--lora_rank)"),
    PaperSetting("LLMEmb", "scft", "lora_alpha", 32, "llm/arguments.py default"),
    PaperSetting("LLMEmb", "scft", "lora_dropout", 0.1, SCFT_REF + " (--lora_dropout)"),
    PaperSetting("LLMEmb", "scft", "lr", 2e-4, SCFT_REF + " (--learning_rate)"),
    PaperSetting("LLMEmb", "scft", "steps", 4000, SCFT_REF + " (--max_steps)"),
    PaperSetting("LLMEmb", "scft", None, "64 items per GPU x 4 GPUs, negatives within a GPU's batch",
                 SCFT_REF + " (--per_device_train_batch_size 64)", "batch_size 64 x grad_accum 4 on one process"),
    PaperSetting("LLMEmb", "scft", "warmup_steps", 0, "llm/ds.config (WarmupDecayLR, warmup_num_steps 0)"),
    PaperSetting("LLMEmb", "scft", "weight_decay", 0.0, "llm/ds.config (auto: transformers default)"),
    PaperSetting("LLMEmb", "scft", "max_length", 1024, SCFT_REF + " (--max_source_length)"),
    PaperSetting("LLMEmb", "scft", "attention", "causal", "llm/llama.py (LlamaModel)"),
    PaperSetting("LLMEmb", "scft", "pooling", "mean", SCFT_REF + " (--pool_type avg)"),
    PaperSetting("LLMEmb", "scft", "append_eos", True, "llm/data_processor/llama.py (text ids + EOS)",
                 "test_stages_scft.py::test_scft_learns_tau_and_saves_a_causal_mean_embedder"),
    PaperSetting("LLMEmb", "scft", None, "no BOS in the input", "llm/data_processor/llama.py "
                 "(add_special_tokens=False)", "a BOS-adding tokenizer (Llama) keeps its BOS in the input, left out "
                 "of the mean; SmolLM2 and Qwen2 add none, so their input is the reference's"),
)


def _config_class(stage: str) -> type:
    from train.stages.pipeline import STAGES

    return STAGES[stage][1]


def profile_values(setting: PaperSetting) -> list[Any]:
    """The field's value under the paper and project profiles, then the cpu-small and demo budgets (paper recipe)."""
    from train.stages.config import BUDGET_NAMES, PROFILE_NAMES

    cls = _config_class(setting.stage)
    values = [getattr(cls.profile(p), setting.field) for p in PROFILE_NAMES]
    return values + [getattr(cls.profile("paper", b), setting.field) for b in BUDGET_NAMES if b != "full"]


def _cell(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def render() -> str:
    from train.stages.config import BUDGET_NAMES, PROFILE_NAMES

    budgets = [b for b in BUDGET_NAMES if b != "full"]
    lines = [
        "# Paper settings",
        "",
        "<!-- generated by `python -m train settings`; tests/train/test_settings.py fails when it differs -->",
        "",
        "Each row is a setting as the authors' code runs it, the file it comes from (LLM2Rec: "
        "`HappyPointer/LLM2Rec`, LLMEmb: `liuqidong07/LLMEmb`) and its value here under each profile "
        f"({', '.join(PROFILE_NAMES)}) and under the step budgets ({', '.join(budgets)}) of the paper recipe. "
        "A budget changes only steps, batch and LoRA, never the recipe. The `paper` column equals the paper's value "
        "in every row (checked by a test); rows without a field are behaviour in code, with the test that checks "
        "it, or the reason a difference remains.",
        "",
    ]
    for method in dict.fromkeys(s.method for s in SETTINGS):
        lines += [f"## {method}", "",
                  "| stage | setting | authors' code | reference | " + " | ".join(PROFILE_NAMES + tuple(budgets))
                  + " | note |",
                  "|" + "---|" * (5 + len(PROFILE_NAMES) + len(budgets))]
        for s in (s for s in SETTINGS if s.method == method):
            if s.field is None:
                cells = [s.stage, "(behaviour)", str(s.paper), s.reference] + ["as the paper"] + [""] * (
                    len(PROFILE_NAMES) + len(budgets) - 1)
            else:
                cells = [s.stage, f"`{s.field}`", _cell(s.paper), s.reference] + [_cell(v) for v in profile_values(s)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") if i < 4 else c for i, c in enumerate(cells))
                         + f" | {s.note} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the page (`python -m train settings > docs/settings.md`)."""
    if argv:
        print("usage: python -m train settings > docs/settings.md", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0
