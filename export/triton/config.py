"""config.pbtxt through Triton's own model-config protobuf (tritonclient ships model_config.proto), written with
protobuf's text_format: a field Triton does not know fails here, at export, not when the server loads it."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton TYPE_*
    dims: list[int]  # without the batch dimension; -1 = dynamic


@dataclass(frozen=True)
class WarmupInput:
    """One input of the warm-up request (batch 1): zeros, or the raw contents of <model>/warmup/<data_file>."""

    data_type: str
    dims: list[int]
    data_file: str | None = None


@dataclass(frozen=True)
class Serving:
    """How one model is served: batch bound, dynamic batching, instances."""

    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    instances: int
    kind: str  # KIND_CPU or KIND_GPU


def to_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def model_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], serving: Serving, *,
                 backend: str | None = None, platform: str | None = None) -> mc.ModelConfig:
    """The common part of every model: name, backend or platform, tensors, the latest version only, batching."""
    config = mc.ModelConfig(name=name, max_batch_size=serving.max_batch_size)
    if backend:
        config.backend = backend
    else:
        config.platform = platform
    config.version_policy.latest.num_versions = 1
    for spec in inputs:
        config.input.add(name=spec.name, data_type=mc.DataType.Value(spec.data_type), dims=spec.dims)
    for spec in outputs:
        config.output.add(name=spec.name, data_type=mc.DataType.Value(spec.data_type), dims=spec.dims)
    if platform != "ensemble":
        config.instance_group.add(count=serving.instances, kind=mc.ModelInstanceGroup.Kind.Value(serving.kind))
        config.dynamic_batching.preferred_batch_size.extend(serving.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_us
    return config


def add_parameters(config: mc.ModelConfig, params: dict[str, str]) -> None:
    for key, value in params.items():
        config.parameters[key].string_value = value


def add_tensorrt(config: mc.ModelConfig, params: dict[str, str]) -> None:
    """onnxruntime's TensorRT execution accelerator (parameter names from the onnxruntime backend README)."""
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    accelerator.parameters.update(params)


def add_warmup(config: mc.ModelConfig, inputs: dict[str, WarmupInput]) -> None:
    sample = config.model_warmup.add(name=f"{config.name}_warmup", batch_size=1)
    for name, spec in inputs.items():
        tensor = sample.inputs[name]
        tensor.data_type = mc.DataType.Value(spec.data_type)
        tensor.dims.extend(spec.dims)
        if spec.data_file is None:
            tensor.zero_data = True
        else:
            tensor.input_data_file = spec.data_file


def add_ensemble_step(config: mc.ModelConfig, model: str, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """One step: the step model's tensor names -> the ensemble's (inputs) and back (outputs)."""
    config.ensemble_scheduling.step.add(model_name=model, model_version=-1, input_map=inputs, output_map=outputs)
