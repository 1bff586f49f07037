"""What onnxbit relies on inside onnx-graphsurgeon (onnxbit/graph/gs_adapter.py).
If an upgrade of onnx-graphsurgeon changes one of these, the test named after
it fails here, before a conversion can go silently wrong."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxbit.graph import gs_adapter
from onnxbit.graph.ternary import TernaryProof


def _model_with_weight(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, weight.shape[0]])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, weight.shape[1]])],
                              [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constants_keep_values_and_export_type_in_private_fields():
    constant = gs.Constant("c", np.ones(3, np.float32))
    assert isinstance(constant._values, np.ndarray)
    assert constant._export_dtype is None


def test_imported_initializers_are_lazy_over_their_tensor_proto():
    graph = gs.import_onnx(_model_with_weight(np.ones((4, 2), np.float32)))
    weight = graph.tensors()["W"]
    assert type(weight._values) is LazyValues
    assert isinstance(weight._values.tensor, onnx.TensorProto) and weight._values.tensor.name == "W"
    assert gs_adapter.lazy_proto(weight) is weight._values.tensor


def test_the_public_values_property_caches_the_loaded_array():
    # The reason read_constant and release_loaded exist.
    graph = gs.import_onnx(_model_with_weight(np.ones((4, 2), np.float32)))
    weight = graph.tensors()["W"]
    weight.values
    assert isinstance(weight._values, np.ndarray)


def test_the_exporter_writes_a_lazy_constant_as_its_tensor_proto():
    # The reason constant_tensor_proto exists: a borrowed stand-in would be exported data-less.
    stand_in = onnx.TensorProto(name="s", data_type=onnx.TensorProto.FLOAT, dims=[2])
    exported = OnnxExporter.export_tensor_proto(gs.Constant("s", LazyValues(stand_in)))
    assert not exported.raw_data and list(exported.dims) == [2]


def test_import_keeps_the_models_opset_list_object():
    # The reason import_with_own_domains detaches it: new domains would be
    # appended to the caller's list, in set order.
    model = _model_with_weight(np.ones((4, 2), np.float32))
    graph = gs.import_onnx(model)
    graph.nodes.append(gs.Node("Custom", "c", inputs=[graph.inputs[0]], outputs=[gs.Variable("z")],
                               domain="com.example"))
    own = gs_adapter.import_with_own_domains(model)
    own.nodes.append(gs.Node("Custom", "c", inputs=[own.inputs[0]], outputs=[gs.Variable("z")],
                             domain="com.example"))
    gs.export_onnx(own)
    assert [i.domain for i in model.opset_import] == [""]


def test_ternary_constants_carry_their_proof_and_load_lazily():
    proof = TernaryProof(codes=np.array([[1, 0], [-1, 1], [0, 0]], np.int8), scales=np.array([0.5, 2.0], np.float32))
    constant = gs_adapter.ternary_constant("w", proof, stored_transposed=True)
    assert tuple(constant.shape) == (2, 3) and np.dtype(constant.dtype) == np.float32
    assert gs_adapter.proof_of(constant) is proof
    np.testing.assert_array_equal(gs_adapter.read_constant(constant), proof.float_weight().T)
    assert isinstance(constant._values, gs_adapter.TernaryValues)  # read_constant did not cache
    loaded = constant.values  # the public property does cache ...
    assert gs_adapter.proof_of(constant) is proof  # ... and the proof is still found
    graph = gs.Graph(nodes=[gs.Node("Identity", "i", inputs=[constant], outputs=[gs.Variable("o")])])
    gs_adapter.release_loaded(graph)
    assert isinstance(constant._values, gs_adapter.TernaryValues)
    del loaded


def test_export_complete_fills_every_lazy_weight():
    proof = TernaryProof(codes=np.array([[1, -1]], np.int8), scales=np.array([3.0], np.float32))
    constant = gs_adapter.ternary_constant("w", proof)
    x = gs.Variable("x", dtype=np.float32, shape=[1, 1])
    y = gs.Variable("y", dtype=np.float32, shape=[1, 2])
    graph = gs.Graph(nodes=[gs.Node("MatMul", "mm", inputs=[x, constant], outputs=[y])], inputs=[x], outputs=[y],
                     opset=17)
    model = gs_adapter.export_complete(graph)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), [[3.0, -3.0]])
