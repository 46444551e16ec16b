"""export.onnx.quantize on a tiny token-ids -> item-vector graph (embedding, two blocks, mean pooling): no downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export.onnx import quantize as Q  # noqa: E402

VOCAB, DIM = 50, 64


class TinyEncoder(torch.nn.Module):
    """Names its linears like a Llama layer (q_proj, down_proj) so the recipes' patterns apply."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.q_proj = torch.nn.Linear(DIM, DIM, bias=False)
        self.up_proj = torch.nn.Linear(DIM, 2 * DIM, bias=False)
        self.down_proj = torch.nn.Linear(2 * DIM, DIM, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        x = x + self.q_proj(x)
        x = x + self.down_proj(torch.nn.functional.silu(self.up_proj(x)))
        w = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    ids = torch.randint(1, VOCAB, (2, 5))
    torch.onnx.export(TinyEncoder().eval(), (ids, torch.ones_like(ids)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["item_vector"], opset_version=17,
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                    "item_vector": {0: "b"}})
    return path


def token_ids(n: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [list(rng.integers(1, VOCAB, size=int(rng.integers(2, 9)))) for _ in range(n)]


def embed(path: Path) -> np.ndarray:
    return Q.encode_ids(Q.session(path, threads=1), token_ids(), pad_id=0, batch_size=8)


@pytest.mark.parametrize("recipe", ["dynamic", "dynamic-pc-skip", "nbits8"])
def test_recipes_keep_the_interface_and_stay_close(tiny_onnx, tmp_path, recipe):
    dst = Q.quantize_int8(tiny_onnx, tmp_path / "q.onnx", recipe)
    sess = Q.session(dst)
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    assert sess.get_outputs()[0].name == "item_vector"
    ref, cand = embed(tiny_onnx), embed(dst)
    assert cand.shape == ref.shape and cand.dtype == np.float32
    assert Q.cosine(ref, cand).mean() > 0.95


def test_excluded_nodes_stay_float(tiny_onnx, tmp_path):
    dst = Q.quantize_int8(tiny_onnx, tmp_path / "q.onnx", "dynamic-pc-skip")
    nodes = onnx.load(str(dst)).graph.node
    assert any("down_proj" in n.name and n.op_type == "MatMul" for n in nodes)
    assert any("q_proj" in n.name and n.op_type == "MatMulInteger" for n in nodes)
    assert Q.matching_nodes(tiny_onnx, [r"down_proj"]) and not Q.matching_nodes(tiny_onnx, [])


def test_optimize_and_fp16_keep_outputs(tiny_onnx, tmp_path):
    ref = embed(tiny_onnx)
    np.testing.assert_allclose(embed(Q.optimize(tiny_onnx, tmp_path / "opt.onnx")), ref, atol=1e-5)
    half = Q.to_fp16(tiny_onnx, tmp_path / "fp16.onnx")
    sess = Q.session(half)
    assert sess.get_outputs()[0].type == "tensor(float)" and sess.get_inputs()[0].type == "tensor(int64)"
    assert Q.cosine(ref, embed(half)).min() > 0.999


def test_gate_sees_what_cosine_misses():
    rng = np.random.default_rng(0)
    # anisotropic vectors: a shared direction dominates, the item-specific part is small
    reference = 10.0 + rng.normal(size=(200, 32)) * 0.5
    noisy = reference + rng.normal(size=reference.shape) * 0.5
    result = Q.gate(reference, noisy)
    assert Q.mean_pairwise_cosine(reference) > 0.95
    assert result.cosine_mean > 0.99 and result.overlap < 0.5 and not result.passed
    hits = (np.arange(1000) % 5 == 0).astype(float)  # R@10 .2 on 1,000 examples
    same = Q.gate(reference, reference.copy(), hits=lambda v: hits)
    assert same.overlap == 1.0 and same.recall_drop == 0.0 and same.recall_drop_bound == 0.0 and same.passed


def hits_with_changes(lost: int, gained: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """fp32 hits (R@10 .2 on n examples) and a variant's that loses `lost` of them and gains `gained` others."""
    reference = (np.arange(n) % 5 == 0).astype(float)
    variant = reference.copy()
    variant[np.flatnonzero(reference)[:lost]] = 0
    variant[np.flatnonzero(reference == 0)[:gained]] = 1
    return reference, variant


def test_gate_holds_the_worst_end_of_the_paired_interval_and_uses_final_space():
    v = np.random.default_rng(1).normal(size=(50, 8))
    # a 1% point drop from users who flip both ways: the interval's worst end is beyond 2% -> not shown equal
    reference, variant = hits_with_changes(lost=24, gained=20)
    result = Q.gate(v, v.copy(), final=lambda x: x * 2.0, hits=lambda x: variant, hits_reference=reference)
    assert result.overlap == 1.0 and result.overlap_raw == 1.0
    assert result.recall_drop == pytest.approx(0.01) and result.recall_interval["examples"] == 2000
    assert result.recall_drop_bound > 0.02 and not result.passed and result.to_dict()["passed"] is False
    # the same 1% drop from a few users who only lose: the interval is narrow, the variant passes
    reference, variant = hits_with_changes(lost=4, gained=0)
    tight = Q.gate(v, v.copy(), hits=lambda x: variant, hits_reference=reference)
    assert tight.recall_drop == pytest.approx(0.01) and tight.recall_drop_bound <= 0.02 and tight.passed
    # a clear 5% drop fails whatever the interval
    reference, variant = hits_with_changes(lost=20, gained=0)
    assert not Q.gate(v, v.copy(), hits=lambda x: variant, hits_reference=reference).passed
    with pytest.raises(ValueError):
        Q.gate(v, v[:10])


def test_unknown_recipe_is_rejected(tiny_onnx, tmp_path):
    with pytest.raises(KeyError):
        Q.quantize_int8(tiny_onnx, tmp_path / "q.onnx", "no-such-recipe")


def test_cli_subcommand_writes_a_variant(tiny_onnx, tmp_path, capsys):
    import argparse

    p = argparse.ArgumentParser()
    Q.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["quantize", "--model", str(tiny_onnx), "--out", str(tmp_path / "q.onnx"), "--int8", "dynamic"])
    assert args.func(args) == 0 and (tmp_path / "q.onnx").is_file()
    assert "MB" in capsys.readouterr().out


def test_weight_only_nbits_recipe_runs(tiny_onnx, tmp_path):
    dst = Q.quantize_int8(tiny_onnx, tmp_path / "q.onnx", "nbits8-w")
    assert any(n.op_type == "MatMulNBits" for n in onnx.load(str(dst)).graph.node)
    assert Q.cosine(embed(tiny_onnx), embed(dst)).min() > 0.99
