"""Validation of a model file before onnxbit trusts it.

Every command (quantize, inspect, verify) reads models through
:func:`read_model` and validates them with :func:`check_model`:

- :func:`read_model` turns every way a file can fail to be an ONNX model
  (missing, a directory, empty, truncated, not protobuf, protobuf that is no
  model) into one :class:`~onnxbit.errors.ModelError` naming the file.
- :func:`model_problems` lists what is wrong inside a decoded model: tensors
  whose data does not match their dims and type, external-data entries that
  point outside the model's directory, past the end of their file or carry a
  forged length, graphs that are empty, cyclic, out of order or read values
  nothing defines, a missing ai.onnx opset import, and whatever onnx.checker
  says about the graph without its weight bytes.

Sizes are computed without copying tensor bytes (reading ``raw_data`` from
protobuf copies it: the length comes from ``ByteSize()``) and external data is
never read, only ``os.stat``-ed.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError

from onnxbit.errors import ModelError

T = onnx.TensorProto
A = onnx.AttributeProto

# Elements per packed unit in raw_data: (bits per element).
_SUB_BYTE_BITS = {T.INT4: 4, T.UINT4: 4, T.FLOAT4E2M1: 4, T.INT2: 2, T.UINT2: 2}
for _name in ("FLOAT6E2M3", "FLOAT6E3M2"):
    if hasattr(T, _name):
        _SUB_BYTE_BITS[getattr(T, _name)] = 6

# The typed field that holds each data type when raw_data is not used, and how
# many entries of it one element takes (2 for complex; packed types below).
_INT32_TYPES = {T.INT32, T.INT16, T.INT8, T.UINT16, T.UINT8, T.BOOL, T.FLOAT16, T.BFLOAT16, T.FLOAT8E4M3FN,
                T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ, T.INT4, T.UINT4, T.FLOAT4E2M1, T.INT2, T.UINT2}
for _name in ("FLOAT8E8M0", "FLOAT6E2M3", "FLOAT6E3M2"):
    if hasattr(T, _name):
        _INT32_TYPES.add(getattr(T, _name))
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")

MAX_LISTED = 5  # problems quoted in check_model's message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a model. `where` names the node or tensor (with
    the enclosing node's name for subgraphs: ``loop/body_node``)."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True)
class ExternalData:
    """A tensor's external-data entry (TensorProto.external_data)."""

    location: str
    offset: int = 0
    length: int | None = None
    checksum: str | None = None


# --------------------------------------------------------------------------- reading


def read_model(path: str | os.PathLike, *, load_external_data: bool = False) -> onnx.ModelProto:
    """Decode the ONNX model in `path`; raise ModelError naming the file when
    it is missing, a directory, empty, truncated or not an ONNX model.

    External data is left in its files unless `load_external_data` (then its
    entries are validated first: see :func:`model_problems`). The model is not
    otherwise validated: call :func:`check_model` for that."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ModelError(f"{path}: is a directory, not an ONNX model file")
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"{path}: is not a regular file")
    if info.st_size == 0:
        raise ModelError(f"{path}: the file is empty (0 bytes), not an ONNX model")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file: {exc.strerror or exc}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{path}: not an ONNX model, or a truncated one ({info.st_size} bytes): protobuf could not "
                         f"decode it ({_one_line(str(exc))})") from None
    finally:
        del data
    missing = _not_a_model(model)
    if missing:
        raise ModelError(f"{path}: not an ONNX model, or a truncated one ({info.st_size} bytes): it decodes, "
                         f"but {missing}")
    bad_text = _invalid_text(model)
    if bad_text:
        raise ModelError(f"{path}: a corrupt model: {bad_text}")
    if load_external_data and _has_external_data(model):
        problems = _tensor_problems(model, path.parent, external_only=True)
        if problems:
            raise ModelError(_problems_message(problems, source=str(path)))
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # onnx raises OSError, ValueError or its own checker errors here
            raise ModelError(f"{path}: cannot load its external data: {_one_line(str(exc))}") from None
    return model


def _invalid_text(message) -> str | None:
    """Where a text field is not valid UTF-8. protobuf parses such a file and
    hands the field out as bytes, which fails later wherever a str is needed
    (copying the field, formatting a name). Bytes fields (raw_data) are not
    read, so weights are never copied."""
    for descriptor in message.DESCRIPTOR.fields:
        try:
            if descriptor.type == descriptor.TYPE_STRING:
                value = getattr(message, descriptor.name)
                for text in (value if _repeated(descriptor) else [value]):
                    if isinstance(text, bytes):
                        text.decode("utf-8")  # raises, saying where
            elif descriptor.message_type is not None:
                if _repeated(descriptor):
                    for item in getattr(message, descriptor.name):
                        problem = _invalid_text(item)
                        if problem:
                            return problem
                elif message.HasField(descriptor.name):
                    problem = _invalid_text(getattr(message, descriptor.name))
                    if problem:
                        return problem
        except UnicodeDecodeError as exc:
            return (f"text field {message.DESCRIPTOR.name}.{descriptor.name} is not valid UTF-8 "
                    f"({exc.reason} at byte {exc.start})")
    return None


def _not_a_model(model: onnx.ModelProto) -> str | None:
    """Why a decoded message is no ONNX model (junk often decodes as one)."""
    if model.ir_version <= 0:
        return "it has no IR version" if model.ir_version == 0 else f"its IR version is {model.ir_version}"
    if not model.HasField("graph"):
        return "it has no graph"
    if not len(model.opset_import):
        return "it imports no opset"
    return None


# --------------------------------------------------------------------------- tensors


def external_data_info(tensor: onnx.TensorProto) -> ExternalData | None:
    """The external-data entry of `tensor`, or None when its data is inside
    the model. Raises ModelError for an entry without a location or with a
    non-integer or negative offset/length."""
    if tensor.data_location != T.EXTERNAL:
        return None
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    if not location:
        raise ModelError(f"tensor {tensor.name!r}: external data without a location")
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        text = entries.get(key)
        if text is None or text == "":
            numbers[key] = None
            continue
        try:
            value = int(text)
        except ValueError:
            raise ModelError(f"tensor {tensor.name!r}: external data {key} {text!r} is not an integer") from None
        if value < 0:
            raise ModelError(f"tensor {tensor.name!r}: external data {key} {value} is negative")
        numbers[key] = value
    return ExternalData(location=location, offset=numbers["offset"] or 0, length=numbers["length"],
                        checksum=entries.get("checksum"))


def element_count(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def expected_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of raw data `tensor`'s dims and type call for (sub-byte types
    packed), or None for strings and unknown types."""
    return _nbytes_for(tensor.data_type, element_count(tensor))


def _nbytes_for(data_type: int, count: int) -> int | None:
    if data_type in _SUB_BYTE_BITS:
        return (count * _SUB_BYTE_BITS[data_type] + 7) // 8
    if data_type in (T.STRING, T.UNDEFINED):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None
    return count * itemsize


def _type_name(data_type: int) -> str:
    try:
        return T.DataType.Name(data_type)
    except ValueError:
        return f"type {data_type}"


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


_RAW_TAG_SIZE = 1  # field 9, wire type 2: one byte


def _has_unknown_fields(message) -> bool:
    try:
        from google.protobuf import unknown_fields

        return len(unknown_fields.UnknownFieldSet(message)) > 0
    except Exception:  # older protobuf: assume there may be some
        return True


def raw_data_nbytes(tensor: onnx.TensorProto) -> int:
    """len(tensor.raw_data) without copying the bytes out of protobuf: the
    tensor's serialized size minus that of every other field."""
    if not tensor.HasField("raw_data"):
        return 0
    if _has_unknown_fields(tensor):
        return len(tensor.raw_data)  # their size is not in the copy below
    rest = T()
    _copy_fields(tensor, rest, skip=("raw_data",))
    payload = tensor.ByteSize() - rest.ByteSize() - _RAW_TAG_SIZE  # = varint(len) + len
    for size in range(1, 11):
        if _varint_size(payload - size) == size:
            return payload - size
    return len(tensor.raw_data)  # not reached for a consistent ByteSize


def _typed_count(tensor: onnx.TensorProto, field: str) -> int:
    return len(getattr(tensor, field))


def _expected_typed(data_type: int, count: int) -> tuple[str, int] | None:
    """(field, entries) a tensor of `count` elements stores in a typed field."""
    if data_type == T.FLOAT:
        return "float_data", count
    if data_type == T.COMPLEX64:
        return "float_data", 2 * count
    if data_type == T.DOUBLE:
        return "double_data", count
    if data_type == T.COMPLEX128:
        return "double_data", 2 * count
    if data_type == T.INT64:
        return "int64_data", count
    if data_type in (T.UINT32, T.UINT64):
        return "uint64_data", count
    if data_type in _INT32_TYPES:
        bits = _SUB_BYTE_BITS.get(data_type)
        per_entry = {4: 2, 2: 4}.get(bits, 1)
        return "int32_data", (count + per_entry - 1) // per_entry
    return None


def tensor_problem(tensor: onnx.TensorProto, base_dir: Path | None) -> str | None:
    """What is wrong with `tensor`'s data, as one line, or None."""
    described = f"{_type_name(tensor.data_type)}{list(tensor.dims)}"
    if tensor.data_type == T.UNDEFINED:
        return "has no data type"
    negative = [d for d in tensor.dims if d < 0]
    if negative:
        return f"has a negative dimension ({described})"
    if tensor.data_type == T.STRING:
        return None
    if tensor.data_type not in T.DataType.values():
        return f"has an unknown data type {tensor.data_type}"
    expected = expected_nbytes(tensor)
    if expected is None:
        return f"has an unsupported data type {_type_name(tensor.data_type)}"
    if tensor.data_location == T.EXTERNAL:
        return _external_problem(tensor, expected, described, base_dir)
    count = element_count(tensor)
    typed = [f for f in _TYPED_FIELDS if _typed_count(tensor, f)]
    if tensor.HasField("raw_data"):
        if typed:
            return f"holds its data both in raw_data and in {typed[0]}"
        size = raw_data_nbytes(tensor)
        if size != expected:
            return f"raw_data holds {size} bytes, but {described} needs {expected}"
        return None
    if not typed:
        return None if count == 0 else f"has no data ({described} needs {expected} bytes)"
    if len(typed) > 1:
        return f"holds its data in several fields ({', '.join(typed)})"
    field, entries = _expected_typed(tensor.data_type, count) or (None, None)
    if field != typed[0]:
        return f"holds {_type_name(tensor.data_type)} data in {typed[0]}" + (f" (expected {field})" if field else "")
    have = _typed_count(tensor, field)
    if have != entries:
        return f"{field} has {have} entries, but {described} needs {entries}"
    return None


def _external_problem(tensor: onnx.TensorProto, expected: int, described: str, base_dir: Path | None) -> str | None:
    try:
        info = external_data_info(tensor)
    except ModelError as exc:
        return "external data entry is malformed: " + str(exc).split(": ", 1)[-1]
    assert info is not None
    location = info.location
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        return f"external data location {location!r} is an absolute path (it must be relative to the model's folder)"
    parts = re.split(r"[\\/]", location)
    if ".." in parts:
        return f"external data location {location!r} leaves the model's folder ('..')"
    if info.length is not None and info.length != expected:
        return (f"external data length {info.length} does not match {described}, which needs {expected} bytes "
                f"(forged or corrupt entry)")
    if base_dir is None:
        return None  # no file to check against
    base = os.path.realpath(base_dir)
    full = os.path.join(base, location)
    real = os.path.realpath(full)
    if os.path.commonpath([base, real]) != base:
        return (f"external data location {location!r} is a symbolic link to {real}, outside the model's folder "
                f"{base}")
    try:
        info_stat = os.stat(real)
    except FileNotFoundError:
        return f"external data file {location!r} does not exist in {base}"
    except OSError as exc:
        return f"external data file {location!r} cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(info_stat.st_mode):
        return f"external data location {location!r} is not a regular file"
    size = info_stat.st_size
    if info.offset > size:
        return f"external data offset {info.offset} is beyond the end of {location!r} ({size} bytes)"
    length = info.length if info.length is not None else size - info.offset
    if info.offset + length > size:
        return (f"external data offset {info.offset} + length {length} runs past the end of {location!r} "
                f"({size} bytes)")
    if length != expected:
        return (f"external data from offset {info.offset} to the end of {location!r} is {length} bytes, but "
                f"{described} needs {expected}")
    return None


# --------------------------------------------------------------------------- walking the model


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == A.GRAPH:
            yield attr.g
        elif attr.type == A.GRAPHS:
            yield from attr.graphs


def _node_label(node: onnx.NodeProto, index: int, prefix: str) -> str:
    return f"{prefix}{node.name or f'{node.op_type}#{index}'}"


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, str, onnx.TensorProto]]:
    """(where, kind, tensor) for every tensor the model holds."""

    def graph_tensors(graph: onnx.GraphProto, prefix: str):
        for t in graph.initializer:
            yield f"{prefix}{t.name}", "initializer", t
        for s in graph.sparse_initializer:
            yield f"{prefix}{s.values.name}", "sparse initializer values", s.values
            yield f"{prefix}{s.indices.name or s.values.name}", "sparse initializer indices", s.indices
        yield from nodes_tensors(graph.node, prefix)

    def nodes_tensors(nodes, prefix: str):
        for i, node in enumerate(nodes):
            label = _node_label(node, i, prefix)
            for attr in node.attribute:
                kind = f"{node.op_type} attribute {attr.name!r}"
                if attr.type == A.TENSOR:
                    yield label, kind, attr.t
                elif attr.type == A.TENSORS:
                    for t in attr.tensors:
                        yield label, kind, t
                elif attr.type == A.SPARSE_TENSOR:
                    yield label, kind + " values", attr.sparse_tensor.values
                elif attr.type == A.GRAPH:
                    yield from graph_tensors(attr.g, f"{label}/")
                elif attr.type == A.GRAPHS:
                    for g in attr.graphs:
                        yield from graph_tensors(g, f"{label}/")

    yield from graph_tensors(model.graph, "")
    for function in model.functions:
        yield from nodes_tensors(function.node, f"{function.domain}::{function.name}/")


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == T.EXTERNAL for _, _, t in _tensors(model))


def _tensor_problems(model: onnx.ModelProto, base_dir: Path | None, external_only: bool = False) -> list[Problem]:
    problems = []
    for where, kind, tensor in _tensors(model):
        if external_only and tensor.data_location != T.EXTERNAL:
            continue
        what = tensor_problem(tensor, base_dir)
        if what:
            joined = f"{kind} {what}" if what.startswith(("has ", "holds ")) else f"{kind}: {what}"
            problems.append(Problem(where or "<unnamed tensor>", joined))
    return problems


def _structure_problems(nodes, defined: set[str], outputs, prefix: str) -> list[Problem]:
    """Values read before they are defined: undefined names, cycles, nodes out
    of order; duplicate outputs; graph outputs nothing computes. Recurses into
    subgraphs with the names visible at their node."""
    problems: list[Problem] = []
    nodes = list(nodes)
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if not out:
                continue
            if out in producer or out in defined:
                first = (f"node {_node_label(nodes[producer[out]], producer[out], prefix)!r}" if out in producer
                         else "a graph input or initializer")
                problems.append(Problem(_node_label(node, i, prefix),
                                        f"{node.op_type} writes {out!r}, which {first} already defines "
                                        f"(every value must be defined once)"))
                continue
            producer[out] = i
    visible = set(defined)
    late: list[tuple[int, str]] = []
    for i, node in enumerate(nodes):
        for name in node.input:
            if not name or name in visible:
                continue
            if name in producer:
                late.append((i, name))
            else:
                problems.append(Problem(_node_label(node, i, prefix),
                                        f"{node.op_type} reads {name!r}, which no node, graph input or "
                                        f"initializer defines"))
        for sub in _subgraphs(node):
            inner = visible | {v.name for v in sub.input} | {t.name for t in sub.initializer} | {
                s.values.name for s in sub.sparse_initializer}
            problems += _structure_problems(sub.node, inner, sub.output, f"{_node_label(node, i, prefix)}/")
        visible.update(o for o in node.output if o)
    if late:
        problems += _order_problems(nodes, producer, late, prefix)
    for out in outputs:
        if out.name and out.name not in visible:
            problems.append(Problem(f"{prefix}{out.name}", "graph output is computed by no node, graph input or "
                                                          "initializer"))
    return problems


def _order_problems(nodes, producer: dict[str, int], late: list[tuple[int, str]], prefix: str) -> list[Problem]:
    """Cycles among nodes (named), and reads of values that later nodes compute."""
    deps = {i: {producer[n] for n in node.input if n in producer} for i, node in enumerate(nodes)}
    # Kahn's algorithm: what is left is in a cycle or downstream of one.
    users: dict[int, list[int]] = {i: [] for i in deps}
    pending = {i: len(d) for i, d in deps.items()}
    for i, d in deps.items():
        for j in d:
            users[j].append(i)
    ready = [i for i, c in pending.items() if c == 0]
    while ready:
        j = ready.pop()
        for i in users[j]:
            pending[i] -= 1
            if pending[i] == 0:
                ready.append(i)
    stuck = {i for i, c in pending.items() if c > 0}
    problems = []
    in_cycle: set[int] = set()
    for start in sorted(stuck):
        if start in in_cycle:
            continue
        # Walk producers among stuck nodes until one repeats: that loop is a cycle.
        path, seen, i = [], {}, start
        while i not in seen:
            seen[i] = len(path)
            path.append(i)
            i = min(j for j in deps[i] if j in stuck)
        cycle = path[seen[i]:]
        if in_cycle.intersection(cycle):
            continue
        in_cycle.update(cycle)
        names = [_node_label(nodes[j], j, prefix) for j in reversed(cycle)]
        problems.append(Problem(names[0], f"the graph has a cycle: {' -> '.join(names + names[:1])}"))
    for i, name in late:
        if i in stuck:
            continue
        node = nodes[i]
        problems.append(Problem(_node_label(node, i, prefix),
                                f"{node.op_type} reads {name!r} before node "
                                f"{_node_label(nodes[producer[name]], producer[name], prefix)!r} computes it "
                                f"(nodes are not in topological order)"))
    return problems


# --------------------------------------------------------------------------- onnx.checker on the skeleton


def _stub(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """An empty tensor of the same name and type: what the checker needs."""
    data_type = tensor.data_type if tensor.data_type in T.DataType.values() and tensor.data_type else T.FLOAT
    return onnx.helper.make_tensor(tensor.name, data_type, [0], [])


def _copy_fields(source, target, skip: tuple[str, ...]) -> None:
    for field in source.DESCRIPTOR.fields:
        name = field.name
        if name in skip:
            continue
        if _repeated(field):
            getattr(target, name).extend(getattr(source, name))
        elif field.message_type is not None:
            if source.HasField(name):
                getattr(target, name).CopyFrom(getattr(source, name))
        elif source.HasField(name):
            setattr(target, name, getattr(source, name))


def _skeleton_node(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    _copy_fields(node, out, skip=("attribute",))
    for attr in node.attribute:
        new = out.attribute.add()
        if attr.type in (A.TENSOR, A.TENSORS, A.GRAPH, A.GRAPHS):
            _copy_fields(attr, new, skip=("t", "tensors", "g", "graphs"))
            if attr.type == A.TENSOR:
                new.t.CopyFrom(_stub(attr.t))
            elif attr.type == A.TENSORS:
                new.tensors.extend(_stub(t) for t in attr.tensors)
            elif attr.type == A.GRAPH:
                new.g.CopyFrom(_skeleton_graph(attr.g))
            else:
                new.graphs.extend(_skeleton_graph(g) for g in attr.graphs)
        else:
            new.CopyFrom(attr)
    return out


def _skeleton_graph(graph: onnx.GraphProto) -> onnx.GraphProto:
    out = onnx.GraphProto()
    _copy_fields(graph, out, skip=("node", "initializer"))
    out.initializer.extend(_stub(t) for t in graph.initializer)
    out.node.extend(_skeleton_node(n) for n in graph.node)
    return out


def weightless_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every tensor (initializers, Constant and other attribute
    tensors, in subgraphs and functions too) replaced by an empty one of the
    same name and type: the graph onnx.checker validates, without copying a
    weight byte (also for models over protobuf's 2 GB limit)."""
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip=("graph", "functions", "training_info"))
    skeleton.graph.CopyFrom(_skeleton_graph(model.graph))
    for function in model.functions:
        f = skeleton.functions.add()
        _copy_fields(function, f, skip=("node",))
        f.node.extend(_skeleton_node(n) for n in function.node)
    return skeleton


_CHECKER_NODE = re.compile(r"(?:Name|name): (\S*) OpType: (\S+)")


def _checker_problem(model: onnx.ModelProto) -> Problem | None:
    if any(imp.domain == "com.onnxbit" for imp in model.opset_import):
        from onnxbit.ops.schemas import register_schemas

        register_schemas()
    try:
        onnx.checker.check_model(weightless_skeleton(model))
    except onnx.checker.ValidationError as exc:
        text = str(exc)
        match = _CHECKER_NODE.search(text)
        where = (match.group(1) or match.group(2)) if match else "graph"
        return Problem(where, f"onnx.checker: {_one_line(text)}")
    except Exception as exc:  # onnx's C++ layer can raise other errors on odd protos
        return Problem("graph", f"onnx.checker failed: {_one_line(str(exc))}")
    return None


# --------------------------------------------------------------------------- public checks


def model_problems(model: onnx.ModelProto, base_dir: Path | str | None) -> list[Problem]:
    """Everything wrong with `model` (empty list: none). `base_dir` is the
    folder external-data locations are relative to (the model file's folder);
    with None, external files are not looked at (locations and lengths still
    are)."""
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    base = Path(base_dir) if base_dir is not None else None
    problems: list[Problem] = []
    missing = _not_a_model(model)
    if missing:
        problems.append(Problem("model", f"not an ONNX model: {missing}"))
    if not any(imp.domain in ("", "ai.onnx") for imp in model.opset_import):
        problems.append(Problem("model", "imports no ai.onnx opset (opset_import has no default domain)"))
    if not len(model.graph.node):
        problems.append(Problem(model.graph.name or "graph", "the graph is empty (it has no nodes)"))
    problems += _tensor_problems(model, base)
    graph = model.graph
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {
        s.values.name for s in graph.sparse_initializer}
    structure = _structure_problems(graph.node, defined, graph.output, "")
    for function in model.functions:
        structure += _structure_problems(function.node, set(function.input), [], f"{function.domain}::"
                                                                                 f"{function.name}/")
    problems += structure
    if not structure and not missing:
        # Our own checks give clearer messages for what they cover; the checker
        # would stop at the first of those. Run it for everything else.
        checker = _checker_problem(model)
        if checker is not None:
            problems.append(checker)
    return problems


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _problems_message(problems: list[Problem], source: str | None = None) -> str:
    head = f"{source}: " if source else ""
    count = len(problems)
    listed = "; ".join(_one_line(str(p)) for p in problems[:MAX_LISTED])
    more = f"; and {count - MAX_LISTED} more" if count > MAX_LISTED else ""
    noun = "problem" if count == 1 else "problems"
    return f"{head}invalid model, {count} {noun}: {listed}{more}"


def check_model(model: onnx.ModelProto, base_dir: Path | str | None, *, source: str | None = None) -> None:
    """Raise ModelError listing the first problems of `model` (each with its
    node or tensor name) and how many there are; `source` (the file name)
    starts the message."""
    problems = model_problems(model, base_dir)
    if problems:
        raise ModelError(_problems_message(problems, source))


def read_checked_model(path: str | os.PathLike, *, load_external_data: bool = False) -> onnx.ModelProto:
    """read_model + check_model (external data relative to the file's folder)."""
    path = Path(path)
    model = read_model(path, load_external_data=False)
    check_model(model, path.parent, source=str(path))
    if load_external_data and _has_external_data(model):
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelError(f"{path}: cannot load its external data: {_one_line(str(exc))}") from None
    return model
