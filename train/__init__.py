"""Training: datasets, the LLM item embedder and its stages, embedding extraction, sequential recommenders.

The public surface other layers may use (export reads trained artifacts through it; tests/test_layers.py checks
that it imports nothing else): the names in `__all__` of train.data (datasets, item texts), train.embed (item
texts, extraction), train.embedder (the embedder and pooling), train.eval (metrics, paired bootstrap), train.srs
(recommenders, checkpoints, PCA) and train.stages (embedder checkpoints and their hashes). train imports nothing
from export or serving.
"""
