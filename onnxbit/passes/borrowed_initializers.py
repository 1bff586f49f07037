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

import sys
import weakref
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxbit.errors import ModelError
from onnxbit.modelio.payloads import ArrayPayload, Payload, ProtoPayload, external_payload
from onnxbit.modelio.save import Skeleton

# Element types whose raw_data numpy reads and writes as it is (little-endian).
_RAW_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.INT16: np.int16, onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64, onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.UINT32: np.uint32, onnx.TensorProto.UINT64: np.uint64, onnx.TensorProto.BOOL: np.bool_,
}
_BY_NUMPY = {np.dtype(v): k for k, v in _RAW_DTYPES.items()}
# The fields a plain raw tensor may set; anything else goes through the copying path.
_PLAIN_FIELDS = {"name", "dims", "data_type", "raw_data", "data_location"}
_STAND_IN_FIELDS = _PLAIN_FIELDS - {"raw_data"}
_LITTLE_ENDIAN = sys.byteorder == "little"


def is_plain_raw(tensor: onnx.TensorProto) -> bool:
    """A tensor held entirely as in-proto raw_data of a plain numpy dtype."""
    if not _LITTLE_ENDIAN or tensor.data_type not in _RAW_DTYPES:
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


class BorrowedValues(LazyValues):
    """LazyValues of a data-less stand-in that loads from a payload elsewhere
    (the caller's tensor, or the input's external-data file)."""

    def __init__(self, stand_in: onnx.TensorProto, payload: Payload, loaded: dict):
        super().__init__(stand_in)
        self.payload = payload
        self._loaded = loaded

    def load(self) -> np.ndarray:
        dtype = np.dtype(_RAW_DTYPES[self.tensor.data_type])
        shape = tuple(int(d) for d in self.tensor.dims)
        array = self.payload.array(dtype, shape)  # read-only
        # Weakly held: an array nobody uses any more is freed (bounded memory on
        # big models), and a dead reference never matches a new array.
        key = id(array)
        self._loaded[key] = (weakref.ref(array, lambda ref: _forget(key, ref)), self)
        return array


def _forget(key: int, ref: weakref.ref) -> None:
    entry = BORROWED_ARRAYS.get(key)
    if entry is not None and entry[0] is ref:
        del BORROWED_ARRAYS[key]


def read_constant(tensor: gs.Constant) -> np.ndarray:
    """The values of a constant without caching them in the graph (onnx-
    graphsurgeon's `values` keeps every weight it ever loaded in memory)."""
    values = tensor._values
    if isinstance(values, LazyValues):
        return values.load()
    return values


def constant_tensor_proto(tensor: gs.Constant) -> onnx.TensorProto:
    """A complete TensorProto of a constant (onnx-graphsurgeon's exporter
    would hand back a borrowed constant's data-less stand-in)."""
    if isinstance(tensor._values, BorrowedValues):
        return onnx.numpy_helper.from_array(np.asarray(read_constant(tensor)), tensor.name)
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    return OnnxExporter.export_tensor_proto(tensor)


def release_loaded(graph: gs.Graph) -> None:
    """Give back the memory of weights the passes read through `values`:
    each constant still holding an unchanged borrowed array goes back to
    its lazy payload."""
    for scope in _graphs(graph):
        for tensor in scope.tensors().values():
            if isinstance(tensor, gs.Constant) and isinstance(tensor._values, np.ndarray):
                values = _unchanged_borrowed(tensor)
                if values is not None:
                    tensor._values = values


def _unchanged_borrowed(tensor: gs.Constant) -> "BorrowedValues | None":
    array = tensor._values
    entry = BORROWED_ARRAYS.get(id(array))
    if entry is None or entry[0]() is not array or tensor._export_dtype is not None:
        return None
    values = entry[1]
    if array.shape != tuple(int(d) for d in values.tensor.dims):
        return None
    return values


# id(array) -> (weak reference, values) for every array a BorrowedValues
# handed out. Module-wide so that release_loaded needs only the graph.
BORROWED_ARRAYS: dict[int, tuple[weakref.ref, BorrowedValues]] = {}


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
        self._loaded = BORROWED_ARRAYS

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
                _copy_field(work, field, value)
        graph = work.graph
        for field, value in self.model.graph.ListFields():
            if field.name != "initializer":
                _copy_field(graph, field, value)
                continue
            for tensor in value:
                if tensor.name not in self._sources and is_plain_raw(tensor):
                    self._sources[tensor.name] = ProtoPayload(tensor)
                    _stand_in(tensor, graph.initializer.add())
                elif tensor.name not in self._sources and _is_external(tensor) and tensor.data_type in _RAW_DTYPES:
                    self._sources[tensor.name] = external_payload(tensor, self._require_base_dir(tensor))
                    _stand_in(tensor, graph.initializer.add(), external=True)
                else:
                    graph.initializer.add().CopyFrom(tensor)
        for tensor in _exported_tensors(graph, skip_main_initializers=True):
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

    def import_graph(self, work: onnx.ModelProto) -> gs.Graph:
        graph = gs.import_onnx(work)
        # onnx-graphsurgeon keeps work's own opset list and appends the domains
        # of new nodes to it at export, in set order (a different order in each
        # process): detach it, and let the pass manager add domains, sorted.
        graph.import_domains = [onnx.helper.make_opsetid(i.domain, i.version) for i in work.opset_import]
        # Subgraphs see outer-scope initializers through constants of their own.
        for scope in _graphs(graph):
            for tensor in scope.tensors().values():
                values = getattr(tensor, "_values", None)
                if isinstance(tensor, gs.Constant) and type(values) is LazyValues:
                    source = self._sources.get(values.tensor.name)
                    if source is not None and _is_stand_in(values.tensor):
                        tensor._values = BorrowedValues(values.tensor, source, self._loaded)
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
        payloads: dict[str, Payload] = {}
        for tensor in out.graph.initializer:
            fill = fills.get(tensor.name)
            if fill is not None and _is_stand_in(tensor) and _matches(tensor, fill) and tensor.name not in payloads:
                payloads[tensor.name] = fill
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    tensor.ClearField("data_location")  # the writer decides where the bytes go
        for tensor in _exported_tensors(out.graph, skip_main_initializers=True):
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
                _copy_field(out, field, value)
        return Skeleton(out, payloads)

    def _defer_payloads(self, graph: gs.Graph) -> dict[str, Payload]:
        """Swap each main-graph constant the exporter would copy (or serialize
        from numpy) for a data-less stand-in; returns name -> where its bytes are."""
        fills: dict[str, Payload] = {}
        for scope in _graphs(graph):
            for tensor in scope.tensors().values():
                if isinstance(tensor, gs.Constant) and isinstance(tensor._values, BorrowedValues):
                    fills[tensor.name] = tensor._values.payload
        for tensor in graph.tensors().values():
            if not isinstance(tensor, gs.Constant):
                continue
            values = tensor._values
            if isinstance(values, np.ndarray):
                borrowed = _unchanged_borrowed(tensor)
                if borrowed is not None:
                    tensor._values = values = borrowed  # unchanged: still the caller's bytes
            if isinstance(values, BorrowedValues):
                fills[tensor.name] = values.payload
                continue
            if type(values) is LazyValues and _is_complete_raw(values.tensor):
                # A TensorProto a pass built (e.g. packed INT4 codes): its bytes
                # are written from it, not copied into the exported graph.
                stand_in = onnx.TensorProto()
                _stand_in(values.tensor, stand_in)
                tensor._values = LazyValues(stand_in)
                fills[tensor.name] = ProtoPayload(values.tensor)
                continue
            if not isinstance(values, np.ndarray) or values.dtype not in _BY_NUMPY:
                continue
            if tensor._export_dtype is not None or not _LITTLE_ENDIAN:
                continue
            stand_in = onnx.TensorProto()
            stand_in.name = tensor.name
            stand_in.data_type = _BY_NUMPY[values.dtype]
            stand_in.dims.extend(int(d) for d in values.shape)
            if tensor.data_location is not None:
                stand_in.data_location = tensor.data_location
            tensor._values = LazyValues(stand_in)
            fills[tensor.name] = ArrayPayload(values)
        return fills


def _copy_field(target: onnx.ModelProto | onnx.GraphProto, field, value) -> None:
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


def _exported_tensors(graph: onnx.GraphProto, skip_main_initializers: bool = False):
    """Initializers and tensor attributes of `graph` and of every subgraph in it."""
    stack = [graph]
    while stack:
        g = stack.pop()
        if not (skip_main_initializers and g is graph):
            yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


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
        return stand_in.data_type == _BY_NUMPY[fill.values.dtype] and list(stand_in.dims) == list(fill.values.shape)
    count = int(np.prod([int(d) for d in stand_in.dims], dtype=np.int64))
    return (stand_in.data_type in _RAW_DTYPES
            and fill.nbytes == count * np.dtype(_RAW_DTYPES[stand_in.data_type]).itemsize)


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _graphs(graph: gs.Graph):
    """`graph` and every If/Loop/Scan body nested in it."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Graph):
                    stack.append(value)
                elif isinstance(value, (list, tuple)):
                    stack.extend(v for v in value if isinstance(v, gs.Graph))
