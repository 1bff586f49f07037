"""Small graph queries the QAT folding patterns are written with.

Exporters spell the same computation differently (Constant nodes or
initializers, an extra Identity or float-to-float Cast, attributes in old
opsets and inputs in new ones), so the patterns ask these helpers what a tensor
*is* rather than which node produced it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnxbit.graph.queries import NotConstant, consumers, producer, resolve_constant  # noqa: F401  (re-exported)

FLOAT32 = onnx.TensorProto.FLOAT


def is_float32(tensor: gs.Tensor) -> bool | None:
    """True/False when the dtype is known, None when the graph does not say."""
    if isinstance(tensor, gs.Constant):
        return np.dtype(tensor.dtype) == np.float32
    if tensor.dtype is None:
        return None
    if isinstance(tensor.dtype, int):  # an onnx.TensorProto data type number
        return tensor.dtype == FLOAT32
    return np.dtype(tensor.dtype) == np.float32


def _is_float_identity_cast(node: gs.Node) -> bool:
    """Cast to float32 of a tensor already float32 (or of unknown type, which
    exporters only leave on float32 activations): value-preserving."""
    if node.op != "Cast" or node.attrs.get("to") != FLOAT32:
        return False
    return is_float32(node.inputs[0]) is not False


def skip_transparent(tensor: gs.Tensor) -> gs.Tensor:
    """Walk back through Identity and float32-to-float32 Cast nodes."""
    while True:
        node = producer(tensor)
        if node is None or not (node.op == "Identity" or _is_float_identity_cast(node)):
            return tensor
        tensor = node.inputs[0]


def transparent_consumers(tensor: gs.Tensor) -> list[tuple[gs.Node, gs.Tensor]]:
    """Consumers of ``tensor`` seen through Identity / float Cast nodes, as
    (consumer, the tensor it actually reads) pairs."""
    found: list[tuple[gs.Node, gs.Tensor]] = []
    for node in consumers(tensor):
        if node.op == "Identity" or _is_float_identity_cast(node):
            found.extend(transparent_consumers(node.outputs[0]))
        else:
            found.append((node, tensor))
    return found


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """Value of a tensor that is an initializer or a Constant node's output,
    seen through Identity and Cast (of any type: scalars of a chain are
    often integers cast to float); None when it is computed at run time."""
    if tensor is None:
        return None
    try:
        return resolve_constant(tensor, ops=("Identity", "Cast"), float_casts_only=False)[0]
    except NotConstant:
        return None


def scalar_value(tensor: gs.Tensor | None) -> float | None:
    """A one-element constant as a Python float, else None."""
    value = constant_value(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(-1)[0])


def equals_float32(value: float | None, expected: float) -> bool:
    """Exact equality after rounding both to float32 (how the graph computes)."""
    return value is not None and np.float32(value) == np.float32(expected)


def describe(value: float | None) -> str:
    """A constant as the graph holds it (shortest float32 spelling)."""
    return "absent" if value is None else str(np.float32(value))


def input_or_none(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of a node, None when missing or given as the empty name."""
    if index >= len(node.inputs):
        return None
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Variable) and tensor.name == "" and not tensor.inputs:
        return None
    return tensor


def clip_bounds(node: gs.Node) -> tuple[float | None, float | None]:
    """(min, max) of a Clip node, from inputs (opset >= 11) or attributes."""
    if "min" in node.attrs or "max" in node.attrs:
        return node.attrs.get("min"), node.attrs.get("max")
    return scalar_value(input_or_none(node, 1)), scalar_value(input_or_none(node, 2))


def reduce_axes(node: gs.Node) -> list[int] | None:
    """Axes of a Reduce* node (attribute, or input 1 from opset 18), None when
    absent (meaning all axes) or not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    axes = constant_value(input_or_none(node, 1))
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def has_unknown_axes(node: gs.Node) -> bool:
    """True when a Reduce* node takes its axes from a tensor computed at run time."""
    axes_input = input_or_none(node, 1)
    return "axes" not in node.attrs and axes_input is not None and constant_value(axes_input) is None


def equivalent(a: gs.Tensor, b: gs.Tensor, depth: int = 8) -> bool:
    """Do two tensors provably hold the same value? True when they are the same
    tensor after skipping Identity/float Cast, equal constants, or outputs of
    the same op with equal attributes on equivalent inputs (exporters sometimes
    compute one expression twice instead of sharing it)."""
    a, b = skip_transparent(a), skip_transparent(b)
    if a is b:
        return True
    va, vb = constant_value(a), constant_value(b)
    if va is not None or vb is not None:
        return va is not None and vb is not None and va.shape == vb.shape and bool(np.array_equal(va, vb))
    pa, pb = producer(a), producer(b)
    if depth == 0 or pa is None or pb is None or pa.op != pb.op or pa.domain != pb.domain:
        return False
    if len(pa.inputs) != len(pb.inputs) or pa.outputs.index(a) != pb.outputs.index(b):
        return False
    if not _same_attrs(pa, pb):
        return False
    return all(equivalent(x, y, depth - 1) for x, y in zip(pa.inputs, pb.inputs))


def _same_attrs(a: gs.Node, b: gs.Node) -> bool:
    if a.attrs.keys() != b.attrs.keys():
        return False
    for key, va in a.attrs.items():
        vb = b.attrs[key]
        if isinstance(va, gs.Graph) or isinstance(vb, gs.Graph):
            return False  # subgraphs are not compared; assume different
        if isinstance(va, gs.Constant) or isinstance(vb, gs.Constant):
            if not (isinstance(va, gs.Constant) and isinstance(vb, gs.Constant)
                    and va.values.shape == vb.values.shape and np.array_equal(va.values, vb.values)):
                return False
        elif np.asarray(va).tolist() != np.asarray(vb).tolist():
            return False
    return True


def ensure_unique_node_names(graph: gs.Graph) -> None:
    """Give every node a unique, non-empty name: ternary weights are recorded
    by node name, and exporters leave names empty or repeated."""
    seen: set[str] = set()
    for index, node in enumerate(graph.nodes):
        name = node.name
        if not name or name in seen:
            base = name or node.op
            name = f"{base}_{index}"
            while name in seen:
                name += "_"
            node.name = name
        seen.add(name)
