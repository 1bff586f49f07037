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

Tensors in any other form (typed fields such as float_data, external data,
doc strings, dtypes numpy cannot hold) and subgraph initializers are copied as
before; they are small or rare.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

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


def _stand_in(tensor: onnx.TensorProto, out: onnx.TensorProto) -> None:
    out.name = tensor.name
    out.data_type = tensor.data_type
    out.dims.extend(tensor.dims)
    if tensor.HasField("data_location"):
        out.data_location = tensor.data_location


class BorrowedValues(LazyValues):
    """LazyValues of a data-less stand-in that loads from the caller's tensor."""

    def __init__(self, stand_in: onnx.TensorProto, source: onnx.TensorProto, loaded: dict):
        super().__init__(stand_in)
        self.source = source
        self._loaded = loaded

    def load(self) -> np.ndarray:
        dtype = np.dtype(_RAW_DTYPES[self.source.data_type])
        shape = tuple(int(d) for d in self.source.dims)
        payload = self.source.raw_data  # one copy out of protobuf; numpy then aliases it (read-only)
        count = int(np.prod(shape, dtype=np.int64))
        if len(payload) != count * dtype.itemsize:
            raise ValueError(f"initializer '{self.source.name}' holds {len(payload)} bytes of raw data; "
                             f"{dtype} {list(shape)} needs {count * dtype.itemsize}")
        array = np.frombuffer(payload, dtype=dtype).reshape(shape)
        self._loaded[id(array)] = (array, self)
        return array


class BorrowedInitializers:
    """One pipeline run's view of a caller's model: build the working copy
    with :meth:`working_copy`, import it with :meth:`import_graph`, and turn
    the edited graph into an output model with :meth:`export`."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self._sources: dict[str, onnx.TensorProto] = {}
        # id(array) -> (array, values): arrays handed out by BorrowedValues.load.
        # Holding the array keeps its id unique; read-only means "same object" is "same bytes".
        self._loaded: dict[int, tuple[np.ndarray, BorrowedValues]] = {}

    def working_copy(self) -> onnx.ModelProto:
        """The model with the main graph's plain raw initializers as data-less stand-ins."""
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
                if is_plain_raw(tensor) and tensor.name not in self._sources:
                    self._sources[tensor.name] = tensor
                    _stand_in(tensor, graph.initializer.add())
                else:
                    graph.initializer.add().CopyFrom(tensor)
        return work

    def import_graph(self, work: onnx.ModelProto) -> gs.Graph:
        graph = gs.import_onnx(work)
        # Subgraphs see outer-scope initializers through constants of their own.
        for scope in _graphs(graph):
            for tensor in scope.tensors().values():
                values = getattr(tensor, "_values", None)
                if isinstance(tensor, gs.Constant) and type(values) is LazyValues:
                    source = self._sources.get(values.tensor.name)
                    if source is not None and _is_stand_in(values.tensor) and _same_type(values.tensor, source):
                        tensor._values = BorrowedValues(values.tensor, source, self._loaded)
        return graph

    def export(self, graph: gs.Graph, work: onnx.ModelProto) -> onnx.ModelProto:
        """The output model: `work`'s model-level fields with the exported
        graph, every deferred payload filled in exactly once."""
        fills = self._defer_payloads(graph)
        out = gs.export_onnx(graph, do_type_check=False)
        for tensor in _exported_tensors(out.graph):
            fill = fills.get(tensor.name)
            # Only a data-less tensor of the fill's type and shape is ours to fill
            # (a genuinely empty tensor elsewhere may share the name).
            if fill is None or not _is_stand_in(tensor) or not _matches(tensor, fill):
                continue
            if isinstance(fill, onnx.TensorProto):
                name = tensor.name
                tensor.CopyFrom(fill)  # the one copy of a borrowed weight
                tensor.name = name
            else:
                tensor.raw_data = fill.tobytes()
        # Keep everything of the model but its graph (metadata, functions, IR).
        for field, _ in out.ListFields():
            if field.name != "graph":
                out.ClearField(field.name)
        for field, value in work.ListFields():
            if field.name != "graph":
                _copy_field(out, field, value)
        return out

    def _defer_payloads(self, graph: gs.Graph) -> dict[str, onnx.TensorProto | np.ndarray]:
        """Swap each main-graph constant the exporter would copy (or serialize
        from numpy) for a data-less stand-in; returns name -> where its bytes are."""
        fills: dict[str, onnx.TensorProto | np.ndarray] = {}
        for scope in _graphs(graph):
            for tensor in scope.tensors().values():
                if isinstance(tensor, gs.Constant) and isinstance(tensor._values, BorrowedValues):
                    fills[tensor.name] = tensor._values.source
        for tensor in graph.tensors().values():
            if not isinstance(tensor, gs.Constant):
                continue
            values = tensor._values
            if isinstance(values, np.ndarray):
                borrowed = self._loaded.get(id(values))
                if borrowed is not None and borrowed[0] is values and tensor._export_dtype is None:
                    tensor._values = values = borrowed[1]  # unchanged: still the caller's bytes
            if isinstance(values, BorrowedValues):
                fills[tensor.name] = values.source
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
            fills[tensor.name] = values
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


def _exported_tensors(graph: onnx.GraphProto):
    """Initializers and tensor attributes of `graph` and of every subgraph in it."""
    stack = [graph]
    while stack:
        g = stack.pop()
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


def _matches(stand_in: onnx.TensorProto, fill: onnx.TensorProto | np.ndarray) -> bool:
    if isinstance(fill, onnx.TensorProto):
        return _same_type(stand_in, fill)
    return stand_in.data_type == _BY_NUMPY[fill.dtype] and list(stand_in.dims) == list(fill.shape)


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
