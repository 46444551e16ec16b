"""The names the layers agree on: the models of the Triton repository and the tensors of the exported graphs.

export writes them (ONNX graph I/O, config.pbtxt, ensemble wiring) and serving calls them (Triton, onnxruntime);
one definition here so that a rename cannot reach only one side. The Python models that run inside Triton
(serving/triton/models/) cannot import the project and repeat the tensor names they use.

- item encoder: item text -> item vector (the tokenizer + item embedder ensemble; UpsertItems, EmbedItems)
- user encoder: a history of item vectors -> user vector (the SRS; Recommend)
"""

# models of the Triton repository
ITEM_ENCODER = "item_encoder"  # ensemble: TEXT -> tokenizer -> item_embedder -> ITEM_VECTOR
TOKENIZER = "tokenizer"
ITEM_EMBEDDER = "item_embedder"  # the embedder graph: INPUT_IDS, ATTENTION_MASK -> ITEM_VECTOR
USER_ENCODER = "user_encoder"  # the SRS graph: ITEM_VECTORS, ATTENTION_MASK -> USER_VECTOR

# tensors
TEXT = "text"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
ITEM_VECTOR = "item_vector"
ITEM_VECTORS = "item_vectors"
USER_VECTOR = "user_vector"
