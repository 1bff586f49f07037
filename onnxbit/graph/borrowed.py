"""Run the passes without copying every weight of the input model.

The pass manager must not modify its input, and the output must own its
tensors; a plain deep copy of the model, then a numpy copy of each weight the
passes read, then the exporter's copies cost several full passes over every
weight byte. Here the main graph's plain raw-data initializers stay in the
caller's model: the working copy holds data-less stand-ins of the same name,
type and shape, onnx-graphsurgeon reads the values straight from the caller's
tensor (as read-only numpy arrays, so a pass cannot change them behind our
back), and each stand-in is given its bytes only in the exported model.
Constants the passes create are written the same way: exported data-less,
then filled once from their numpy array.

Main-graph initializers stored as external data are borrowed the same way:
their bytes are read from the input's data file when a pass asks, and
streamed to the output when it is written. Weights a pass has read are given
back after each pass (release_loaded), so memory stays bounded by the layer
at hand, not the model. Tensors in any other form (typed fields such as
float_data, doc strings, dtypes numpy cannot hold) and subgraph initializers
are copied as before; they are small or rare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.errors import ModelError
from onnxbit.graph.gs_adapter import (BY_NUMPY, LITTLE_ENDIAN, RAW_DTYPES, BorrowedValues, TernaryValues,
                                      export_dtype_of, import_with_own_domains, lazy_proto, restorable_values,
                                      set_values, stand_in_values, values_of)
from onnxbit.graph.outer_scope import keep_outer_initializers_once
from onnxbit.graph.queries import iter_graphs, proto_tensors
from onnxbit.modelio.payloads import ArrayPayload, Payload, ProtoPayload, external_payload
from onnxbit.modelio.save import Skeleton

# The fields a plain raw tensor may set; anything else goes through the copying path.
_PLAIN_FIELDS = {"name", "dims", "data_type", "raw_data", "data_location"}
_STAND_IN_FIELDS = _PLAIN_FIELDS - {"raw_data"}
# Initializers smaller than this are given to onnx's version converter with
# their data (its adapters may read axes, shapes or scales).
UPGRADE_INLINE_BYTES = 4096


def is_plain_raw(tensor: onnx.TensorProto) -> bool:
    """A tensor held entirely as in-proto raw_data of a plain numpy dtype."""
    if not LITTLE_ENDIAN or tensor.data_type not in RAW_DTYPES:
        return False
    if tensor.data_location != onnx.TensorProto.DEFAULT:
        return False
    fields = _set_fields(tensor)
    return "raw_data" in fields and fields <= _PLAIN_FIELDS


def _stand_in(tensor: onnx.TensorProto, out: onnx.TensorProto, external: bool = False) -> None:
    out.name = tensor.name
    out.data_type = tensor.data_type
    out.dims.extend(tensor.dims)
    if tensor.HasField("data_location") and not external:
        out.data_location = tensor.data_location


class BorrowedInitializers:
    """One pipeline run's view of a caller's model: build the working copy
    with :meth:`working_copy`, import it with :meth:`import_graph`, and turn
    the edited graph into an output with :meth:`export_skeleton` (payloads
    left outside the proto, for streaming to a file) or :meth:`export`.

    base_dir: the input model's folder, where its external-data files are
    (None: a model with external data is refused)."""

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None = None):
        self.model = model
        self.base_dir = base_dir
        self._sources: dict[str, Payload] = {}

    @property
    def sources(self) -> dict[str, Payload]:
        """Main-graph initializer name -> where its bytes are (after working_copy)."""
        return self._sources

    def working_copy(self) -> onnx.ModelProto:
        """The model with the main graph's plain raw and external initializers
        as data-less stand-ins; external data elsewhere (subgraphs, Constant
        nodes) is read into the copy."""
        work = onnx.ModelProto()
        for field, value in self.model.ListFields():
            if field.name != "graph":
                copy_field(work, field, value)
        graph = work.graph
        for field, value in self.model.graph.ListFields():
            if field.name != "initializer":
                copy_field(graph, field, value)
                continue
            for tensor in value:
                if tensor.name not in self._sources and is_plain_raw(tensor):
                    self._sources[tensor.name] = ProtoPayload(tensor)
                    _stand_in(tensor, graph.initializer.add())
                elif tensor.name not in self._sources and _is_external(tensor) and tensor.data_type in RAW_DTYPES:
                    self._sources[tensor.name] = external_payload(tensor, self._require_base_dir(tensor))
                    _stand_in(tensor, graph.initializer.add(), external=True)
                else:
                    graph.initializer.add().CopyFrom(tensor)
        for tensor in proto_tensors(graph, main_initializers=False):
            if _is_external(tensor):
                self._load_inline(tensor)
        for tensor in graph.initializer:
            if _is_external(tensor):  # a duplicate name: copied above, still external
                self._load_inline(tensor)
        return work

    def _require_base_dir(self, tensor: onnx.TensorProto) -> Path:
        if self.base_dir is None:
            raise ModelError(f"tensor '{tensor.name}' is stored as external data, and the model was given without "
                             "its folder; pass the model's path instead of a loaded ModelProto")
        return self.base_dir

    def _load_inline(self, tensor: onnx.TensorProto) -> None:
        payload = external_payload(tensor, self._require_base_dir(tensor))
        tensor.raw_data = b"".join(bytes(c) for c in payload.chunks())
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]

    def upgrade(self, work: onnx.ModelProto, opset: int) -> onnx.ModelProto:
        """`work` converted to ai.onnx `opset` by onnx's version converter,
        without handing it the weights: stand-ins of UPGRADE_INLINE_BYTES or
        more stay data-less (the converter's adapters read small tensors such
        as axes and shapes, never weights), and come back as stand-ins."""
        from onnx import version_converter

        full = onnx.ModelProto()
        full.CopyFrom(work)
        inlined: dict[str, bytes] = {}
        for tensor in full.graph.initializer:
            payload = self._sources.get(tensor.name)
            if payload is None or not _is_stand_in(tensor) or payload.nbytes >= UPGRADE_INLINE_BYTES:
                continue
            inlined[tensor.name] = tensor.raw_data = b"".join(bytes(c) for c in payload.chunks())
            tensor.ClearField("data_location")
        current = next((i.version for i in work.opset_import if i.domain in ("", "ai.onnx")), 0)
        try:
            upgraded = version_converter.convert_version(full, opset)
        except Exception as exc:  # the converter raises bare RuntimeErrors
            raise ModelError(f"the emitted ops need ai.onnx opset {opset}, and onnx's version converter could not "
                             f"upgrade the model from opset {current}: {exc}") from None
        for tensor in upgraded.graph.initializer:
            if tensor.name in inlined and tensor.raw_data == inlined[tensor.name]:
                tensor.ClearField("raw_data")  # unchanged: a stand-in again, its bytes stay with the caller
        return upgraded

    def import_graph(self, work: onnx.ModelProto) -> gs.Graph:
        graph = import_with_own_domains(work)
        # Subgraphs see outer-scope initializers through constants of their own.
        for scope in iter_graphs(graph):
            for tensor in scope.tensors().values():
                proto = lazy_proto(tensor) if isinstance(tensor, gs.Constant) else None
                if proto is not None:
                    source = self._sources.get(proto.name)
                    if source is not None and _is_stand_in(proto):
                        set_values(tensor, BorrowedValues(proto, source))
        return graph

    def export(self, graph: gs.Graph, work: onnx.ModelProto) -> onnx.ModelProto:
        """The output model with every payload filled in (one copy each)."""
        return self.export_skeleton(graph, work).materialize()

    def export_skeleton(self, graph: gs.Graph, work: onnx.ModelProto) -> Skeleton:
        """The output model: `work`'s model-level fields with the exported
        graph. Main-graph initializers whose bytes are borrowed or computed
        stay data-less, with their payloads alongside; any other deferred
        tensor is filled in."""
        fills = self._defer_payloads(graph)
        out = gs.export_onnx(graph, do_type_check=False)
        keep_outer_initializers_once(out.graph, (tensor.name for tensor in work.graph.initializer))
        payloads: dict[str, Payload] = {}
        for tensor in out.graph.initializer:
            fill = fills.get(tensor.name)
            if fill is not None and _is_stand_in(tensor) and _matches(tensor, fill) and tensor.name not in payloads:
                payloads[tensor.name] = fill
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    tensor.ClearField("data_location")  # the writer decides where the bytes go
        for tensor in proto_tensors(out.graph, main_initializers=False):
            fill = fills.get(tensor.name)
            # Only a data-less tensor of the fill's type and shape is ours to fill
            # (a genuinely empty tensor elsewhere may share the name).
            if fill is not None and _is_stand_in(tensor) and _matches(tensor, fill):
                tensor.raw_data = b"".join(bytes(c) for c in fill.chunks())
                tensor.ClearField("data_location")
        # Keep everything of the model but its graph (metadata, functions, IR).
        for field, _ in out.ListFields():
            if field.name != "graph":
                out.ClearField(field.name)
        for field, value in work.ListFields():
            if field.name != "graph":
                copy_field(out, field, value)
        return Skeleton(out, payloads)

    def _defer_payloads(self, graph: gs.Graph) -> dict[str, Payload]:
        """Swap each main-graph constant the exporter would copy (or serialize
        from numpy) for a data-less stand-in; returns name -> where its bytes are."""
        fills: dict[str, Payload] = {}
        for scope in iter_graphs(graph):
            for tensor in scope.tensors().values():
                if isinstance(tensor, gs.Constant) and isinstance(values_of(tensor), BorrowedValues):
                    fills[tensor.name] = values_of(tensor).payload
        for tensor in graph.tensors().values():
            if not isinstance(tensor, gs.Constant):
                continue
            values = values_of(tensor)
            if isinstance(values, np.ndarray):
                lazy = restorable_values(tensor)
                if isinstance(lazy, BorrowedValues):
                    set_values(tensor, lazy)  # unchanged: still the caller's bytes
                    values = lazy
            if isinstance(values, BorrowedValues):
                fills[tensor.name] = values.payload
                continue
            if isinstance(values, TernaryValues):
                # A proven ternary weight kept float: its float values, made now.
                values = values.load()
            proto = lazy_proto(tensor)
            if proto is not None and _is_complete_raw(proto):
                # A TensorProto a pass built (e.g. packed INT4 codes): its bytes
                # are written from it, not copied into the exported graph.
                stand_in = onnx.TensorProto()
                _stand_in(proto, stand_in)
                set_values(tensor, stand_in_values(stand_in))
                fills[tensor.name] = ProtoPayload(proto)
                continue
            if not isinstance(values, np.ndarray) or values.dtype not in BY_NUMPY:
                continue
            if export_dtype_of(tensor) is not None or not LITTLE_ENDIAN:
                continue
            stand_in = onnx.TensorProto()
            stand_in.name = tensor.name
            stand_in.data_type = BY_NUMPY[values.dtype]
            stand_in.dims.extend(int(d) for d in values.shape)
            if tensor.data_location is not None:
                stand_in.data_location = tensor.data_location
            set_values(tensor, stand_in_values(stand_in))
            fills[tensor.name] = ArrayPayload(values)
        return fills


def copy_field(target: onnx.ModelProto | onnx.GraphProto, field, value) -> None:
    repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
    if repeated:
        getattr(target, field.name).extend(value)
    elif field.type == field.TYPE_MESSAGE:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def _is_stand_in(tensor: onnx.TensorProto) -> bool:
    return _set_fields(tensor) <= _STAND_IN_FIELDS


def _set_fields(tensor: onnx.TensorProto) -> set[str]:
    """Names of the fields `tensor` sets. (ListFields would hand back, and so
    copy, the raw_data payload.)"""
    names = set()
    for field in tensor.DESCRIPTOR.fields:
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if len(getattr(tensor, field.name)) if repeated else tensor.HasField(field.name):
            names.add(field.name)
    return names


def _same_type(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    return a.data_type == b.data_type and list(a.dims) == list(b.dims)


def _is_complete_raw(tensor: onnx.TensorProto) -> bool:
    """A tensor held entirely as in-proto raw_data (any element type)."""
    if tensor.data_location != onnx.TensorProto.DEFAULT:
        return False
    fields = _set_fields(tensor)
    return "raw_data" in fields and fields <= _PLAIN_FIELDS


def _matches(stand_in: onnx.TensorProto, fill: Payload) -> bool:
    if isinstance(fill, ProtoPayload):
        return _same_type(stand_in, fill.tensor)
    if isinstance(fill, ArrayPayload):
        return stand_in.data_type == BY_NUMPY[fill.values.dtype] and list(stand_in.dims) == list(fill.values.shape)
    count = int(np.prod([int(d) for d in stand_in.dims], dtype=np.int64))
    return (stand_in.data_type in RAW_DTYPES
            and fill.nbytes == count * np.dtype(RAW_DTYPES[stand_in.data_type]).itemsize)


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL
