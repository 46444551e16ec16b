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
SEQREC = "seqrec/default.yaml"
SEQREC_SASREC = "seqrec/models/SASRec/config.yaml"
SEQREC_MODULES = "seqrec/modules.py (TransformerEncoder_v2)"
RAT_ARGS = "utils/argument.py, experiments/*/rat/llmemb.bash"
LLMEMB_SASREC = "models/SASRec.py"


@dataclass(frozen=True)
class PaperSetting:
    method: str  # "LLM2Rec" or "LLMEmb"
    stage: str  # a stage of train.stages.pipeline.STAGES, or a downstream preset of train.srs.config.PRESETS
    field: str | None  # the config field; None: behaviour in code (see note)
    paper: Any  # the value in the authors' code (a description for behaviour rows)
    reference: str  # where in the authors' repository
    note: str = ""  # how it is checked, or why a difference remains
    same: bool = True  # behaviour rows: False when the project does otherwise (the note says why)


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
                 "extract_llm_embedding.py", "row 0 is zeros here: padding, masked out of attention and never scored",
                 same=False),
    # ---------------------------------------------------------------- LLMEmb, stage 1: SCFT
    PaperSetting("LLMEmb", "scft", None, "\"The <domain> item has the following attributes: \\n key is value; "
                 "key is value\"", "data/*/item_prompt.ipynb", "test_itemtext.py::test_recipes_by_hand; attributes "
                 "in one fixed order (a gRPC map has none: served and offline texts must be equal)", same=False),
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
                 "of the mean; SmolLM2 and Qwen2 add none, so their input is the reference's", same=False),
)


DOWNSTREAM: tuple[PaperSetting, ...] = (
    # ---------------------------------------------------------------- LLM2Rec's seqrec (SASRec, GRU4Rec)
    PaperSetting("LLM2Rec", "llm2rec", "hidden_size", 128, SEQREC_SASREC),
    PaperSetting("LLM2Rec", "llm2rec", "num_layers", 2, SEQREC_SASREC + " (layer_num)"),
    PaperSetting("LLM2Rec", "llm2rec", "num_heads", 2, SEQREC_SASREC),
    PaperSetting("LLM2Rec", "llm2rec", "dropout", 0.3, SEQREC_SASREC),
    PaperSetting("LLM2Rec", "llm2rec", "max_len", 10, SEQREC + " (max_seq_length)"),
    PaperSetting("LLM2Rec", "llm2rec", "sasrec_style", "post-ln", SEQREC_MODULES + " (TransformerLayer_v2)",
                 "test_srs_presets.py::test_each_block_style_by_hand"),
    PaperSetting("LLM2Rec", "llm2rec", "ffn_size", 256, SEQREC_MODULES + " (inner_size)"),
    PaperSetting("LLM2Rec", "llm2rec", "activation", "gelu", SEQREC_MODULES + " (hidden_act)"),
    PaperSetting("LLM2Rec", "llm2rec", "layer_norm_eps", 1e-12, SEQREC_MODULES + " (layer_norm_eps)"),
    PaperSetting("LLM2Rec", "llm2rec", "id_init", "unit", "seqrec/models/SASRec/_model.py (normal_(0, 1))"),
    PaperSetting("LLM2Rec", "llm2rec", "adapter", "linear", SEQREC_SASREC + " (adapter_dims [-1])"),
    PaperSetting("LLM2Rec", "llm2rec", "adapter_init", "xavier", "seqrec/models/SASRec/_model.py"),
    PaperSetting("LLM2Rec", "llm2rec", "train_targets", "last", "seqrec/recdata.py (one sample per line)"),
    PaperSetting("LLM2Rec", "llm2rec", "loss", "ce", SEQREC_SASREC + " (loss_type)"),
    PaperSetting("LLM2Rec", "llm2rec", "lr", 1e-3, "script_extract_and_evaluate.sh"),
    PaperSetting("LLM2Rec", "llm2rec", "weight_decay", 1e-4, "script_extract_and_evaluate.sh"),
    PaperSetting("LLM2Rec", "llm2rec", "batch_size", 256, SEQREC + " (train_batch_size)"),
    PaperSetting("LLM2Rec", "llm2rec", "max_epochs", 1000, SEQREC + " (epochs)"),
    PaperSetting("LLM2Rec", "llm2rec", "eval_every", 5, SEQREC + " (eval_interval)"),
    PaperSetting("LLM2Rec", "llm2rec", "patience", 20, SEQREC + " (patience, in epochs)",
                 "test_srs_presets.py::test_validation_every_n_epochs_and_patience_in_epochs"),
    PaperSetting("LLM2Rec", "llm2rec", "early_stop_metric", "recall@20", SEQREC + " (val_metric)"),
    PaperSetting("LLM2Rec", "llm2rec", "max_grad_norm", 1.0, SEQREC),
    PaperSetting("LLM2Rec", "llm2rec", "exclude_history", False, "seqrec/evaluator.py (full ranking, history kept)"),
    PaperSetting("LLM2Rec", "llm2rec", None, "constant learning rate, AdamW", "seqrec/trainer.py (the scheduler is "
                 "commented out)", "train/srs/trainer.py: AdamW, no scheduler"),
    PaperSetting("LLM2Rec", "llm2rec", None, "GRU4Rec: no biases, no dense layer, lr 1e-4",
                 "seqrec/models/GRU4Rec/_model.py, script_extract_and_evaluate.sh",
                 "test_srs_presets.py::test_llm2rec_gru_has_no_biases_and_no_dense_layer"),
    PaperSetting("LLM2Rec", "llm2rec", None, "row 0 (the \"Null\" vector) is one of the softmax's candidates",
                 "seqrec/models/SASRec/_model.py (logits over every row)", "not repeated: row 0 is padding here, "
                 "left out of the softmax (one fixed negative among the catalogue's; its effect was not measured)",
                 same=False),
    # ---------------------------------------------------------------- LLMEmb's SRS and RAT
    PaperSetting("LLMEmb", "llmemb", "hidden_size", 128, RAT_ARGS),
    PaperSetting("LLMEmb", "llmemb", "num_layers", 2, "utils/argument.py (trm_num)"),
    PaperSetting("LLMEmb", "llmemb", "num_heads", 1, "utils/argument.py"),
    PaperSetting("LLMEmb", "llmemb", "dropout", 0.5, "utils/argument.py (dropout_rate)"),
    PaperSetting("LLMEmb", "llmemb", "max_len", 200, RAT_ARGS),
    PaperSetting("LLMEmb", "llmemb", "ffn_size", 128, LLMEMB_SASREC + " (PointWiseFeedForward: hidden)"),
    PaperSetting("LLMEmb", "llmemb", "sasrec_style", "original", LLMEMB_SASREC + " (SASRecBackbone)",
                 "test_srs_presets.py::test_each_block_style_by_hand (inputs x sqrt(hidden), Q = LN(x))"),
    PaperSetting("LLMEmb", "llmemb", "activation", "relu", LLMEMB_SASREC),
    PaperSetting("LLMEmb", "llmemb", "layer_norm_eps", 1e-8, LLMEMB_SASREC),
    PaperSetting("LLMEmb", "llmemb", "id_init", "xavier", "models/BaseModel.py (_init_weights)"),
    PaperSetting("LLMEmb", "llmemb", "adapter", "llmemb", "models/Adapter.py (Linear(D, D/2), Linear(D/2, H))",
                 "test_srs_presets.py::test_llmemb_adapter_is_linear_through_half_the_width"),
    PaperSetting("LLMEmb", "llmemb", "adapter_init", "xavier-weights", "models/BaseModel.py (_init_weights)"),
    PaperSetting("LLMEmb", "llmemb", "train_targets", "tail", "generators/data.py (Seq2SeqDataset: the last "
                 "max_len training items of each user)",
                 "test_srs_presets.py::test_last_windows_hold_each_users_last_training_items"),
    PaperSetting("LLMEmb", "llmemb", "loss", "bce", LLMEMB_SASREC + " (BCEWithLogitsLoss)"),
    PaperSetting("LLMEmb", "llmemb", "num_negatives", 1, "generators/data.py (one negative per position)"),
    PaperSetting("LLMEmb", "llmemb", "negatives_outside_history", True, "generators/data.py (random_neq outside the "
                 "user's training sequence)", "test_srs_presets.py::"
                 "test_negatives_are_redrawn_outside_the_users_training_items"),
    PaperSetting("LLMEmb", "llmemb", "lr", 1e-3, "utils/argument.py"),
    PaperSetting("LLMEmb", "llmemb", "weight_decay", 0.0, "utils/argument.py (l2)"),
    PaperSetting("LLMEmb", "llmemb", "batch_size", 128, RAT_ARGS),
    PaperSetting("LLMEmb", "llmemb", "max_epochs", 200, RAT_ARGS),
    PaperSetting("LLMEmb", "llmemb", "eval_every", 1, "trainers/trainer.py"),
    PaperSetting("LLMEmb", "llmemb", "patience", 20, RAT_ARGS),
    PaperSetting("LLMEmb", "llmemb", "early_stop_metric", "sampled/ndcg@10", "utils/argument.py (watch_metric)"),
    PaperSetting("LLMEmb", "llmemb", "max_grad_norm", 0.0, "trainers/trainer.py (no clipping)"),
    PaperSetting("LLMEmb", "llmemb", "tail_threshold", 20, "utils/argument.py (ts_item; the datasets' scripts set "
                 "4 or 13)", "test_srs_presets.py::test_llmemb_tail_groups_count_users_over_all_splits"),
    PaperSetting("LLMEmb", "llmemb", "short_threshold", 10, "utils/argument.py (ts_user)"),
    PaperSetting("LLMEmb", "llmemb", None, "no causal mask (commented out)", "models/SASRec.py:54-55",
                 "not repeated (a defect: each position saw its own target): "
                 "test_srs_presets.py::test_no_position_sees_a_later_item_in_any_style", same=False),
    PaperSetting("LLMEmb", "llmemb", None, "RAT: alpha 0.01, soft-target alignment (tau 2, raw vectors) over every "
                 "target position", "models/LLMEmb.py, models/utils.py (Contrastive_Loss2)",
                 "test_srs_rat.py::test_alignment_loss_by_hand"),
    PaperSetting("LLMEmb", "llmemb", None, "RAT: PCA to 1,536 dimensions when the LLM is wider",
                 "results/convert.ipynb", "test_srs_rat.py::test_pca_is_llmembs_1536_when_wider; the PCA is saved "
                 "here (LLMEmb's is not), so a new item is reduced the same way"),
    PaperSetting("LLMEmb", "llmemb", "redraw_valid_negatives", True, "generators/generator.py, generators/data.py "
                 "(100 uniform negatives outside the user's sequence, drawn anew at every evaluation)",
                 "test_srs_presets.py::test_llmemb_redraws_its_validation_negatives_at_every_evaluation"),
    PaperSetting("LLMEmb", "llmemb", None, "the largest item id looks up a zero LLM vector (np.insert(emb, -1))",
                 "models/Adapter.py:18-21", "not repeated (an off-by-one)", same=False),
)


def _config_class(stage: str) -> type:
    from train.stages.pipeline import STAGES

    return STAGES[stage][1]


def profile_values(setting: PaperSetting) -> list[Any]:
    """The field's value under the paper and project profiles, then the cpu-small and demo budgets (paper recipe)."""
    from train.stages.config import BUDGET_NAMES, PROFILE_NAMES

    if setting in DOWNSTREAM:
        from train.srs.config import SRSConfig

        return [getattr(SRSConfig.preset(setting.stage), setting.field), getattr(SRSConfig(), setting.field)]
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
                cells = [s.stage, "(behaviour)", str(s.paper), s.reference] + [
                    "as the paper" if s.same else "differs: see the note"] + [""] * (
                    len(PROFILE_NAMES) + len(budgets) - 1)
            else:
                cells = [s.stage, f"`{s.field}`", _cell(s.paper), s.reference] + [_cell(v) for v in profile_values(s)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") if i < 4 else c for i, c in enumerate(cells))
                         + f" | {s.note} |")
        lines.append("")
    lines += ["## Downstream presets", "",
              "`python -m train.srs --preset llm2rec|llmemb` (and `train.stages rat`, which trains under `llmemb`); "
              "the `project` column is this project's own setting (`--preset project`, the defaults).", ""]
    for method in dict.fromkeys(s.method for s in DOWNSTREAM):
        lines += [f"### {method}", "", "| preset | setting | authors' code | reference | preset value | project | "
                  "note |", "|---|---|---|---|---|---|---|"]
        for s in (s for s in DOWNSTREAM if s.method == method):
            if s.field is None:
                cells = [s.stage, "(behaviour)", str(s.paper).replace("|", "\\|"), s.reference,
                         "as the paper" if s.same else "differs: see the note", ""]
            else:
                cells = [s.stage, f"`{s.field}`", _cell(s.paper), s.reference, *map(_cell, profile_values(s))]
            lines.append("| " + " | ".join(cells) + f" | {s.note} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the page (`python -m train settings > docs/settings.md`)."""
    if argv:
        print("usage: python -m train settings > docs/settings.md", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0
