"""Outer-scope initializers kept once.

onnx-graphsurgeon's export writes every constant a subgraph reads into that
subgraph's initializers, also when it lives in an outer graph: a weight the
main graph holds and both branches of an If read comes out three times (the
Silero VAD model's two 256 KiB LSTM weights, read by both branches of an If,
made its int8 conversion larger than the original). A subgraph sees its
outer scopes' names, so one copy in the main graph serves them all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import onnx

from onnxbit.graph.queries import proto_graphs


def keep_outer_initializers_once(graph: onnx.GraphProto, main_names: Iterable[str] = ()) -> None:
    """In place: a subgraph initializer that another scope holds too, or whose
    name the input model's main graph held (main_names), goes to the main
    graph, one copy, when every copy of it is equal (a name two different
    tensors share is left alone)."""
    main_names = set(main_names)
    places: dict[str, list[tuple[onnx.GraphProto, onnx.TensorProto]]] = defaultdict(list)
    for scope in proto_graphs(graph):
        for tensor in scope.initializer:
            places[tensor.name].append((scope, tensor))
    dropped: dict[int, set[str]] = defaultdict(set)  # id(subgraph) -> names it no longer holds
    hoisted = []
    for name, held in places.items():
        in_subgraphs = [scope for scope, _ in held if scope is not graph]
        if not in_subgraphs or (len(held) < 2 and name not in main_names):
            continue
        first = held[0][1]
        if any(tensor != first for _, tensor in held[1:]):
            continue
        if len(in_subgraphs) == len(held):  # the main graph does not hold it yet
            hoisted.append(first)
        for scope in in_subgraphs:
            dropped[id(scope)].add(name)
    copies = []
    for tensor in hoisted:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copies.append(copy)
    for scope in proto_graphs(graph):
        names = dropped.get(id(scope))
        if names:
            kept = [tensor for tensor in scope.initializer if tensor.name not in names]
            del scope.initializer[:]
            scope.initializer.extend(kept)
    graph.initializer.extend(copies)
