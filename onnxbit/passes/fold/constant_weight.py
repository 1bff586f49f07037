"""The shared engine of the weight folding passes.

Every weight pass follows the same three steps for the MatMul/Gemm weights it
recognises: pattern (which constant subgraph computes the weight input),
check (evaluate it with onnxruntime and prove the values exactly ternary), and
rewrite (the node reads a constant that carries the proof: codes and scales,
see onnxbit.graph.ternary). The passes differ only in the pattern.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proof_of, ternary_constant
from onnxbit.graph.ternary import TernaryProof

from ..base import PassContext
from .evaluate import NotConstantError, constant_subgraph, iter_evaluated
from .exact_ternary import NotTernaryError, split_exact_ternary
from .matching import ensure_unique_node_names

# Decides whether a weight's constant subgraph is this pass's chain: returns a
# short description of the chain when it is, None when it is someone else's.
ChainPattern = Callable[[gs.Tensor, list[gs.Node]], "str | None"]


@dataclass
class WeightSlot:
    """The weight input of a MatMul (input 1), Gemm (input 1, maybe transB)
    or Conv (input 1: [M, C/group, *kernel], read as M rows of K)."""

    node: gs.Node
    tensor: gs.Tensor
    stored_transposed: bool  # Gemm transB=1 and Conv: the tensor is [N, K] (Conv: reshaped)
    conv_shape: tuple[int, ...] | None = None  # a Conv weight's own shape

    def to_k_n(self, value: np.ndarray) -> np.ndarray:
        if self.conv_shape is not None:
            return value.reshape(value.shape[0], -1).T
        return value.T if self.stored_transposed else value

    def from_k_n(self, value: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(value.T if self.stored_transposed else value)


def gemm_problem(node: gs.Node) -> str | None:
    """Why a Gemm cannot be read as y = A @ W (+ C), or None when it can."""
    if node.attrs.get("transA", 0):
        return "Gemm with transA=1 is not a plain A @ W"
    if float(node.attrs.get("alpha", 1.0)) != 1.0:
        return f"Gemm with alpha={node.attrs['alpha']} scales the product"
    return None


def weight_slots(graph: gs.Graph) -> list[WeightSlot]:
    slots = []
    for node in graph.nodes:
        if node.op == "MatMul" and node.domain in ("", "ai.onnx", None) and len(node.inputs) == 2:
            slots.append(WeightSlot(node, node.inputs[1], False))
        elif node.op == "Gemm" and node.domain in ("", "ai.onnx", None) and len(node.inputs) >= 2:
            slots.append(WeightSlot(node, node.inputs[1], bool(node.attrs.get("transB", 0))))
        elif node.op == "Conv" and node.domain in ("", "ai.onnx", None) and len(node.inputs) >= 2:
            shape = node.inputs[1].shape
            known = shape is not None and all(isinstance(d, int) for d in shape) and len(shape) >= 3
            slots.append(WeightSlot(node, node.inputs[1], True, tuple(shape) if known else ()))
    return slots


def fold_constant_weights(ctx: PassContext, pass_name: str, pattern: ChainPattern,
                          record_not_ternary: bool = True) -> int:
    """Fold every not-yet-recorded weight whose constant subgraph ``pattern``
    claims. Returns how many were folded; refusals are recorded as skipped
    (except "not ternary" when ``record_not_ternary`` is False: a plain float
    weight is not a refusal, it is simply not a QAT weight)."""
    graph = ctx.graph
    ensure_unique_node_names(graph)
    claimed: list[tuple[WeightSlot, str]] = []
    for slot in weight_slots(graph):
        if proof_of(slot.tensor) is not None:
            continue
        try:
            nodes = constant_subgraph([slot.tensor])
        except NotConstantError:
            continue  # an activation-by-activation product, not a weight
        chain = pattern(slot.tensor, nodes)
        if chain is None:
            continue
        if slot.node.op == "Gemm" and (problem := gemm_problem(slot.node)):
            _skip(ctx, slot, pass_name, f"{chain}: {problem}")
            continue
        claimed.append((slot, chain))
    if not claimed:
        return 0

    # A few onnxruntime sessions evaluate every claimed weight; each value is
    # folded as it arrives and dropped, so memory stays near one batch.
    by_tensor: dict[str, list[tuple[WeightSlot, str]]] = {}
    for slot, chain in claimed:
        by_tensor.setdefault(slot.tensor.name, []).append((slot, chain))
    weights = [users[0][0].tensor for users in by_tensor.values()]
    folded = 0
    for tensor, value in iter_evaluated(graph, weights):
        folded += _fold_users(ctx, pass_name, by_tensor[tensor.name], value, record_not_ternary)
    graph.cleanup()
    return folded


def _fold_users(ctx: PassContext, pass_name: str, users: list[tuple[WeightSlot, str]],
                value: np.ndarray | NotConstantError, record_not_ternary: bool) -> int:
    """Fold every node reading one evaluated weight tensor."""
    folded = 0
    replacements: dict[tuple, gs.Constant] = {}  # (stored_transposed, conv shape) -> the shared constant
    for slot, chain in users:
        if isinstance(value, NotConstantError):
            _skip(ctx, slot, pass_name, f"{chain}: {value}")
            continue
        if slot.conv_shape is not None:
            if value.ndim < 3:
                _skip(ctx, slot, pass_name, f"{chain}: Conv weight has shape {list(value.shape)}")
                continue
            slot.conv_shape = tuple(int(d) for d in value.shape)
        elif value.ndim != 2:
            _skip(ctx, slot, pass_name, f"{chain}: weight has shape {list(value.shape)}, expected 2-D")
            continue
        try:
            ternary = split_exact_ternary(slot.to_k_n(value))
        except NotTernaryError as exc:
            if record_not_ternary:
                _skip(ctx, slot, pass_name, f"{chain}: {exc}")
            continue
        layout = (slot.stored_transposed, slot.conv_shape)
        constant = replacements.get(layout)
        if constant is None:
            proof = TernaryProof(codes=ternary.codes, scales=ternary.scales, act_quant=0, source=pass_name)
            constant = ternary_constant(f"{slot.node.name}.ternary_weight", proof, slot.stored_transposed,
                                        slot.conv_shape or None)
            replacements[layout] = constant
        slot.node.inputs[1] = constant
        k, n = ternary.codes.shape
        granularity = "per-channel" if ternary.per_channel else "per-tensor"
        ctx.record(node=slot.node.name, op_type=slot.node.op, action="folded", pass_name=pass_name,
                   precision="ternary",
                   reason=f"{chain} -> exact ternary [{k}x{n}], {granularity} scale")
        folded += 1
    return folded


def _skip(ctx: PassContext, slot: WeightSlot, pass_name: str, reason: str) -> None:
    ctx.record(node=slot.node.name, op_type=slot.node.op, action="skipped", pass_name=pass_name,
               reason=reason)
