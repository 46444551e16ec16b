"""Configuration of the sequential recommenders.

Defaults are LLM2Rec's downstream setting (hidden 128, 2 layers, 2 heads,
dropout 0.3, history 10, full-softmax cross-entropy, AdamW lr 1e-3, wd 1e-4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BACKBONES = ("sasrec", "gru4rec")
LOSSES = ("ce", "bce")
ADAPTERS = ("linear", "mlp")
PADDINGS = ("left", "right")
TRAIN_TARGETS = ("all", "last")
FUSIONS = ("none", "gated", "residual", "init", "residual-init")
COLD_MAP_RANKS = ("scale", "scale-pop", "affine", "full")  # train/srs/coldmap.py


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
    "fusion": f"with frozen embeddings: {', '.join(FUSIONS)} (gated: + an ID embedding for warm items through a "
              "learned gate; residual: ID + text with the text starting at zero, see id_dropout; init: an ID table "
              "initialised from the text's principal components; residual-init: residual with that ID start)",
    "id_dropout": "fusion residual: probability a warm item's ID part is dropped per batch (DropoutNet), so the "
                  "text path learns to rank cold items",
    "input_dropout": "dropout on the standardised frozen embeddings before the adapter",
    "cold_map": "fusion init: ridge lambda of a text -> ID map fitted on the warm items after training, which "
                "places cold and new items (0: they keep the text's starting point)",
    "cold_map_rank_epochs": "fusion init with cold_map: epochs calibrating that map by ranking (what cold_map_rank "
                            "names, fitted with the frozen recommender's loss while a share cold_map_pretend of the "
                            "warm items pretends to be new; train/srs/coldmap.py); 0: the ridge map alone",
    "cold_map_rank": "what that calibration fits: scale (a scale and a shared offset), scale-pop (the offset "
                     "weighted by the text), affine, full",
    "cold_map_pretend": "share of warm items whose vectors the map replaces in each calibration batch",
    "standardize": "standardise frozen embeddings per dimension before the adapter",
    "train_targets": "all: a loss at every position of max_len windows; last: one prefix per example",
    "loss": f"{', '.join(LOSSES)}: full-softmax cross-entropy or BCE with sampled negatives",
    "num_negatives": "negatives per target for --loss bce",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "batch_size": "windows (train_targets all) or prefixes (last) per step",
    "max_epochs": "upper bound on epochs (early stopping usually ends sooner)",
    "patience": "epochs without a better validation metric before stopping",
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
    max_len: int = 10
    padding: str = "left"  # how batches are padded; the models are correct under both
    # item representation: "ids" = a trainable ID table, else frozen embeddings + adapter
    items: str = "ids"
    adapter: str = "linear"
    # with frozen items: "none" = adapted text vectors only; "gated" = + an ID embedding for items seen in
    # training, fused by a learned gate (cold items fall back to text); "residual" = ID + text, the text
    # starting at zero; "init" = an ID table whose starting point is the text's principal components;
    # "residual-init" = "residual" whose ID part starts there
    fusion: str = "none"
    standardize: bool = False  # per-dimension standardisation of frozen embeddings before the adapter
    id_dropout: float = 0.0  # fusion="residual": warm items train text-only with this probability per batch
    input_dropout: float = 0.0  # on the adapter's input (frozen embeddings)
    # fusion="init": after training, cold (and upserted) items get ridge(text -> trained ID rows of warm items)
    cold_map: float = 0.0
    # fusion="init": then calibrate that map by ranking with the trained model frozen (train/srs/coldmap.py)
    cold_map_rank_epochs: int = 0
    cold_map_rank: str = "scale"
    cold_map_pretend: float = 0.4  # chosen on validation (bench/results/cold_vectors.md)
    # optimisation
    # "all": a loss at every position of max_len windows of each training sequence (SASRec's
    # training; every training prefix is still a target exactly once), "last": one prefix per
    # example, loss on its last position only (LLM2Rec's downstream trainer; max_len x slower)
    train_targets: str = "all"
    loss: str = "ce"
    num_negatives: int = 1  # for loss="bce"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64  # windows of max_len targets with train_targets="all", prefixes with "last"
    max_epochs: int = 200
    patience: int = 10
    # evaluation
    eval_batch_size: int = 1024
    exclude_history: bool = False
    ks: tuple[int, ...] = (5, 10, 20)
    early_stop_metric: str = "recall@20"

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        checks = [
            ("backbone", self.backbone in BACKBONES, f"one of {BACKBONES}"),
            ("loss", self.loss in LOSSES, f"one of {LOSSES}"),
            ("adapter", self.adapter in ADAPTERS, f"one of {ADAPTERS}"),
            ("padding", self.padding in PADDINGS, f"one of {PADDINGS}"),
            ("train_targets", self.train_targets in TRAIN_TARGETS, f"one of {TRAIN_TARGETS}"),
            ("fusion", self.fusion in FUSIONS and (self.fusion == "none" or self.items != "ids"),
             f"one of {FUSIONS}, and other than 'none' only with an embedding file as items"),
            ("id_dropout", 0.0 <= self.id_dropout < 1.0
             and (self.id_dropout == 0 or self.fusion in ("residual", "residual-init")),
             "in [0, 1), and > 0 only with fusion 'residual' or 'residual-init'"),
            ("input_dropout", 0.0 <= self.input_dropout < 1.0, "in [0, 1)"),
            ("cold_map", self.cold_map >= 0 and (self.cold_map == 0 or self.fusion == "init"),
             ">= 0, and > 0 only with fusion 'init'"),
            ("cold_map_rank_epochs", self.cold_map_rank_epochs >= 0
             and (self.cold_map_rank_epochs == 0 or self.cold_map > 0), ">= 0, and > 0 only with cold_map > 0"),
            ("cold_map_pretend", 0.0 < self.cold_map_pretend < 1.0, "in (0, 1)"),
            ("cold_map_rank", self.cold_map_rank in COLD_MAP_RANKS, f"one of {COLD_MAP_RANKS}"),
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
            ("early_stop_metric", self.early_stop_metric in [f"{m}@{k}" for m in ("recall", "ndcg") for k in self.ks],
             "recall@k or ndcg@k for a k in ks"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"SRSConfig.{name} must be {rule}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ks"] = list(self.ks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SRSConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SRSConfig keys: {unknown}")
        return cls(**d)
