"""Run a pipeline of passes on a copy of a model and hand back a valid model.

Steps: check the input (errors name the node) and the pass order (each
pass's requires / must_precede), copy the model (all but the weight bytes,
which are read from the input: see onnxbit.graph.borrowed), raise its
default opset when the target's ops for the configured precisions need a
newer one (known before any pass runs, so the pipeline runs once), name
unnamed nodes, import into onnx-graphsurgeon, run the passes (each once,
giving back the weights it read), drop dead nodes and initializers, sort
topologically, export, add the opset imports the new ops need, run shape
inference and onnx.checker.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import onnx
import onnx_graphsurgeon as gs

from onnxbit import formats
from onnxbit.errors import ModelError  # noqa: F401  (re-exported)
from onnxbit.model_size import model_nbytes
from onnxbit.modelio.save import Skeleton
from onnxbit.graph.borrowed import BorrowedInitializers
from onnxbit.graph.gs_adapter import release_loaded
from onnxbit.passes.base import Pass, PassContext, check_order

TWO_GB = 2**31


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("the model imports no ai.onnx opset")


def name_unnamed_nodes(graph: onnx.GraphProto, taken: set[str], prefix: str = "") -> None:
    for node in graph.node:
        taken.add(node.name)
    for i, node in enumerate(graph.node):
        if not node.name:
            base = f"{prefix}{node.op_type}_{i}"
            name, j = base, 1
            while name in taken:
                name, j = f"{base}_{j}", j + 1
            node.name = name
            taken.add(name)
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                name_unnamed_nodes(sub, taken, prefix=f"{node.name}/")


def _without_weight_data(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its main-graph initializers turned into graph inputs of
    the same type and shape: what onnx.checker validates about the graph, at
    the cost of the graph alone instead of every weight byte (and usable on
    models over protobuf's 2 GB limit)."""
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph, source = skeleton.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    declared = {i.name for i in source.input}
    for init in source.initializer:
        if init.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton


def check_input(model: onnx.ModelProto) -> None:
    """Raise ModelError, quoting onnx.checker (which names the node), when the
    input is not a valid ONNX model."""
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    try:
        onnx.checker.check_model(_without_weight_data(model))
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the input model is not valid ONNX: {exc}") from None


def _register_custom_schemas() -> None:
    """Let onnx.checker and shape inference know com.onnxbit::TernaryMatMul."""
    from onnxbit.ops.schemas import register_schemas

    register_schemas()


class PassManager:
    """Runs `passes` in order on a copy of a model."""

    def __init__(self, passes: Sequence[Pass], *, target="onnxbit", config=None,
                 progress: Callable[[str, int, int], None] | None = None, check: bool = True):
        from onnxbit.targets import get_target

        self.passes = list(passes)
        check_order(self.passes)
        self.target = get_target(target)
        self.config = config
        self.progress = progress
        self.check = check
        self.base_dir = None
        self.runs = 0  # pipeline runs of the last conversion (1 unless a prediction missed)

    def run(self, model: onnx.ModelProto, base_dir=None) -> tuple[onnx.ModelProto, PassContext]:
        """The converted model (complete) and the pass context."""
        skeleton, ctx = self.run_to_skeleton(model, base_dir)
        return skeleton.materialize(), ctx

    def run_to_skeleton(self, model: onnx.ModelProto, base_dir=None) -> tuple[Skeleton, PassContext]:
        """The converted model with its large tensors left as payloads (the
        input's bytes are read from `model` or base_dir's external data
        files only when written), and the pass context."""
        check_input(model)
        self.base_dir = base_dir
        current = default_opset(model)
        planned = max(current, self.planned_default_opset(model))
        self.runs = 1
        out, ctx = self._run_once(model, planned)
        emitted = ctx.opsets.get("", 0)
        if emitted > planned:
            # A layer needed more than planned (a float weight that turned out
            # exactly ternary, say): the passes' emitted ops must be written for
            # the newer opset from the start, so they run once more.
            self.runs = 2
            planned = emitted
            out, ctx = self._run_once(model, planned)
            ctx.notes.append(f"the pipeline ran twice: a layer needed ai.onnx opset {emitted}, more than the "
                             "configured precisions predicted")
        if planned > current:
            ctx.notes.append(f"default opset raised from {current} to {planned} for the emitted ops")
        self._finish(out, ctx)
        return out, ctx

    def planned_default_opset(self, model: onnx.ModelProto) -> int:
        """The ai.onnx opset the target's ops need for every precision the
        config can give a layer, ternary included when the model holds QAT
        chains (their folds make layers ternary whatever the config says)."""
        settings = [s for _, s in self.config.candidates()] if self.config is not None else []
        if settings and _may_hold_qat_chains(model):
            settings += [dataclasses.replace(settings[0], precision="ternary", granularity="tensor", group_size=0,
                                             act_quant=act, format=formats.DEFAULT) for act in (0, 1)]
        planned = max((self.target.required_opsets(s).get("", 0) for s in settings), default=0)
        for op_type, spatial_rank in _conv_kinds(model):
            planned = max([planned, *(self.target.required_conv_opsets(s, op_type, spatial_rank).get("", 0)
                                      for s in settings)])
        return planned

    def _run_once(self, model: onnx.ModelProto, opset: int) -> tuple[Skeleton, PassContext]:
        # The working copy leaves the weights' bytes in `model` or its data
        # files (read, never written); the output is written from them once.
        borrowed = BorrowedInitializers(model, self.base_dir)
        work = borrowed.working_copy()
        if opset > default_opset(work):
            work = borrowed.upgrade(work, opset)
        name_unnamed_nodes(work.graph, set())
        graph = borrowed.import_graph(work)
        ctx = PassContext(graph=graph, config=self.config, target=self.target, progress=self.progress)
        for p in self.passes:
            ctx.results.append((p.name, p.run(ctx)))
            release_loaded(graph)
        graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=True)
        graph.toposort(recurse_subgraphs=True)
        return borrowed.export_skeleton(graph, work), ctx

    def _finish(self, skeleton: Skeleton, ctx: PassContext) -> None:
        model = skeleton.model
        imports = {imp.domain or "": imp for imp in model.opset_import}
        # Sorted: the order passes asked in can follow set iteration, which
        # changes from one process to the next; the output must not.
        for domain, version in sorted(ctx.opsets.items()):
            key = "" if domain in ("", "ai.onnx") else domain
            if key in imports:
                imports[key].version = max(imports[key].version, version)
            else:
                model.opset_import.append(onnx.helper.make_opsetid(key, version))
        needed_ir = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
        model.ir_version = max(model.ir_version, needed_ir)
        if "com.onnxbit" in ctx.opsets:
            _register_custom_schemas()
        try:
            # Shapes depend on the graph, not on weight bytes: infer on the skeleton.
            inferred = onnx.shape_inference.infer_shapes(_without_weight_data(model), check_type=True,
                                                         strict_mode=False, data_prop=False)
            del model.graph.value_info[:]
            model.graph.value_info.extend(inferred.graph.value_info)
            if self.check:
                # Tensor payloads are checked where they are made; the checker
                # validates the graph.
                onnx.checker.check_model(_without_weight_data(model))
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ModelError(f"the rewritten model failed validation: {exc}") from None


def _conv_kinds(model: onnx.ModelProto) -> set[tuple[str, int]]:
    """(op type, spatial rank) of the model's Conv/ConvTranspose nodes with an initializer weight."""
    from onnxbit.graph.queries import proto_graphs

    ranks = {t.name: len(t.dims) for graph in proto_graphs(model.graph) for t in graph.initializer}
    return {(node.op_type, ranks.get(node.input[1], 4) - 2) for graph in proto_graphs(model.graph)
            for node in graph.node if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1}


def _may_hold_qat_chains(model: onnx.ModelProto) -> bool:
    """Whether the QAT folds could prove weights ternary: a fake-quant Round,
    or bit-field extraction / a Cast of packed integer constants."""
    from onnxbit.graph.queries import proto_graphs

    integer = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32}
    for graph in proto_graphs(model.graph):
        packed = {t.name for t in graph.initializer if t.data_type in integer}
        for node in graph.node:
            if node.op_type in ("Round", "BitShift", "BitwiseAnd"):
                return True
            if node.op_type == "Cast" and node.input and node.input[0] in packed:
                return True
    return False


def default_passes(measure_error: bool = True) -> list[Pass]:
    """BatchNormalization into Convs, QAT folding (exact ternary weights first), then find and pack weights, the
    activations after TernaryConvs into them, then embedding tables of bfloat16 values stored as bfloat16."""
    from onnxbit.passes.bf16_tables import StoreBf16TablesPass
    from onnxbit.passes.find_weights import FindWeightsPass
    from onnxbit.passes.fold import qat_passes
    from onnxbit.passes.fold_batch_norm import FoldBatchNormPass
    from onnxbit.passes.fuse_activation import FuseActivationPass
    from onnxbit.passes.pack_weights import PackWeightsPass

    return [FoldBatchNormPass(), *qat_passes(), FindWeightsPass(), PackWeightsPass(measure_error=measure_error),
            FuseActivationPass(), StoreBf16TablesPass()]
