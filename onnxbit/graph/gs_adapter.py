"""Everything onnxbit relies on inside onnx-graphsurgeon beyond its public API.

onnx-graphsurgeon is the graph IR the passes edit. Three of its internals
matter to us, and this module is the only place that touches them:

- ``Constant._values``: a constant holds either a numpy array or a
  ``LazyValues`` (a TensorProto read on demand). Its public ``values``
  property replaces the lazy object by the loaded array, so every weight a
  pass ever looked at would stay in memory; we read through ``_values``
  instead and put lazy objects back after each pass.
- ``Constant._export_dtype``: set for types numpy cannot hold (INT4, INT2).
- The exporter's ``export_node`` / ``export_tensor_proto``, used to evaluate
  constant subgraphs with onnxruntime.

tests/test_graph_gs_adapter.py checks each assumption against the installed
onnx-graphsurgeon, so an upgrade that changes one fails there, by name.
"""

from __future__ import annotations

import contextlib
import sys
import weakref

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

from onnxbit.graph.ternary import TernaryProof
from onnxbit.modelio.payloads import Payload

# Element types whose raw_data numpy reads and writes as it is (little-endian).
RAW_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.INT16: np.int16, onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64, onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.UINT32: np.uint32, onnx.TensorProto.UINT64: np.uint64, onnx.TensorProto.BOOL: np.bool_,
    # ml_dtypes' bfloat16, onnx's own numpy type for it: bfloat16 weights are streamed like the others
    # (onnx's exporter would otherwise copy them through float32 temporaries: +685 MB converting a 0.7B LLM)
    onnx.TensorProto.BFLOAT16: ml_dtypes.bfloat16,
}
BY_NUMPY = {np.dtype(v): k for k, v in RAW_DTYPES.items()}
LITTLE_ENDIAN = sys.byteorder == "little"


@contextlib.contextmanager
def _without_type_warnings():
    """onnx-graphsurgeon warns, on stdout, that it has no numpy type for BFLOAT16 and keeps
    the ONNX type, which is what the bfloat16 weights need: not a message for users."""
    severity = G_LOGGER.severity
    G_LOGGER.severity = max(severity, G_LOGGER.ERROR)
    try:
        yield
    finally:
        G_LOGGER.severity = severity


class RestorableValues(LazyValues):
    """Lazy values that can be handed back after a pass loaded them: every
    array load() returns is remembered (weakly), so release_loaded can put
    this object back in place of an unchanged array."""

    def __init__(self, tensor: onnx.TensorProto):
        with _without_type_warnings():
            super().__init__(tensor)

    def remember(self, array: np.ndarray) -> np.ndarray:
        key = id(array)
        LOADED_ARRAYS[key] = (weakref.ref(array, lambda ref: _forget(key, ref)), self)
        return array


class BorrowedValues(RestorableValues):
    """Values of a data-less stand-in, read from a payload elsewhere (the
    caller's tensor, or the input's external-data file)."""

    def __init__(self, stand_in: onnx.TensorProto, payload: Payload):
        super().__init__(stand_in)
        self.payload = payload

    def load(self) -> np.ndarray:
        dtype = np.dtype(RAW_DTYPES[self.tensor.data_type])
        shape = tuple(int(d) for d in self.tensor.dims)
        return self.remember(self.payload.array(dtype, shape))  # read-only


def float32_chunks(tensor: gs.Tensor):
    """The float32 values of a constant whose bytes are borrowed (read from the input
    model or its data file), one chunk of the payload at a time, so that a pass can
    scan a large table without holding a float32 copy of it; None for any other tensor."""
    if not isinstance(tensor, gs.Constant):
        return None
    values = tensor._values
    if not isinstance(values, BorrowedValues) or values.tensor.data_type != onnx.TensorProto.FLOAT:
        return None

    def chunks():
        carry = b""
        for chunk in values.payload.chunks():
            data = carry + bytes(chunk) if carry else chunk
            whole = len(data) - len(data) % 4
            carry = bytes(data[whole:])
            yield np.frombuffer(data, dtype=np.float32, count=whole // 4)
        if carry:
            raise ValueError(f"constant '{tensor.name}' holds a partial float32 value")

    return chunks()


class TernaryValues(RestorableValues):
    """The float weight codes * scales of a proven ternary weight, computed
    only when something reads it; the proof itself travels with the constant
    (see onnxbit.graph.ternary)."""

    def __init__(self, name: str, proof: TernaryProof, stored_transposed: bool,
                 stored_shape: tuple[int, ...] | None = None):
        self.proof = proof
        self.stored_transposed = stored_transposed
        k, n = proof.shape
        self.stored_shape = stored_shape or ((n, k) if stored_transposed else (k, n))
        super().__init__(_shape_only_proto(name, self.stored_shape))

    def load(self) -> np.ndarray:
        values = self.proof.float_weight()
        values = np.ascontiguousarray(values.T) if self.stored_transposed else values
        values = values.reshape(self.stored_shape)
        values.flags.writeable = False
        return self.remember(values)


def _shape_only_proto(name: str, shape: tuple[int, int]) -> onnx.TensorProto:
    proto = onnx.TensorProto()
    proto.name = name
    proto.data_type = onnx.TensorProto.FLOAT
    proto.dims.extend(int(d) for d in shape)
    return proto


# id(array) -> (weak reference, values) for every array a RestorableValues
# handed out; module-wide so that release_loaded needs only the graph.
LOADED_ARRAYS: dict[int, tuple[weakref.ref, RestorableValues]] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    entry = LOADED_ARRAYS.get(key)
    if entry is not None and entry[0] is ref:
        del LOADED_ARRAYS[key]


# -- reading and writing constants ------------------------------------------------

def values_of(tensor: gs.Constant):
    """What the constant holds right now: an array or a lazy object (never loads)."""
    return tensor._values


def set_values(tensor: gs.Constant, values) -> None:
    """Replace the constant's array or lazy object, keeping its name and export type."""
    tensor._values = values


def export_dtype_of(tensor: gs.Constant):
    """The ONNX type a constant is exported as when numpy cannot hold it, else None."""
    return tensor._export_dtype


def read_constant(tensor: gs.Constant) -> np.ndarray:
    """The values of a constant without caching them in the graph."""
    values = tensor._values
    if isinstance(values, LazyValues):
        return values.load()
    return values


def lazy_proto(tensor: gs.Constant) -> onnx.TensorProto | None:
    """The TensorProto behind a not-yet-loaded plain lazy constant, else None."""
    values = tensor._values
    return values.tensor if type(values) is LazyValues else None


def stand_in_values(proto: onnx.TensorProto) -> LazyValues:
    """Lazy values over a data-less stand-in: exported as the stand-in itself."""
    with _without_type_warnings():
        return LazyValues(proto)


def proto_constant(proto: onnx.TensorProto) -> gs.Constant:
    """A graph constant exported exactly as `proto` (INT2/INT4 data, which numpy cannot hold)."""
    with _without_type_warnings():
        return gs.Constant(proto.name, LazyValues(proto))


def ternary_constant(name: str, proof: TernaryProof, stored_transposed: bool = False,
                     stored_shape: tuple[int, ...] | None = None) -> gs.Constant:
    """A float weight constant that is codes * scales of `proof` ([N, K] when
    stored_transposed, as Gemm transB reads it; then reshaped to stored_shape,
    as a Conv weight [M, C/group, *kernel] holds its [N, K] rows)."""
    return gs.Constant(name, TernaryValues(name, proof, stored_transposed, stored_shape))


def proof_of(tensor: gs.Tensor) -> TernaryProof | None:
    """The ternary proof a weight constant carries, or None."""
    if not isinstance(tensor, gs.Constant):
        return None
    values = restorable_values(tensor)
    return values.proof if isinstance(values, TernaryValues) else None


def restorable_values(tensor: gs.Constant) -> RestorableValues | None:
    """The lazy object behind a constant: held, or behind an unchanged array it loaded."""
    values = tensor._values
    if isinstance(values, RestorableValues):
        return values
    if not isinstance(values, np.ndarray) or tensor._export_dtype is not None:
        return None
    entry = LOADED_ARRAYS.get(id(values))
    if entry is None or entry[0]() is not values:
        return None
    lazy = entry[1]
    return lazy if values.shape == tuple(int(d) for d in lazy.tensor.dims) else None


def release_loaded(graph: gs.Graph) -> None:
    """Give back the memory of weights the passes read through `values`:
    each constant still holding an unchanged loaded array goes back to its
    lazy object."""
    from onnxbit.graph.queries import iter_graphs

    for scope in iter_graphs(graph):
        for tensor in scope.tensors().values():
            if isinstance(tensor, gs.Constant) and isinstance(tensor._values, np.ndarray):
                lazy = restorable_values(tensor)
                if lazy is not None:
                    tensor._values = lazy


def constant_nbytes(tensor: gs.Constant) -> int:
    """Bytes of a constant's data, without loading it."""
    from onnxbit.model_size import tensor_nbytes

    values = tensor._values
    if isinstance(values, LazyValues):
        return tensor_nbytes(values.tensor)
    return int(np.asarray(values).nbytes)


def constant_tensor_proto(tensor: gs.Constant) -> onnx.TensorProto:
    """A complete TensorProto of a constant (the exporter would hand back a
    borrowed constant's data-less stand-in)."""
    if isinstance(tensor._values, RestorableValues):
        return onnx.numpy_helper.from_array(np.asarray(read_constant(tensor)), tensor.name)
    return OnnxExporter.export_tensor_proto(tensor)


def export_node(node: gs.Node) -> onnx.NodeProto:
    return OnnxExporter.export_node(node)


def _drop_io_value_info(graph: onnx.GraphProto) -> None:
    """Removes value_info entries that restate a graph input or output, in
    every graph: onnx-graphsurgeon takes such a tensor's type from value_info,
    so an entry without a shape dropped the output's declared one at export
    (ddddocr's common_old.onnx; the checker then refused the rewritten model)."""
    from onnxbit.graph.queries import proto_graphs

    for scope in proto_graphs(graph):
        io = {v.name for v in scope.input} | {v.name for v in scope.output}
        kept = [v for v in scope.value_info if v.name not in io]
        if len(kept) != len(scope.value_info):
            del scope.value_info[:]
            scope.value_info.extend(kept)


def import_with_own_domains(model: onnx.ModelProto) -> gs.Graph:
    """Import `model` (a working copy: value_info restating a graph's inputs
    and outputs is removed from it). onnx-graphsurgeon keeps the model's own
    opset list and appends the domains of new nodes to it at export, in set
    order (which changes between processes): the graph gets a detached copy,
    and the pass manager adds the domains the passes asked for, sorted."""
    _drop_io_value_info(model.graph)
    with _without_type_warnings():
        graph = gs.import_onnx(model)
    graph.import_domains = [onnx.helper.make_opsetid(i.domain, i.version) for i in model.opset_import]
    return graph


def export_complete(graph: gs.Graph) -> onnx.ModelProto:
    """onnx-graphsurgeon's export with every lazy weight (borrowed, ternary)
    loaded first, so each initializer holds its data (the exporter would
    write a data-less stand-in). For tools and tests; the converter streams
    weights through onnxbit.graph.borrowed instead."""
    from onnxbit.graph.queries import iter_graphs

    for scope in iter_graphs(graph):
        for tensor in scope.tensors().values():
            if isinstance(tensor, gs.Constant) and isinstance(tensor._values, RestorableValues):
                tensor._values = tensor._values.load()
    return gs.export_onnx(graph)
