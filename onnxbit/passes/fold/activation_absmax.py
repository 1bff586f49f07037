"""Fold BitNet's per-token int8 activation quantizer into ``act_quant=1``.

The chain (transformers' ActQuant / BitLinear.activation_quant) is

    s = 127 / clamp(max(|x|, axis=-1, keepdims), min=1e-5)   (torch: reciprocal, then * 127)
    q = clip(round(x * s), -128, 127)
    dequantized form:  MatMul(q / s, W)
    integer form:      MatMul(q, W) / (s * weight_scale)      (offline BitLinear)

TernaryMatMul with act_quant=1 computes exactly this quantization per row of
its input, so a MatMul whose weight is proven ternary can read x directly.
For the integer form the division after the MatMul goes too, and 1/weight_scale
moves into the recorded scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proof_of, ternary_constant

from ..base import Pass, PassContext, PassResult
from .constant_weight import weight_slots
from .matching import (clip_bounds, constant_value, describe, equals_float32, equivalent,
                       has_unknown_axes, is_float32, producer, reduce_axes,
                       scalar_value, skip_transparent, transparent_consumers)

ACT_INT8_PIXEL = 3  # TernaryConv: one int8 scale per input pixel

# Casts that keep every value of round(...) clipped to [-128, 127].
_EXACT_CAST_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
                     onnx.TensorProto.INT64, onnx.TensorProto.FLOAT}


@dataclass
class ActivationChain:
    """What the pattern found; the check decides whether it is BitNet's."""

    output: gs.Tensor  # the tensor the MatMul reads
    x: gs.Tensor  # the activation being quantized (the input of Abs)
    scaled: gs.Tensor  # the Mul's operand that multiplies s (must equal x)
    scale: gs.Tensor  # s
    integer: bool  # True: the MatMul reads q itself; the division by s comes after it
    numerator: float | None
    eps: float | None
    eps_upper: float | None
    clip_low: float | None
    clip_high: float | None
    reduce: gs.Node
    divisor: gs.Tensor | None = None  # dequantized form: what q is divided by (must equal s)


def _produced_by(tensor: gs.Tensor | None, *ops: str) -> gs.Node | None:
    if tensor is None:
        return None
    node = producer(skip_transparent(tensor))
    return node if node is not None and node.op in ops else None


def _division(tensor: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor] | None:
    """(numerator, divisor) when ``tensor`` is a / b, a * Reciprocal(b) or a * (1 / b)."""
    node = _produced_by(tensor, "Div", "Mul")
    if node is None:
        return None
    if node.op == "Div":
        return node.inputs[0], node.inputs[1]
    for mine, other in ((0, 1), (1, 0)):
        inverse = _produced_by(node.inputs[other], "Reciprocal", "Div")
        if inverse is None:
            continue
        if inverse.op == "Reciprocal":
            return node.inputs[mine], inverse.inputs[0]
        if equals_float32(scalar_value(inverse.inputs[0]), 1.0):
            return node.inputs[mine], inverse.inputs[1]
    return None


def _range_clip(tensor: gs.Tensor) -> tuple[gs.Tensor, float | None, float | None] | None:
    """(inner, low, high) for Clip(inner, low, high) or a Max/Min pair."""
    node = _produced_by(tensor, "Clip", "Max", "Min")
    if node is None:
        return None
    if node.op == "Clip":
        low, high = clip_bounds(node)
        return node.inputs[0], low, high
    if len(node.inputs) != 2:
        return None
    outer_bound, inner_tensor = _constant_operand(node)
    if inner_tensor is None:
        return None
    inner_node = _produced_by(inner_tensor, "Min" if node.op == "Max" else "Max")
    if inner_node is None or len(inner_node.inputs) != 2:
        return None
    inner_bound, value = _constant_operand(inner_node)
    if value is None:
        return None
    low, high = (outer_bound, inner_bound) if node.op == "Max" else (inner_bound, outer_bound)
    return value, low, high


def _constant_operand(node: gs.Node) -> tuple[float | None, gs.Tensor | None]:
    """(the scalar constant, the other operand) of a binary node."""
    for const, other in ((0, 1), (1, 0)):
        value = scalar_value(node.inputs[const])
        if value is not None:
            return value, node.inputs[other]
    return None, None


def _lower_clamp(tensor: gs.Tensor) -> tuple[gs.Tensor, float | None, float | None] | None:
    """(inner, min, max) for Clip(inner, min[, max]) or Max(inner, min)."""
    node = _produced_by(tensor, "Clip", "Max")
    if node is None:
        return None
    if node.op == "Clip":
        low, high = clip_bounds(node)
        return node.inputs[0], low, high
    value, inner = _constant_operand(node) if len(node.inputs) == 2 else (None, None)
    return (inner, value, None) if inner is not None else None


def _skip_integer_casts(tensor: gs.Tensor) -> gs.Tensor:
    """Walk back through Identity and Casts to float or signed integers: after
    round() and clip(-128, 127) those casts keep every value."""
    while True:
        node = producer(tensor)
        if node is None or not (node.op == "Identity"
                                or (node.op == "Cast" and node.attrs.get("to") in _EXACT_CAST_TYPES)):
            return tensor
        tensor = node.inputs[0]


def _scale_parts(tensor: gs.Tensor):
    """(numerator, eps, eps_upper, ReduceMax node, Abs input) when ``tensor``
    is numerator / clamp(ReduceMax(Abs(y)), eps), else None."""
    division = _division(tensor)
    if division is None:
        return None
    numerator, clamped = division
    clamp = _lower_clamp(clamped)
    if clamp is None:
        return None
    reduced, eps, eps_upper = clamp
    reduce = _produced_by(reduced, "ReduceMax")
    if reduce is None:
        return None
    absolute = _produced_by(reduce.inputs[0], "Abs")
    if absolute is None:
        return None
    return scalar_value(numerator), eps, eps_upper, reduce, absolute.inputs[0]


def match_activation_chain(tensor: gs.Tensor) -> ActivationChain | None:
    """The pattern: find the absmax activation quantizer producing ``tensor``
    (dequantized q / s, or the integer q itself). None when there is none."""
    division = _division(tensor)
    if division is not None:
        chain = _match_quantized(division[0], tensor, integer=False)
        if chain is not None:
            chain.divisor = division[1]
            return chain
    return _match_quantized(tensor, tensor, integer=True)


def _match_quantized(q: gs.Tensor, output: gs.Tensor, integer: bool) -> ActivationChain | None:
    clipped = _range_clip(_skip_integer_casts(q))
    if clipped is None:
        return None
    rounded, low, high = clipped
    round_node = _produced_by(rounded, "Round")
    if round_node is None:
        return None
    product = _produced_by(round_node.inputs[0], "Mul")
    if product is None or len(product.inputs) != 2:
        return None
    for scale_index, scaled_index in ((1, 0), (0, 1)):
        parts = _scale_parts(product.inputs[scale_index])
        if parts is None:
            continue
        numerator, eps, eps_upper, reduce, x = parts
        return ActivationChain(output=output, x=x, scaled=product.inputs[scaled_index],
                               scale=product.inputs[scale_index], integer=integer,
                               numerator=numerator, eps=eps, eps_upper=eps_upper,
                               clip_low=low, clip_high=high, reduce=reduce)
    return None


def check_activation_chain(chain: ActivationChain, per_pixel: bool = False, rank: int | None = None) -> str | None:
    """The check: None when the chain is exactly what act_quant=1 computes
    (per_pixel: what TernaryConv's act_quant=3 computes, the absmax over the
    channel axis of an NCHW input), else why not."""
    if not equals_float32(chain.numerator, 127.0):
        return f"scale numerator is {describe(chain.numerator)}, act_quant=1 uses 127"
    if not equals_float32(chain.eps, 1e-5):
        return f"max|x| is clamped at {describe(chain.eps)}, act_quant=1 clamps at 1e-5"
    if chain.eps_upper is not None and np.isfinite(chain.eps_upper):
        return f"max|x| is also clamped from above at {describe(chain.eps_upper)}"
    if not (equals_float32(chain.clip_low, -128.0) and equals_float32(chain.clip_high, 127.0)):
        return (f"q is clipped to [{describe(chain.clip_low)}, {describe(chain.clip_high)}], "
                "act_quant=1 clips to [-128, 127]")
    axes_problem = (_pixel_axes_problem(chain.reduce, chain.x, rank) if per_pixel
                    else _axes_problem(chain.reduce, chain.x))
    if axes_problem:
        return axes_problem
    if not equivalent(chain.scaled, chain.x):
        return "the tensor scaled by s is not the tensor whose max|x| defines s"
    if chain.divisor is not None and not equivalent(chain.divisor, chain.scale):
        return "q is divided by a different tensor than the scale it was quantized with"
    if is_float32(chain.x) is False:
        return f"the quantized activation {chain.x.name!r} is {chain.x.dtype}, not float32"
    return None


def _axes_problem(reduce: gs.Node, x: gs.Tensor) -> str | None:
    if not int(reduce.attrs.get("keepdims", 1)):
        return "ReduceMax drops the reduced axis (keepdims=0); per-token scales need keepdims=1"
    if has_unknown_axes(reduce):
        return "ReduceMax axes are computed at run time; cannot prove a per-token (last axis) reduction"
    axes = reduce_axes(reduce)
    if axes is None:
        return "ReduceMax reduces over all axes (per-tensor), act_quant=1 is per token (axis -1)"
    rank = len(x.shape) if x.shape is not None else None
    last = {-1} | ({rank - 1} if rank else set())
    if len(axes) != 1 or axes[0] not in last:
        shown = ", ".join(str(a) for a in axes)
        where = f" of a rank-{rank} tensor" if rank else ""
        return f"ReduceMax over axis {shown}{where}; act_quant=1 reduces over the last axis (-1)"
    return None


def _pixel_axes_problem(reduce: gs.Node, x: gs.Tensor, rank: int | None = None) -> str | None:
    """None when ReduceMax reduces exactly the channel axis (1) of an NCHW / NCW
    input with keepdims: one scale per pixel, TernaryConv's act_quant=3. rank:
    the Conv's (its weight's), when x's own shape is unknown."""
    if not int(reduce.attrs.get("keepdims", 1)):
        return "ReduceMax drops the reduced axis (keepdims=0); per-pixel scales need keepdims=1"
    if has_unknown_axes(reduce):
        return "ReduceMax axes are computed at run time; cannot prove a per-pixel (channel axis) reduction"
    axes = reduce_axes(reduce)
    rank = len(x.shape) if x.shape is not None else rank
    if rank not in (3, 4):
        return f"the Conv input has rank {rank}; TernaryConv's act_quant=3 needs a known rank 3 or 4"
    if axes is None or len(axes) != 1 or axes[0] not in (1, 1 - rank):
        shown = "all axes" if axes is None else "axis " + ", ".join(str(a) for a in axes)
        return f"ReduceMax over {shown} of a rank-{rank} Conv input; act_quant=3 reduces over the channels (axis 1)"
    return None


@dataclass
class _PostDivision:
    last: gs.Node  # the node whose output becomes the MatMul's
    weight_scale: np.ndarray


def match_post_division(graph: gs.Graph, matmul: gs.Node, scale: gs.Tensor) -> _PostDivision | str:
    """The integer form's y / (s * weight_scale) after the MatMul, in any of
    the spellings y / (a * b), y / a / b, y * Reciprocal(...). Returns the
    match, or why it does not apply."""
    current = matmul.outputs[0]
    if current in graph.outputs:
        return "the MatMul output is a graph output, so the division after it cannot move into the op"
    divisors: list[gs.Tensor] = []
    last: gs.Node | None = None
    for _ in range(2):
        users = transparent_consumers(current)
        if len(users) != 1:
            break
        node, read = users[0]
        divisor = _divisor_of(node, read)
        if divisor is None:
            break
        if last is not None and current in graph.outputs:
            return "an intermediate result of the division after the MatMul is a graph output"
        divisors.append(divisor)
        last, current = node, node.outputs[0]
        if len(divisors) == 1:
            product = _produced_by(divisor, "Mul")
            if product is not None and any(equivalent(t, scale) for t in product.inputs):
                divisors = list(product.inputs)
                break
    if last is None:
        return "the MatMul output is not divided by the activation scale"
    scale_terms = [t for t in divisors if equivalent(t, scale)]
    others = [t for t in divisors if not equivalent(t, scale)]
    if len(scale_terms) != 1 or len(others) > 1:
        return "the division after the MatMul is not by (activation scale * weight scale)"
    if not others:  # y / s alone: no weight scale
        return _PostDivision(last, np.ones(1, np.float32))
    weight_scale = constant_value(others[0])
    if weight_scale is None:
        return "the weight scale dividing the MatMul output is not a constant"
    if weight_scale.size > 1 and weight_scale.shape[-1] != weight_scale.size:
        return f"the weight scale has shape {list(weight_scale.shape)}, not a per-output-column vector"
    weight_scale = np.asarray(weight_scale, np.float32).reshape(-1)
    if not (np.isfinite(weight_scale).all() and (weight_scale > 0).all()):
        return "the weight scale dividing the MatMul output is not finite and positive"
    return _PostDivision(last, weight_scale)


def _divisor_of(node: gs.Node, numerator: gs.Tensor) -> gs.Tensor | None:
    out = node.outputs[0] if node.outputs else None
    if out is None or node.op not in ("Div", "Mul"):
        return None
    division = _division(out)
    if division is None or skip_transparent(division[0]) is not skip_transparent(numerator):
        return None
    return division[1]


class ActivationAbsmaxFold(Pass):
    name = "fold-activation-absmax"
    requires = frozenset({"weight-proofs"})
    ensures = frozenset({"activations-folded"})
    must_precede = frozenset({"weight-sites"})
    contract = (
        "Runs after the weight folding passes. Matches BitNet's per-token absmax int8 activation "
        "quantizer in front of MatMul/Gemm nodes (s = 127/clamp(max|x| over the last axis, 1e-5), "
        "q = clip(round(x*s), -128, 127), then q/s; or the integer q with the MatMul output "
        "divided by s*weight_scale, as offline BitLinear does), also when one chain feeds several "
        "MatMuls. Each consumer whose weight is recorded ternary reads x directly and gets "
        "act_quant=1 (and, for the integer form, the division is removed and 1/weight_scale "
        "joins its scales). Consumers that are not such MatMuls keep the chain. Skips, with the "
        "reason, chains whose constants or axis differ from BitNet's. On target onnxbit, the same "
        "chain reducing over the channels (axis 1) in front of a 1-D/2-D Conv with a "
        "ternary weight (a QAT CNN's per-pixel fake-quant, dequantized q/s form) folds into "
        "TernaryConv act_quant=3 the same way."
    )

    def run(self, ctx: PassContext) -> PassResult:
        folded = 0
        for slot in weight_slots(ctx.graph):
            node = slot.node
            chain = match_activation_chain(node.inputs[0])
            if chain is None:
                continue
            if node.op == "Conv":
                reason = self._per_pixel_refusal(ctx, node, chain)
                act_quant = ACT_INT8_PIXEL
                done = "per-pixel absmax int8 activation chain (q/s, channel axis) -> act_quant=3"
            else:
                reason = self._token_refusal(ctx, node, chain)
                act_quant = 1
                done = self._token_fold_reason(chain)
            if reason is not None:
                ctx.record(node=node.name, op_type=node.op, action="skipped", pass_name=self.name,
                           reason=f"activation quantizer kept: {reason}")
                continue
            node.inputs[0] = chain.x
            _give_act_quant(ctx, node, act_quant)
            ctx.record(node=node.name, op_type=node.op, action="folded", pass_name=self.name,
                       precision="ternary", reason=done)
            folded += 1
        ctx.graph.cleanup()
        return PassResult(folded > 0, f"{folded} layer(s) given act_quant=1 (MatMul/Gemm) or 3 (Conv)")

    def _token_refusal(self, ctx: PassContext, node: gs.Node, chain: ActivationChain) -> str | None:
        """Why a MatMul/Gemm chain stays, else None (an integer q's post-division is folded here)."""
        reason = self._refusal(ctx, node, chain)
        if reason is None and chain.integer:
            post = match_post_division(ctx.graph, node, chain.scale)
            reason = post if isinstance(post, str) else self._fold_weight_scale(ctx, node, post)
        return reason

    @staticmethod
    def _token_fold_reason(chain: ActivationChain) -> str:
        form = "integer q with post-division" if chain.integer else "q/s"
        reason = f"per-token absmax int8 activation chain ({form}) -> act_quant=1"
        if _produced_by(chain.scale, "Mul") is None:
            # The op rounds s as torch does, 127 * (1/m); a graph dividing
            # 127 / m directly can differ by 1 ulp in s.
            reason += "; the graph computes s as 127 / max|x| in one rounding, the op as 127 * (1/max|x|)"
        return reason

    @staticmethod
    def _refusal(ctx: PassContext, node: gs.Node, chain: ActivationChain) -> str | None:
        record = proof_of(node.inputs[1])
        if record is None:
            return "the MatMul weight is not proven ternary"
        if record.act_quant:
            return "the MatMul already has act_quant=1"
        if node.op == "Gemm" and (node.attrs.get("transA", 0) or float(node.attrs.get("alpha", 1.0)) != 1.0):
            return "Gemm with transA or alpha is not a plain A @ W"
        return check_activation_chain(chain)

    @staticmethod
    def _per_pixel_refusal(ctx: PassContext, node: gs.Node, chain: ActivationChain) -> str | None:
        record = proof_of(node.inputs[1])
        if record is None:
            return "the Conv weight is not proven ternary"
        if record.act_quant:
            return f"the Conv already has act_quant={record.act_quant}"
        target = getattr(ctx.target, "name", ctx.target)
        if target != "onnxbit":
            return f"target {target!r} has no per-pixel int8 Conv (TernaryConv act_quant=3, target onnxbit)"
        if chain.integer:
            return "the Conv reads the integer q: a per-pixel scale cannot be divided out after a Conv"
        weight_shape = node.inputs[1].shape
        if weight_shape is None or len(weight_shape) not in (3, 4):
            return "TernaryConv's act_quant=3 computes 1-D and 2-D convs only"
        return check_activation_chain(chain, per_pixel=True, rank=len(weight_shape))

    @staticmethod
    def _fold_weight_scale(ctx: PassContext, node: gs.Node, post: _PostDivision) -> str | None:
        record = proof_of(node.inputs[1])
        n = record.shape[1]
        if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2].name:
            return "the Gemm adds C before the division, so the division cannot move into the op"
        if post.weight_scale.size not in (1, n):
            return f"the weight scale has {post.weight_scale.size} values, expected 1 or {n}"
        # y / (s * w_s) == (q @ codes) * (v / w_s) / s; v / w_s is rounded once, in float32.
        scales = (record.scales.astype(np.float32) / post.weight_scale).astype(np.float32)
        if scales.size > 1 and np.all(scales == scales[0]):
            scales = scales[:1]
        stored_transposed = node.op == "Gemm" and bool(node.attrs.get("transB", 0))
        rescaled = record.with_changes(scales=scales)
        node.inputs[1] = ternary_constant(f"{node.name}.ternary_weight_rescaled", rescaled, stored_transposed)
        output = post.last.outputs[0]
        post.last.outputs.clear()
        node.outputs[0] = output
        return None


def _give_act_quant(ctx: PassContext, node: gs.Node, act_quant: int = 1) -> None:
    """Mark the node's ternary weight act_quant (1, or 3 for a Conv). The proof
    belongs to the weight constant: when other nodes read the same constant
    (and keep their activation chains), this node gets a constant of its own."""
    weight = node.inputs[1]
    proof = proof_of(weight)
    if all(user is node for user in weight.outputs):
        proof.act_quant = act_quant
        return
    stored_transposed = node.op == "Gemm" and bool(node.attrs.get("transB", 0))
    own = proof.with_changes(act_quant=act_quant)
    node.inputs[1] = ternary_constant(ctx.fresh_name(f"{node.name}.ternary_weight"), own, stored_transposed)
