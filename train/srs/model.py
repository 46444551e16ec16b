"""A sequential recommender = item representation + sequence encoder.

The two halves are kept apart because they are deployed apart: item vectors go
to the index and item store, the sequence encoder becomes the user encoder that
turns a history of item vectors into a user vector. Scores are inner products.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SRSConfig
from .gru4rec import GRU4Rec
from .items import FrozenItemEmbedding, IDItemEmbedding, InitItemEmbedding
from .sasrec import SASRec


def build_encoder(config: SRSConfig) -> nn.Module:
    if config.backbone == "sasrec":
        return SASRec(config.hidden_size, config.max_len, config.num_layers, config.num_heads,
                      config.ffn_size, config.dropout, config.sasrec_style, config.activation, config.layer_norm_eps)
    return GRU4Rec(config.hidden_size, config.num_layers, config.dropout, config.gru_style)


class SequentialRecommender(nn.Module):
    def __init__(self, config: SRSConfig, num_items: int, frozen_embeddings: torch.Tensor | None = None,
                 warm_items: torch.Tensor | None = None) -> None:
        """`warm_items` [num_items + 1] bool (items seen in training) is needed by fusion "init"."""
        super().__init__()
        self.config = config
        self.num_items = num_items
        if frozen_embeddings is None:
            self.items = IDItemEmbedding(num_items, config.hidden_size, how=config.id_init)
        else:
            if frozen_embeddings.shape[0] != num_items + 1:
                raise ValueError(
                    f"frozen embeddings have {frozen_embeddings.shape[0]} rows, expected {num_items + 1}"
                )
            if config.fusion != "none" and (warm_items is None or warm_items.shape[0] != num_items + 1):
                raise ValueError(f"fusion={config.fusion!r} needs a warm-item mask of {num_items + 1} rows")
            if config.fusion == "init":  # the text only shapes where training starts
                self.items = InitItemEmbedding(frozen_embeddings, config.hidden_size, warm_items)
            else:
                self.items = FrozenItemEmbedding(frozen_embeddings, config.hidden_size, config.adapter,
                                                 config.standardize, fit_rows=warm_items,
                                                 adapter_init=config.adapter_init)
        self.encoder = build_encoder(config)

    def text_path(self) -> FrozenItemEmbedding | None:
        """The part of the item representation that reads frozen text embeddings: what gives a cold or newly
        upserted item its vector, and what an exported item encoder carries after the LLM. None for IDs only."""
        if isinstance(self.items, FrozenItemEmbedding):
            return self.items
        return getattr(self.items, "text", None)

    def items_with_text(self, text: torch.Tensor) -> torch.Tensor:
        """The item table [num_items + 1, D] when the text path gives `text` for every row: fusion "init" keeps
        the warm items' trained IDs (as `item_vectors` does); otherwise the table is `text`."""
        compose = getattr(self.items, "with_text", None)
        return compose(text) if compose is not None else text

    def item_vectors(self) -> torch.Tensor:
        """All item vectors [num_items + 1, D]; row 0 (padding) is zero."""
        return self.items.all_items()

    def user_vectors(self, history: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors [B, D] from padded id histories [B, L] (0 = padding)."""
        mask = history != 0
        vectors = self.items(history) if item_table is None else item_table[history]
        return self.encoder(vectors, mask)

    def sequence_states(self, history: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Causal state at every position [B, L, D]: the user vector of each prefix."""
        mask = history != 0
        vectors = self.items(history) if item_table is None else item_table[history]
        return self.encoder.sequence_output(vectors, mask)

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """Inner-product scores over every item [B, num_items + 1]."""
        table = self.item_vectors()
        return self.user_vectors(history, table) @ table.T
