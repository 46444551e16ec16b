"""Configuration of the sequential recommenders, and the papers' downstream presets.

The field defaults are this project's own setting ("project": hidden 128, 2 layers, 2 heads, dropout 0.3,
history 10, pre-norm SASRec, full-softmax cross-entropy over every position of a window, AdamW lr 1e-3,
wd 1e-4, validated every epoch, patience 10). `PRESETS` hold the papers' downstream settings as their code runs
them (docs/settings.md lists each with its file):
  llm2rec  LLM2Rec's seqrec (seqrec/default.yaml, models/SASRec, models/GRU4Rec): post-norm SASRec (RecBole),
           feed-forward 256, GELU, LayerNorm eps 1e-12, one prefix per training example, batch 256, validated
           every 5 epochs, patience 20 epochs, gradients clipped at 1; GRU4Rec without biases at lr 1e-4.
  llmemb   LLMEmb's SRS (utils/argument.py, experiments/*/rat/llmemb.bash, models/SASRec.py): Kang's SASRec
           (inputs x sqrt(hidden), 1 head, dropout 0.5, ReLU), the last 200 training items of each user as one
           window, BCE with one negative per position drawn outside the user's training items, batch 128, Adam lr 1e-3,
           no weight decay, early stopping on sampled NDCG@10 (patience 20), the 2-layer linear adapter, and
           LLMEmb's long-tail groups. The causal mask is kept (their public code commented it out).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BACKBONES = ("sasrec", "gru4rec")
LOSSES = ("ce", "bce")
ADAPTERS = ("linear", "mlp", "llmemb")  # llmemb: Linear(D, D/2) -> Linear(D/2, hidden), no activation
SASREC_STYLES = ("pre-ln", "post-ln", "original")  # train/srs/sasrec.py
GRU_STYLES = ("project", "llm2rec")  # train/srs/gru4rec.py
ID_INITS = ("small", "unit", "xavier")  # N(0, 0.02), N(0, 1) (LLM2Rec), xavier_normal (LLMEmb)
# torch's defaults; xavier_normal weights and zero biases (LLM2Rec); xavier_normal weights, torch's biases (LLMEmb)
ADAPTER_INITS = ("torch", "xavier", "xavier-weights")
SAMPLED_METRICS = ("sampled/ndcg@10", "sampled/hr@10")  # 100 sampled negatives (LLMEmb's validation)
PADDINGS = ("left", "right")
TRAIN_TARGETS = ("all", "last", "tail")
FUSIONS = ("none", "init")
# options removed after they were measured as not helping (docs/decisions.md), each with its value that changed
# nothing: a config written before the removal that holds that value describes a model trained as now
RETIRED = {"id_dropout": 0.0, "input_dropout": 0.0, "cold_map_rank": "scale"}


# one line per field, for --help (the comments in SRSConfig say why)
FIELD_HELP = {
    "backbone": f"sequence encoder: {', '.join(BACKBONES)}",
    "hidden_size": "width of item and user vectors (the served vector size)",
    "num_layers": "encoder layers",
    "num_heads": "attention heads (SASRec)",
    "ffn_size": "point-wise feed-forward width",
    "dropout": "dropout rate",
    "max_len": "history window: the last max_len items",
    "padding": f"batch padding side: {', '.join(PADDINGS)} (the models give the same answer)",
    "adapter": f"frozen embeddings -> hidden_size: {', '.join(ADAPTERS)}",
    "fusion": f"with frozen embeddings: {', '.join(FUSIONS)} (none: the adapted text vectors; init: an ID table "
              "initialised from the text's principal components, cold items placed by their text)",
    "cold_map": "fusion init: ridge lambda of a text -> ID map fitted on the warm items after training, which "
                "places cold and new items (0: they keep the text's starting point)",
    "cold_map_rank_epochs": "fusion init with cold_map: epochs calibrating that map by ranking (a scale and a "
                            "shared offset, fitted with the frozen recommender's loss while a share cold_map_pretend "
                            "of the warm items pretends to be new; train/srs/coldmap.py); 0: the ridge map alone",
    "cold_map_pretend": "share of warm items whose vectors the map replaces in each calibration batch",
    "standardize": "standardise frozen embeddings per dimension before the adapter",
    "train_targets": "all: a loss at every position of max_len windows; last: one prefix per example; tail: one "
                     "window per user, its last max_len training items (LLMEmb)",
    "sasrec_style": f"SASRec block: {', '.join(SASREC_STYLES)} (this project's, RecBole/LLM2Rec's, Kang's/LLMEmb's)",
    "gru_style": f"GRU4Rec: {', '.join(GRU_STYLES)}",
    "activation": "feed-forward activation: gelu or relu",
    "layer_norm_eps": "LayerNorm epsilon",
    "id_init": f"ID table initialisation: {', '.join(ID_INITS)}",
    "adapter_init": f"adapter initialisation: {', '.join(ADAPTER_INITS)}",
    "negatives_outside_history": "--loss bce: draw negatives outside the user's training items (LLMEmb)",
    "redraw_valid_negatives": "sampled validation metrics: draw new negatives at every evaluation (LLMEmb)",
    "eval_every": "validate every N epochs",
    "max_grad_norm": "clip gradients at this norm (0: no clipping)",
    "tail_threshold": "long-tail groups: 0 = the 20% most trained-on items are head; k > 0 = LLMEmb's: an item is "
                      "tail when fewer than k users have it over all splits",
    "short_threshold": "history groups: 0 = short up to the median history; k > 0 = short below k items (LLMEmb)",
    "loss": f"{', '.join(LOSSES)}: full-softmax cross-entropy or BCE with sampled negatives",
    "num_negatives": "negatives per target for --loss bce",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "batch_size": "windows (train_targets all) or prefixes (last) per step",
    "max_epochs": "upper bound on epochs (early stopping usually ends sooner)",
    "patience": "epochs without a better validation metric before stopping (checked when validating)",
    "eval_batch_size": "users scored at once in evaluation",
    "exclude_history": "leave the user's history items out of the ranking",
    "early_stop_metric": "validation metric for early stopping and the kept checkpoint",
}


@dataclass
class SRSConfig:
    backbone: str = "sasrec"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    ffn_size: int = 128  # point-wise feed-forward width (the original SASRec: = hidden)
    dropout: float = 0.3
    sasrec_style: str = "pre-ln"
    gru_style: str = "project"
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    id_init: str = "small"
    max_len: int = 10
    padding: str = "left"  # how batches are padded; the models are correct under both
    # item representation: "ids" = a trainable ID table, else frozen embeddings + adapter
    items: str = "ids"
    adapter: str = "linear"
    adapter_init: str = "torch"
    # with frozen items: "none" = adapted text vectors only; "init" = an ID table whose starting point is the
    # text's principal components
    fusion: str = "none"
    standardize: bool = False  # per-dimension standardisation of frozen embeddings before the adapter
    # fusion="init": after training, cold (and upserted) items get ridge(text -> trained ID rows of warm items)
    cold_map: float = 0.0
    # fusion="init": then calibrate that map by ranking with the trained model frozen (train/srs/coldmap.py)
    cold_map_rank_epochs: int = 0
    cold_map_pretend: float = 0.4  # chosen on validation (docs/decisions.md, the cold-vector screen)
    # optimisation
    # "all": a loss at every position of max_len windows of each training sequence (SASRec's
    # training; every training prefix is still a target exactly once), "last": one prefix per
    # example, loss on its last position only (LLM2Rec's downstream trainer; max_len x slower)
    train_targets: str = "all"
    loss: str = "ce"
    num_negatives: int = 1  # for loss="bce"
    negatives_outside_history: bool = False  # loss="bce": negatives never among the user's training items
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64  # windows of max_len targets with train_targets="all", prefixes with "last"
    max_epochs: int = 200
    patience: int = 10
    eval_every: int = 1
    max_grad_norm: float = 0.0
    # evaluation
    eval_batch_size: int = 1024
    exclude_history: bool = False
    ks: tuple[int, ...] = (5, 10, 20)
    early_stop_metric: str = "recall@20"
    tail_threshold: int = 0
    short_threshold: int = 0
    redraw_valid_negatives: bool = False  # sampled validation: new negatives at every evaluation (LLMEmb)

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        checks = [
            ("backbone", self.backbone in BACKBONES, f"one of {BACKBONES}"),
            ("loss", self.loss in LOSSES, f"one of {LOSSES}"),
            ("adapter", self.adapter in ADAPTERS, f"one of {ADAPTERS}"),
            ("padding", self.padding in PADDINGS, f"one of {PADDINGS}"),
            ("train_targets", self.train_targets in TRAIN_TARGETS, f"one of {TRAIN_TARGETS}"),
            ("fusion", self.fusion in FUSIONS and (self.fusion == "none" or self.items != "ids"),
             f"one of {FUSIONS} (the others were removed: docs/decisions.md), and other than 'none' only with an "
             "embedding file as items"),
            ("cold_map", self.cold_map >= 0 and (self.cold_map == 0 or self.fusion == "init"),
             ">= 0, and > 0 only with fusion 'init'"),
            ("cold_map_rank_epochs", self.cold_map_rank_epochs >= 0
             and (self.cold_map_rank_epochs == 0 or self.cold_map > 0), ">= 0, and > 0 only with cold_map > 0"),
            ("cold_map_pretend", 0.0 < self.cold_map_pretend < 1.0, "in (0, 1)"),
            ("hidden_size", self.hidden_size > 0, "> 0"),
            ("num_layers", self.num_layers > 0, "> 0"),
            ("num_heads", self.num_heads > 0 and self.hidden_size % self.num_heads == 0,
             "> 0 and a divisor of hidden_size"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("max_len", self.max_len > 0, "> 0"),
            ("num_negatives", self.num_negatives > 0, "> 0"),
            ("batch_size", self.batch_size > 0, "> 0"),
            ("max_epochs", self.max_epochs >= 0, ">= 0"),
            ("patience", self.patience > 0, "> 0"),
            ("ks", len(self.ks) > 0 and all(k > 0 for k in self.ks), "non-empty, all > 0"),
            ("early_stop_metric", self.early_stop_metric in [f"{m}@{k}" for m in ("recall", "ndcg") for k in self.ks]
             + list(SAMPLED_METRICS), f"recall@k or ndcg@k for a k in ks, or one of {SAMPLED_METRICS}"),
            ("sasrec_style", self.sasrec_style in SASREC_STYLES, f"one of {SASREC_STYLES}"),
            ("gru_style", self.gru_style in GRU_STYLES, f"one of {GRU_STYLES}"),
            ("activation", self.activation in ("gelu", "relu"), "gelu or relu"),
            ("layer_norm_eps", self.layer_norm_eps > 0, "> 0"),
            ("id_init", self.id_init in ID_INITS, f"one of {ID_INITS}"),
            ("adapter_init", self.adapter_init in ADAPTER_INITS, f"one of {ADAPTER_INITS}"),
            ("eval_every", self.eval_every > 0, "> 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0"),
            ("tail_threshold", self.tail_threshold >= 0, ">= 0"),
            ("short_threshold", self.short_threshold >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"SRSConfig.{name} must be {rule}, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, name: str = "project", **overrides: object) -> SRSConfig:
        """The named downstream preset (for its backbone: `overrides["backbone"]`, default SASRec) with
        `overrides` (None values ignored) on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown SRS preset {name!r}; one of {list(PRESETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        backbone = str(given.get("backbone", cls.backbone))
        values = {**PRESETS[name], **BACKBONE_PRESETS.get((name, backbone), {}), **given}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SRSConfig field(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ks"] = list(self.ks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SRSConfig:
        d = without_retired(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SRSConfig keys: {unknown}")
        return cls(**d)


def without_retired(d: dict) -> dict:
    """`d` (an SRSConfig as a dict) less the RETIRED keys at the value that changed nothing; ValueError when one
    holds another value: that model was trained with an option that no longer exists."""
    used = {k: d[k] for k in RETIRED if k in d and d[k] != RETIRED[k]}
    if used:
        raise ValueError(f"SRSConfig: {used} selects an option removed after it was measured as not helping; "
                         "docs/decisions.md names the commit that still has it")
    return {k: v for k, v in d.items() if k not in RETIRED}


# The papers' downstream settings (docs/settings.md: each value with the file it comes from). A preset names every
# field its paper sets; the rest keep the defaults above.
PRESETS: dict[str, dict[str, object]] = {
    "project": {},
    "llm2rec": {
        "hidden_size": 128, "num_layers": 2, "num_heads": 2, "ffn_size": 256, "dropout": 0.3, "max_len": 10,
        "sasrec_style": "post-ln", "gru_style": "llm2rec", "activation": "gelu", "layer_norm_eps": 1e-12,
        "id_init": "unit", "adapter": "linear", "adapter_init": "xavier", "standardize": False,
        "train_targets": "last", "loss": "ce", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 256,
        "max_epochs": 1000, "eval_every": 5, "patience": 20, "max_grad_norm": 1.0, "early_stop_metric": "recall@20",
    },
    "llmemb": {
        "hidden_size": 128, "num_layers": 2, "num_heads": 1, "ffn_size": 128, "dropout": 0.5, "max_len": 200,
        "sasrec_style": "original", "activation": "relu", "layer_norm_eps": 1e-8, "id_init": "xavier",
        "adapter": "llmemb", "adapter_init": "xavier-weights", "standardize": False, "train_targets": "tail",
        "loss": "bce", "num_negatives": 1, "negatives_outside_history": True, "lr": 1e-3, "weight_decay": 0.0,
        "batch_size": 128, "max_epochs": 200, "eval_every": 1, "patience": 20, "max_grad_norm": 0.0,
        "early_stop_metric": "sampled/ndcg@10", "tail_threshold": 20, "short_threshold": 10,
        "redraw_valid_negatives": True,
    },
}
BACKBONE_PRESETS: dict[tuple[str, str], dict[str, object]] = {
    ("llm2rec", "gru4rec"): {"lr": 1e-4},  # script_extract_and_evaluate.sh's GRU4Rec setting
}
