"""Triton Python-backend model running an ONNX graph with onnxruntime on the CPU.

Copied as `<model>/<version>/model.py` (item_embedder, user_encoder) by
`python -m export.onnx repository --flavour python`, next to `model.onnx`.
This is the CPU stand-in for Triton's native onnxruntime backend: the input
and output names come from config.pbtxt, which the writer took from the graph.

Requests queued together by Triton's dynamic batcher are concatenated only
when their non-batch shapes agree (the same sequence length): re-padding
texts or histories to a common length would change nothing in theory but
shifts float results slightly, and a vector must not depend on which other
requests happened to arrive with it.

Config parameters: `onnx_file` (default model.onnx), `intra_op_thread_count`
and `inter_op_thread_count` (0 = onnxruntime's choice).
Needs only numpy and onnxruntime (no torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

try:  # only present inside the Triton Python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64, "TYPE_INT64": np.int64,
               "TYPE_INT32": np.int32, "TYPE_BOOL": np.bool_}


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0") or 0)
        options.inter_op_num_threads = int(params.get("inter_op_thread_count", "0") or 0)
        path = folder / (params.get("onnx_file") or "model.onnx")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i["name"], NUMPY_TYPES[i["data_type"]]) for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        graph_inputs = sorted(i.name for i in self.session.get_inputs())
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if graph_inputs != sorted(name for name, _ in self.inputs) or not set(self.outputs) <= graph_outputs:
            raise ValueError(f"{path}: graph inputs {graph_inputs} / outputs {sorted(graph_outputs)} do not match "
                             f"config.pbtxt inputs {[n for n, _ in self.inputs]} / outputs {self.outputs}")

    def execute(self, requests: list) -> list:
        arrays = [[np.ascontiguousarray(pb_utils.get_input_tensor_by_name(r, name).as_numpy(), dtype=dtype)
                   for name, dtype in self.inputs] for r in requests]
        groups: dict[tuple, list[int]] = {}
        for index, request_arrays in enumerate(arrays):
            groups.setdefault(tuple(a.shape[1:] for a in request_arrays), []).append(index)
        responses: list = [None] * len(requests)
        for members in groups.values():
            try:
                feed = {name: np.concatenate([arrays[m][k] for m in members]) for k, (name, _) in
                        enumerate(self.inputs)}
                results = self.session.run(self.outputs, feed)
                start = 0
                for m in members:
                    end = start + arrays[m][0].shape[0]
                    responses[m] = pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor(name, np.ascontiguousarray(out[start:end]))
                        for name, out in zip(self.outputs, results, strict=True)])
                    start = end
            except Exception as error:  # fail this group's requests, not the whole batch
                for m in members:
                    responses[m] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {error}"))
        return responses
