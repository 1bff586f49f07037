"""Model inputs for `onnxbit verify` and `onnxbit demo`: read them from an .npz
and check them against the model, or synthesize plausible ones.

Synthesis (:func:`synthesize_working_feed`) when no inputs are given:

* A dimension is *unknown* when it is symbolic (``dim_param``), absent, or has
  a ``dim_value`` of 0 or less (exporters write -1 for "dynamic"). Every
  unknown dimension with the same name gets the same size, across inputs.
  (onnxruntime holds a declared 0 to 0, so for those, size 0 is tried last.)
* Sizes come first from the graph: the model is run through onnx shape
  inference with each unknown dimension as a symbol, and the consumers of the
  inputs pin symbols to fixed sizes (the K of a MatMul/Gemm with a constant
  weight, the channels of a Conv, the broadcast partner of an elementwise op,
  the normalized axes of a LayerNormalization, the non-axis dims of a Concat)
  or tie two symbols together.
* The rest get a size by role: the dimension's name (batch; seq / sequence /
  len / token / time / step; past / cache; height / width; channel) or, for
  unnamed ones, its position (axis 0 is the batch, the other axes of an
  integer input are the sequence, axes 2+ of a 4-d float input are spatial).
  Names like ``past_sequence_length + 1`` are evaluated.
* Values: inputs named *mask* are ones, *position* ids an arange along the
  last axis, *token_type* / *segment* ids zeros, booleans true, other integers
  uniform in [0, rows) when they index (possibly through Cast / Reshape /
  Unsqueeze / ...) a Gather on a constant table of that many rows, else in
  [0, vocab); floats standard normal. A position-id input that indexes a
  table of R rows caps its sequence length at R.
* Image sizes the graph does not pin are a guess (32x32 first): the notes
  say so, since latency and agreement on real image sizes can differ.
* The feed is run through the original model; when that fails, a few
  alternative size profiles (:data:`PROFILES`) are tried, and when every one
  fails :class:`FeedError` names the input that could not be synthesized and
  asks for ``--inputs FILE.npz``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx

from onnxbit.errors import OnnxbitError

_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT16: np.int16, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT64: np.uint64, onnx.TensorProto.UINT32: np.uint32,
    onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}

# Size of each role per attempt; the first profile is the default feed, the
# others are tried in order when the original model rejects it.
PROFILES: list[dict[str, int]] = [
    {"batch": 1, "seq": 16, "past": 4, "spatial": 32, "channel": 3, "other": 16},
    {"batch": 1, "seq": 8, "past": 0, "spatial": 64, "channel": 1, "other": 1},
    {"batch": 1, "seq": 1, "past": 0, "spatial": 224, "channel": 3, "other": 8},
    {"batch": 2, "seq": 32, "past": 8, "spatial": 28, "channel": 1, "other": 32},
    {"batch": 1, "seq": 128, "past": 16, "spatial": 224, "channel": 3, "other": 64},
    {"batch": 1, "seq": 64, "past": 0, "spatial": 256, "channel": 4, "other": 128},
]

# Ops that hand their (integer) input values on unchanged, possibly reshaped:
# an id input reaches its embedding Gather through them.
_VALUE_PRESERVING = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice",
                     "Transpose", "Concat", "Tile", "Split", "CastLike"}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Equal", "Less", "LessOrEqual", "Greater",
                "GreaterOrEqual", "And", "Or", "Xor", "Max", "Min", "Sum", "Mean", "Mod", "BitShift",
                "PRelu"}


class FeedError(OnnxbitError, ValueError):
    """Inputs could not be read, do not fit the model, or could not be synthesized."""


# -- input declarations -------------------------------------------------------

@dataclass
class InputSpec:
    name: str
    elem_type: int
    dims: list[int | str | None] | None  # int > 0 fixed, str symbolic, None unknown; None = no shape
    zero_axes: tuple[int, ...] = ()      # axes declared with dim_value 0

    @property
    def dtype(self) -> np.dtype | None:
        t = _DTYPES.get(self.elem_type)
        return None if t is None else np.dtype(t)

    @property
    def type_name(self) -> str:
        return onnx.TensorProto.DataType.Name(self.elem_type).lower()

    def shape_text(self) -> str:
        if self.dims is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims, zero_axes = None, []
        if tensor_type.HasField("shape"):
            dims = []
            for d in tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_value") and d.dim_value == 0:
                    # Unknown like -1, but onnxruntime checks it: sizes of 0 are tried too.
                    zero_axes.append(len(dims))
                    dims.append(None)
                elif d.HasField("dim_param") and d.dim_param.strip():
                    dims.append(d.dim_param.strip())
                else:  # absent, 0 or negative: unknown
                    dims.append(None)
        specs.append(InputSpec(value.name, tensor_type.elem_type, dims, tuple(zero_axes)))
    return specs


# -- reading and checking feeds ----------------------------------------------

def load_feeds(path: str | os.PathLike, input_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Feeds from an .npz: keys equal to the input names (one feed), or
    NAME_0, NAME_1, ... (one feed per index)."""
    try:
        data = np.load(path, allow_pickle=False)
        files = list(data.files)
    except Exception as exc:  # not a zip, truncated, pickled objects, ...
        raise FeedError(f"cannot read inputs {path}: {_one_line(exc)} (expected an .npz written by numpy.savez)") \
            from None
    names = list(input_names)
    try:
        if all(name in files for name in names):
            return [{name: data[name] for name in names}]
        indices = sorted({int(m.group(1)) for key in files for m in [re.search(r"_(\d+)$", key)] if m})
        feeds = [{name: data[f"{name}_{i}"] for name in names if f"{name}_{i}" in files} for i in indices]
    except Exception as exc:
        raise FeedError(f"cannot read inputs {path}: {_one_line(exc)}") from None
    feeds = [feed for feed in feeds if len(feed) == len(names)]
    if not feeds:
        missing = [n for n in names if n not in files]
        raise FeedError(f"{path} holds {sorted(files)}; expected the model's inputs {names} "
                        f"as keys (missing {missing}), or NAME_0, NAME_1, ... for several feeds")
    return feeds


def check_feeds(feeds: Sequence[Mapping[str, np.ndarray]], specs: Sequence[InputSpec], source: str) -> None:
    """FeedError unless every feed has every input with the declared element
    type, rank and fixed dimensions."""
    for index, feed in enumerate(feeds):
        where = source if len(feeds) == 1 else f"{source} (input batch {index})"
        missing = [s.name for s in specs if s.name not in feed]
        if missing:
            raise FeedError(f"{where} lacks the model input(s) {missing}")
        for spec in specs:
            array = np.asarray(feed[spec.name])
            want = spec.dtype
            if want is not None and array.dtype != want:
                raise FeedError(f"{where}: input '{spec.name}' is {array.dtype}, the model wants {want} "
                                f"({spec.type_name})")
            if spec.dims is None:
                continue
            bad_rank = array.ndim != len(spec.dims)
            if bad_rank or any(isinstance(d, int) and d != got for d, got in zip(spec.dims, array.shape)):
                raise FeedError(f"{where}: input '{spec.name}' has shape {list(array.shape)}, the model wants "
                                f"{spec.shape_text()}")


# -- synthesis ---------------------------------------------------------------

@dataclass
class _Slot:
    """One unknown dimension of one input."""
    key: str           # symbol shared by every slot of the same name
    role: str
    named: bool
    declared_zero: bool = False  # dim_value 0: unknown, but onnxruntime insists on 0


@dataclass
class FeedPlan:
    """What the graph says about the inputs: symbols, pinned sizes, bounds."""
    specs: list[InputSpec]
    slots: dict[tuple[str, int], _Slot] = field(default_factory=dict)
    pinned: dict[str, int] = field(default_factory=dict)          # symbol -> size the graph requires
    caps: dict[str, int] = field(default_factory=dict)            # symbol -> largest valid size
    index_bound: dict[str, int] = field(default_factory=dict)     # input -> rows of the table it indexes
    ties: dict[str, str] = field(default_factory=dict)            # symbol -> representative symbol

    def _root(self, key: str) -> str:
        while key in self.ties:
            key = self.ties[key]
        return key

    def sizes(self, profile: Mapping[str, int]) -> dict[str, int]:
        """Size of every symbol under one profile."""
        sizes: dict[str, int] = {}
        expressions = []
        for slot in self.slots.values():
            root = self._root(slot.key)
            if root in sizes:
                continue
            if root in self.pinned:
                sizes[root] = self.pinned[root]
            elif _is_expression(root):
                expressions.append(root)
                continue
            else:
                sizes[root] = profile.get(slot.role, profile["other"])
            if root in self.caps:
                sizes[root] = min(sizes[root], self.caps[root])
        if profile.get("declared_zero") == 0:
            for slot in self.slots.values():
                if slot.declared_zero:
                    sizes[self._root(slot.key)] = 0
        for expr in expressions:
            sizes[expr] = max(_evaluate(expr, lambda token: sizes.get(self._root(token)), profile), 0)
        return sizes

    def shape(self, spec: InputSpec, sizes: Mapping[str, int]) -> list[int]:
        shape = []
        for axis, d in enumerate(spec.dims or []):
            if isinstance(d, int):
                shape.append(d)
            else:
                shape.append(sizes[self._root(self.slots[(spec.name, axis)].key)])
        return shape

    def feed(self, profile: Mapping[str, int], seed: int = 0, vocab: int = 100) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        sizes = self.sizes(profile)
        return {spec.name: _values(spec, self.shape(spec, sizes), rng, self.index_bound.get(spec.name, vocab))
                for spec in self.specs}

    def guessed_spatial(self) -> list[str]:
        """Inputs with a spatial dimension (height, width) the graph did not pin."""
        return list(dict.fromkeys(name for (name, _), slot in self.slots.items()
                                  if slot.role == "spatial" and self._root(slot.key) not in self.pinned))

    def has_spatial(self) -> bool:
        """Whether some input is an image: a spatial (height, width) dimension left open, or a 4-d float input
        whose sizes are all fixed but the batch."""
        return any(slot.role == "spatial" for slot in self.slots.values()) or any(
            spec.dims is not None and len(spec.dims) == 4 and spec.dtype is not None and spec.dtype.kind == "f"
            for spec in self.specs)

    def guessed_inputs(self) -> list[str]:
        """Inputs with a dimension the graph did not pin, unnamed ones first."""
        unnamed, named = [], []
        for (name, _), slot in self.slots.items():
            if self._root(slot.key) in self.pinned:
                continue
            target = named if slot.named else unnamed
            if name not in target:
                target.append(name)
        return unnamed + [n for n in named if n not in unnamed]


def plan_feeds(model: onnx.ModelProto) -> FeedPlan:
    """Analyse the graph's inputs (the model needs no external data loaded)."""
    specs = input_specs(model)
    plan = FeedPlan(specs=specs)
    for spec in specs:
        if spec.dtype is None:
            raise FeedError(f"cannot synthesize input '{spec.name}' of ONNX element type "
                            f"{onnx.TensorProto.DataType.Name(spec.elem_type)}; pass --inputs FILE.npz")
        if spec.dims is None:
            raise FeedError(f"cannot synthesize input '{spec.name}': the model declares no shape for it; "
                            "pass --inputs FILE.npz")
        is_int = np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_
        for axis, d in enumerate(spec.dims):
            if isinstance(d, int):
                continue
            key = d if d is not None else f"{spec.name}:{axis}"
            role = _role(d, axis, len(spec.dims), is_int)
            plan.slots[(spec.name, axis)] = _Slot(key, role, named=d is not None,
                                                  declared_zero=axis in spec.zero_axes)
    # Both are best-effort readings of the graph: a graph they do not
    # understand leaves the sizes to the profiles, never an exception.
    for analysis in (_constraints_from_shape_inference, _index_bounds):
        try:
            analysis(model, plan)
        except Exception:
            pass
    return plan


def synthesize_feeds(model: onnx.ModelProto, batch: int = 1, seq: int = 16, seed: int = 0,
                     vocab: int = 100) -> dict[str, np.ndarray]:
    """One plausible feed from the graph (not run; see the module docstring)."""
    profile = dict(PROFILES[0], batch=batch, seq=seq)
    return plan_feeds(model).feed(profile, seed, vocab)


def synthesize_working_feed(model: onnx.ModelProto, run: Callable[[dict[str, np.ndarray]], object],
                            seed: int = 0, vocab: int = 100) -> tuple[dict[str, np.ndarray], list[str]]:
    """A synthesized feed the model accepts: ``run(feed)`` must not raise.

    Returns the feed and notes on what was tried. Raises FeedError naming the
    input that could not be synthesized when every profile fails.
    """
    plan = plan_feeds(model)
    tried: list[str] = []
    seen: set[tuple] = set()
    last_error = ""
    attempts = list(PROFILES)
    if any(slot.declared_zero for slot in plan.slots.values()):
        attempts += [dict(profile, declared_zero=0) for profile in PROFILES[:2]]
    for number, profile in enumerate(attempts):
        feed = plan.feed(profile, seed, vocab)
        signature = tuple((name, a.shape) for name, a in feed.items())
        if signature in seen:
            continue
        seen.add(signature)
        shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in feed.items())
        try:
            run(feed)
        except Exception as exc:  # onnxruntime's errors have no common base class
            last_error = _one_line(exc)
            tried.append(shapes)
            continue
        notes = [f"synthesized inputs: {shapes}"]
        if number:
            notes.append(f"(the original model rejected {len(tried)} other size(s) first)")
        guessed = plan.guessed_spatial()
        if guessed:
            notes.append(f"(image sizes guessed: {', '.join(guessed)} at {profile['spatial']}; "
                         "latency and agreement on your own image sizes can differ: pass --inputs FILE.npz)")
        return feed, notes
    culprit = _culprit(plan, last_error)
    spec = next(s for s in plan.specs if s.name == culprit)
    raise FeedError(f"cannot synthesize input '{culprit}' (declared {spec.shape_text()}): the original model "
                    f"failed on all {len(tried)} tried size(s) ({'; '.join(tried[:3])}"
                    f"{'; ...' if len(tried) > 3 else ''}), last with: {_clip(last_error, 300)}; "
                    "pass --inputs FILE.npz")


def _culprit(plan: FeedPlan, message: str) -> str:
    names = [s.name for s in plan.specs]
    mentioned = [n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", message)]
    for candidates in (mentioned, [n for n in plan.guessed_inputs() if n in mentioned], plan.guessed_inputs()):
        if candidates:
            return candidates[0]
    return names[0]


# -- roles and values ----------------------------------------------------------

def _role(name: str | None, axis: int, rank: int, is_int: bool) -> str:
    if name:
        n = name.lower()
        words = set(re.split(r"[^a-z0-9]+", n))
        if "past" in n or "cache" in n:
            return "past"
        if "batch" in n or words & {"n", "b", "bs", "bsz", "nb"}:
            return "batch"
        if any(w in n for w in ("seq", "len", "token", "time", "step", "frame", "total", "position")) \
                or words & {"s", "t", "l", "ctx", "context"}:
            return "seq"
        if any(w in n for w in ("height", "width")) or words & {"h", "w"}:
            return "spatial"
        if "chan" in n or words & {"c"}:
            return "channel"
    # Unnamed, or a name that says nothing (unk__12, s0, dim_1): by position.
    if axis == 0:
        return "batch"
    if is_int:
        return "seq"
    if rank == 4:
        return "channel" if axis == 1 else "spatial"
    if rank == 3 and axis == 1:
        return "seq"
    return "other"


def _values(spec: InputSpec, shape: list[int], rng: np.random.Generator, high: int) -> np.ndarray:
    dtype = spec.dtype
    lowered = spec.name.lower()
    if "mask" in lowered or dtype == np.bool_:
        return np.ones(shape, dtype=dtype)
    if np.issubdtype(dtype, np.integer):
        if "position" in lowered or "pos_id" in lowered:
            if not shape:
                return np.zeros(shape, dtype=dtype)
            return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        if "token_type" in lowered or "segment" in lowered:
            return np.zeros(shape, dtype=dtype)
        top = max(1, min(int(high), int(np.iinfo(dtype).max) + 1))
        return rng.integers(0, top, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


_EXPR = re.compile(r"^[\w.]+(\s*[-+*]\s*[\w.]+)+$")


def _is_expression(key: str) -> bool:
    return bool(_EXPR.match(key.strip()))


def _evaluate(expr: str, size_of: Callable[[str], int | None], profile: Mapping[str, int]) -> int:
    """'past_sequence_length + sequence_length' style dim names."""
    tokens = re.findall(r"[\w.]+|[-+*]", expr)
    values = []
    for token in tokens:
        if token in "+-*":
            values.append(token)
        elif token.isdigit():
            values.append(token)
        else:
            size = size_of(token)
            if size is None:
                size = profile.get(_role(token, 1, 2, True), profile["other"])
            values.append(str(int(size)))
    try:
        return int(eval(" ".join(values), {"__builtins__": {}}))  # digits and + - * only
    except Exception:
        return profile["other"]


# -- what the graph requires ---------------------------------------------------

_SMALL_INITIALIZER = 4096  # bytes: shape constants and the like, kept for shape inference


def _inference_model(model: onnx.ModelProto, plan: FeedPlan) -> onnx.ModelProto:
    """A data-free copy of the model for shape inference: big initializers become
    typed graph inputs, unknown input dims become their plan symbols."""
    light = onnx.ModelProto()
    light.ir_version = max(model.ir_version, 4)  # initializers need not be listed as inputs
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for spec in plan.specs:
        value = graph.input.add()
        value.name = spec.name
        value.type.tensor_type.elem_type = spec.elem_type
        shape = value.type.tensor_type.shape
        for axis, d in enumerate(spec.dims or []):
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = plan.slots[(spec.name, axis)].key
    for tensor in model.graph.initializer:
        small = tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.ByteSize() <= _SMALL_INITIALIZER
        if small:
            graph.initializer.append(tensor)
        else:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _shapes(graph: onnx.GraphProto) -> dict[str, list[int | str | None]]:
    shapes: dict[str, list[int | str | None]] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        shapes[value.name] = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                              else (d.dim_param or None) for d in tensor_type.shape.dim]
    for tensor in graph.initializer:
        shapes[tensor.name] = [int(d) for d in tensor.dims]
    return shapes


def _constraints_from_shape_inference(model: onnx.ModelProto, plan: FeedPlan) -> None:
    if not plan.slots:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(_inference_model(model, plan), data_prop=True)
    except Exception:  # custom ops, malformed graphs: use the declarations alone
        inferred = _inference_model(model, plan)
    shapes = _shapes(inferred.graph)
    # Constants produced by Constant nodes.
    for node in inferred.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    shapes[node.output[0]] = [int(d) for d in attr.t.dims]

    slot_keys = {slot.key for slot in plan.slots.values()}

    def equate(a, b) -> None:
        if a is None or b is None:
            return
        if isinstance(a, str) and isinstance(b, str):
            ra, rb = plan._root(a), plan._root(b)
            if ra == rb:
                return
            if ra in slot_keys and rb not in slot_keys:
                ra, rb = rb, ra  # an input's own symbol (or expression) stays the representative
            plan.ties[ra] = rb  # ra now follows rb; carry over what was known of ra
            if ra in plan.pinned:
                plan.pinned.setdefault(rb, plan.pinned[ra])
            if ra in plan.caps:
                plan.caps[rb] = min(plan.caps[ra], plan.caps.get(rb, plan.caps[ra]))
        elif isinstance(a, str) or isinstance(b, str):
            symbol, size = (a, b) if isinstance(a, str) else (b, a)
            root = plan._root(symbol)
            plan.pinned.setdefault(root, int(size))

    def dims(name: str) -> list | None:
        return shapes.get(name) if name else None

    for node in inferred.graph.node:
        op, ins = node.op_type, list(node.input)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            continue
        if op == "MatMul" and len(ins) == 2:
            a, b = dims(ins[0]), dims(ins[1])
            if a and b:
                equate(a[-1], b[-2] if len(b) >= 2 else b[0])
        elif op == "Gemm" and len(ins) >= 2:
            a, b = dims(ins[0]), dims(ins[1])
            if a and b and len(a) == 2 and len(b) == 2:
                equate(a[0 if attrs.get("transA", 0) else 1], b[1 if attrs.get("transB", 0) else 0])
        elif op in ("Conv", "ConvTranspose") and len(ins) >= 2 and op == "Conv":
            x, w = dims(ins[0]), dims(ins[1])
            if x and w and len(x) >= 2 and len(w) >= 2 and isinstance(w[1], int):
                equate(x[1], w[1] * int(attrs.get("group", 1)))
        elif op in ("LayerNormalization", "SimplifiedLayerNormalization") and len(ins) >= 2:
            x, scale = dims(ins[0]), dims(ins[1])
            if x and scale and len(scale) <= len(x):
                for xd, sd in zip(x[len(x) - len(scale):], scale):
                    equate(xd, sd)
        elif op in ("BatchNormalization", "InstanceNormalization") and len(ins) >= 2:
            x, scale = dims(ins[0]), dims(ins[1])
            if x and scale and len(x) >= 2 and len(scale) == 1:
                equate(x[1], scale[0])
        elif op in _ELEMENTWISE:
            operands = [dims(i) for i in ins if i]
            operands = [o for o in operands if o is not None]
            if len(operands) < 2:
                continue
            rank = max(len(o) for o in operands)
            for pos in range(1, rank + 1):
                column = [o[-pos] for o in operands if len(o) >= pos]
                fixed = [d for d in column if isinstance(d, int) and d > 1]
                symbols = [d for d in column if isinstance(d, str)]
                for s in symbols:
                    equate(s, fixed[0] if fixed else symbols[0])
        elif op == "Concat":
            operands = [dims(i) for i in ins if i]
            if len(operands) < 2 or any(o is None for o in operands) or len({len(o) for o in operands}) != 1:
                continue
            rank = len(operands[0])
            axis = int(attrs.get("axis", 0)) % rank if rank else 0
            for pos in range(rank):
                if pos == axis:
                    continue
                first = operands[0][pos]
                for other in operands[1:]:
                    equate(first, other[pos])


def _index_bounds(model: onnx.ModelProto, plan: FeedPlan) -> None:
    """Rows of the constant tables integer inputs index through Gather; a
    position input also caps its sequence length."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    table_rows: dict[str, list[int]] = {t.name: [int(d) for d in t.dims] for t in model.graph.initializer}
    producers: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for out in node.output:
            producers[out] = node
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    table_rows[node.output[0]] = [int(d) for d in attr.t.dims]

    def table_dims(name: str, hops: int = 4) -> list[int] | None:
        while name not in table_rows and hops > 0 and name in producers:
            node = producers[name]
            if node.op_type not in ("Identity", "Cast", "DequantizeLinear") or not node.input:
                return None
            name, hops = node.input[0], hops - 1
        return table_rows.get(name)

    for spec in plan.specs:
        dtype = spec.dtype
        if dtype is None or not np.issubdtype(dtype, np.integer):
            continue
        bounds = []
        frontier, seen = [spec.name], {spec.name}
        for _ in range(8):
            following = []
            for name in frontier:
                for node in consumers.get(name, []):
                    if node.op_type == "Gather" and len(node.input) >= 2 and node.input[1] == name:
                        table = table_dims(node.input[0])
                        axis = 0
                        for attr in node.attribute:
                            if attr.name == "axis":
                                axis = attr.i
                        if table and -len(table) <= axis < len(table):
                            bounds.append(table[axis])
                    elif node.op_type in _VALUE_PRESERVING and node.input and node.input[0] == name:
                        for out in node.output:
                            if out and out not in seen:
                                seen.add(out)
                                following.append(out)
            frontier = following
        if bounds:
            bound = min(bounds)
            plan.index_bound[spec.name] = bound
            lowered = spec.name.lower()
            if ("position" in lowered or "pos_id" in lowered) and spec.dims:
                slot = plan.slots.get((spec.name, len(spec.dims) - 1))
                if slot is not None:
                    root = plan._root(slot.key)
                    plan.caps[root] = min(bound, plan.caps.get(root, bound))


# -- helpers ------------------------------------------------------------------

def _one_line(exc: BaseException | str) -> str:
    text = str(exc) if not isinstance(exc, str) else exc
    return " ".join(text.split()) or type(exc).__name__


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(exc: BaseException | str) -> str:
    """An error message on one line (onnxruntime's span several)."""
    return _one_line(exc)


__all__: Iterable[str] = ["FeedError", "FeedPlan", "InputSpec", "PROFILES", "check_feeds", "input_specs",
                          "load_feeds", "one_line", "plan_feeds", "synthesize_feeds", "synthesize_working_feed"]
