"""The Triton side of an export: the model repository (config.pbtxt through Triton's model-config protobuf,
llmrec.json) and TensorRT engines. `python -m export.onnx repository` writes it."""
