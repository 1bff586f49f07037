"""Serialize a model whose large tensors are held as payloads outside the
proto, streaming each payload once, without building the whole message.

A `Skeleton` is a ModelProto whose main-graph initializers named in
`payloads` are data-less (name, type, dims) plus where each one's bytes are.
It is written either as one self-contained .onnx file or as an .onnx file
plus one external-data file (required at 2 GB, protobuf's limit).

Protobuf serializes a message's fields in field-number order, and a message
may be written as the concatenation of its parts. So the single-file form is
written part by part — the fields before the graph, the graph's nodes, each
initializer (its fields before raw_data, raw_data streamed from the payload,
its fields after), the rest of the graph, the rest of the model — and the
bytes equal ``SerializeToString()`` of the filled-in model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import onnx

from onnxbit.errors import ModelError
from onnxbit.modelio.payloads import Payload
from onnxbit.modelio.publish import Publication

TWO_GB = 2**31
# Data-file offsets are multiples of this, so onnxruntime can map tensors.
EXTERNAL_ALIGNMENT = 4096
# Tensors smaller than this stay inside the .onnx file even in external mode.
EXTERNAL_MIN_BYTES = 1024

_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
_RAW_DATA_FIELD = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_LENGTH_DELIMITED = 2


@dataclass
class Skeleton:
    model: onnx.ModelProto
    payloads: dict[str, Payload] = field(default_factory=dict)

    @property
    def payload_bytes(self) -> int:
        return sum(p.nbytes for p in self.payloads.values())

    def estimated_size(self) -> int:
        """Bytes of the single-file form (within a few bytes per tensor)."""
        return self.model.ByteSize() + sum(p.nbytes + 16 for p in self.payloads.values())

    def materialize(self) -> onnx.ModelProto:
        """A complete ModelProto (every payload copied in once)."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        for tensor in model.graph.initializer:
            payload = self.payloads.get(tensor.name)
            if payload is not None:
                tensor.raw_data = b"".join(bytes(c) for c in payload.chunks())
        return model


def needs_external_data(skeleton: Skeleton) -> bool:
    return skeleton.estimated_size() >= TWO_GB


def write_model(skeleton: Skeleton, destination: Path, publication: Publication,
                external_data: bool | None = None, data_name: str | None = None) -> list[Path]:
    """Stage `skeleton` for `destination` in `publication`; returns the
    files it will publish. external_data None: only when 2 GB or more."""
    if external_data is None:
        external_data = needs_external_data(skeleton)
    if not external_data:
        with publication.create(destination) as handle:
            _write_single_file(skeleton, handle)
        return [destination]
    data_name = data_name or f"{destination.name}.data"
    data_path = destination.parent / data_name
    model = onnx.ModelProto()
    model.CopyFrom(skeleton.model)
    wrote_data = False
    with publication.create(data_path) as data:
        offset = 0
        for tensor in model.graph.initializer:
            payload = skeleton.payloads.get(tensor.name)
            if payload is None:
                continue
            if payload.nbytes < EXTERNAL_MIN_BYTES:
                tensor.raw_data = b"".join(bytes(c) for c in payload.chunks())
                continue
            padding = -offset % EXTERNAL_ALIGNMENT
            data.write(b"\0" * padding)
            offset += padding
            for chunk in payload.chunks():
                data.write(chunk)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(payload.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += payload.nbytes
            wrote_data = True
    with publication.create(destination) as handle:
        handle.write(model.SerializeToString())
    if not wrote_data:  # every tensor was small: no data file after all
        publication.unstage(data_path)
        return [destination]
    return [data_path, destination]


def _write_single_file(skeleton: Skeleton, out: BinaryIO) -> None:
    model, payloads = skeleton.model, skeleton.payloads
    graph = model.graph
    head, tail = _split(model, _GRAPH_FIELD)
    graph_head, graph_tail = _split(graph, _INITIALIZER_FIELD)
    # Per initializer: (its name, bytes before raw_data, payload or None, bytes after, encoded size).
    parts: list[tuple[str, bytes, Payload | None, bytes, int]] = []
    graph_size = graph_head.ByteSize() + graph_tail.ByteSize()
    for tensor in graph.initializer:
        payload = payloads.get(tensor.name)
        if payload is None:
            before_bytes, after_bytes = tensor.SerializeToString(), b""
            size = len(before_bytes)
        else:
            before, after = _split(tensor, _RAW_DATA_FIELD)
            before_bytes, after_bytes = before.SerializeToString(), after.SerializeToString()
            size = len(before_bytes) + _field_size(_RAW_DATA_FIELD, payload.nbytes) + len(after_bytes)
        parts.append((tensor.name, before_bytes, payload, after_bytes, size))
        graph_size += _field_size(_INITIALIZER_FIELD, size)
    out.write(head.SerializeToString())
    if model.HasField("graph"):
        out.write(_tag(_GRAPH_FIELD) + _varint(graph_size))
        out.write(graph_head.SerializeToString())
        for name, before_bytes, payload, after_bytes, size in parts:
            out.write(_tag(_INITIALIZER_FIELD) + _varint(size))
            out.write(before_bytes)
            if payload is not None:
                out.write(_tag(_RAW_DATA_FIELD) + _varint(payload.nbytes))
                written = 0
                for chunk in payload.chunks():
                    out.write(chunk)
                    written += len(chunk)
                if written != payload.nbytes:  # an input data file changed under us
                    raise ModelError(f"tensor '{name}': {written} bytes read, {payload.nbytes} expected; did the "
                                     "input's external-data file change during the conversion?")
            out.write(after_bytes)
        out.write(graph_tail.SerializeToString())
    out.write(tail.SerializeToString())


def _split(message, number: int):
    """Two copies of `message`: its fields numbered below `number`, and above
    (the field `number` itself in neither). Sub-messages are copied, so call
    this only where the big payloads are not inside."""
    before, after = type(message)(), type(message)()
    for descriptor, value in message.ListFields():
        if descriptor.number == number:
            continue
        target = before if descriptor.number < number else after
        if _is_repeated(descriptor):
            getattr(target, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)
    return before, after


def _is_repeated(descriptor) -> bool:
    return descriptor.is_repeated if hasattr(descriptor, "is_repeated") else descriptor.label == descriptor.LABEL_REPEATED


def _tag(number: int) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_size(number: int, length: int) -> int:
    return len(_tag(number)) + len(_varint(length)) + length
