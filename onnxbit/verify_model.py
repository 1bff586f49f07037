"""`onnxbit verify MODEL`: is a converted model file intact and within the op
contracts, without running it?

For every ``com.onnxbit::TernaryMatMul`` and ``TernaryConv`` node (subgraphs
included) it checks the attributes (K and N, or TernaryConv's weight_shape
giving N = M rows of K codes; format, group_size, act_quant, crc32c), the constant
inputs' dtypes and shapes, recomputes the ``crc32c`` checksum of B and
scales, decodes every packed code, and checks that the scales are finite and
> 0 and a constant bias is float32 [N]. Before that, the model file itself is
validated by :mod:`onnxbit.model_check` (tensor sizes, external-data
references inside the model's folder and within their files' lengths, graph
structure, onnx.checker). Every finding names its node.

A node without a ``crc32c`` attribute (converted before checksums existed) is
a warning: corruption that still decodes to valid codes would go unnoticed.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from onnxbit import checksum, formats, streams
from onnxbit.codecs import CorruptPackedDataError, unpack_ternary
from onnxbit.errors import ModelError
from onnxbit.reference import activation as activations
from onnxbit.model_check import model_problems, read_model

DOMAIN = "com.onnxbit"
DOMAIN_VERSION = 1
TERNARY_MATMUL_ATTRIBUTES = {"K", "N", "format", "group_size", "act_quant", "act_scale", checksum.ATTRIBUTE}
# TernaryConv's conv geometry (group, strides, ...) is checked by the op against X's shape when it runs.
TERNARY_CONV_ATTRIBUTES = {"weight_shape", "format", "group_size", "act_quant", "act_scale", checksum.ATTRIBUTE,
                           "group", "strides", "pads", "dilations", "auto_pad",
                           "activation", *activations.ALL_PARAMETERS}
KNOWN_ATTRIBUTES = {"TernaryMatMul": TERNARY_MATMUL_ATTRIBUTES, "TernaryConv": TERNARY_CONV_ATTRIBUTES}
ERROR, WARNING = "error", "warning"
INVALID_CHECKSUM = -1  # a crc32c attribute out of range (already reported)


@dataclass(frozen=True)
class Finding:
    where: str      # node name (subgraph nodes: "outer/inner"), tensor name or "model"
    severity: str   # ERROR or WARNING
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


@dataclass
class IntegrityReport:
    source: str
    findings: list[Finding] = field(default_factory=list)
    nodes_checked: int = 0
    checksums_verified: int = 0
    weights_decoded: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"model": self.source, "ok": self.ok, "nodes_checked": self.nodes_checked,
                "checksums_verified": self.checksums_verified, "weights_decoded": self.weights_decoded,
                "findings": [asdict(f) for f in self.findings]}


def verify_model_file(path: str | os.PathLike) -> IntegrityReport:
    """Check the model in `path` (and its external data); ModelError when it is no ONNX model at all."""
    path = Path(path)
    model = read_model(path, load_external_data=False)
    try:
        return verify_model(model, path.parent, source=str(path))
    except UnicodeDecodeError as exc:  # protobuf decodes text fields lazily, on first access
        raise ModelError(f"{path}: a corrupt model: a text field (a name, attribute or doc string) is not "
                         f"valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def verify_model(model: onnx.ModelProto, base_dir: str | os.PathLike | None = None, *,
                 source: str = "model") -> IntegrityReport:
    """Check a decoded model; external data is read relative to `base_dir`
    (the model file's folder) once its references are known to be sound."""
    report = IntegrityReport(source)
    problems = model_problems(model, base_dir)
    report.findings += [Finding(p.where, ERROR, p.what) for p in problems]
    if any(imp.domain == DOMAIN and imp.version != DOMAIN_VERSION for imp in model.opset_import):
        report.findings.append(Finding("model", ERROR, f"imports {DOMAIN} at a version other than "
                                                       f"{DOMAIN_VERSION}, the only one the op library implements"))
    if problems and any(_uses_external_data(t) for t in _all_tensors(model.graph)):
        # Unsound references are not followed; the packed tensors they hold cannot be checked.
        report.findings.append(Finding("model", ERROR, "external data not loaded because of the problems above; "
                                                       "packed tensors stored there were not checked"))
        model = _without_external(model)
    elif base_dir is not None and any(_uses_external_data(t) for t in _all_tensors(model.graph)):
        model = _with_external_data(model, base_dir, report)
    for where, node, constants in _library_nodes(model.graph, {}, ""):
        report.nodes_checked += 1
        if node.op_type not in KNOWN_ATTRIBUTES:
            report.findings.append(Finding(where, ERROR, f"{DOMAIN}::{node.op_type} is not an op of the library"))
            continue
        _check_ternary_node(where, node, constants, report)
    return report


# -- reading ---------------------------------------------------------------------------------

def _uses_external_data(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _with_external_data(model: onnx.ModelProto, base_dir, report: IntegrityReport) -> onnx.ModelProto:
    loaded = onnx.ModelProto()
    loaded.CopyFrom(model)
    try:
        onnx.external_data_helper.load_external_data_for_model(loaded, os.fspath(base_dir))
    except Exception as exc:  # OSError, ValueError, onnx's own errors
        report.findings.append(Finding("model", ERROR, f"cannot load external data: {' '.join(str(exc).split())}"))
        return _without_external(model)
    return loaded


def _without_external(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose external tensors are dropped, so that nodes reading them are reported as unreadable."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in _all_tensors(copy.graph):
        if _uses_external_data(tensor):
            tensor.ClearField("external_data")
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.ClearField("dims")
            tensor.dims.append(-1)  # marks it unreadable for _constant_array
    return copy


def _graph_constants(graph: onnx.GraphProto, outer: dict) -> dict[str, onnx.TensorProto]:
    constants = dict(outer)
    for value in graph.input:  # a graph input shadows an outer constant of the same name
        constants.pop(value.name, None)
    for tensor in graph.initializer:
        constants[tensor.name] = tensor
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if value is not None:
                constants[node.output[0]] = value
    return constants


def _library_nodes(graph: onnx.GraphProto, outer: dict, prefix: str):
    constants = _graph_constants(graph, outer)
    for index, node in enumerate(graph.node):
        where = prefix + (node.name or f"<unnamed {node.op_type} #{index}>")
        if node.domain == DOMAIN:
            yield where, node, constants
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _library_nodes(attr.g, constants, where + "/")
            for sub in attr.graphs:
                yield from _library_nodes(sub, constants, where + "/")


def _constant_array(tensor: onnx.TensorProto) -> np.ndarray | None:
    if any(d < 0 for d in tensor.dims):
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # sizes that do not match the dims: model_check reported them
        return None


# -- the TernaryMatMul and TernaryConv contracts -------------------------------------------------------------------

def _attributes(node: onnx.NodeProto) -> dict[str, onnx.AttributeProto]:
    return {a.name: a for a in node.attribute}


def _int_attribute(attrs, name: str, where: str, report: IntegrityReport, *, default: int | None) -> int | None:
    attr = attrs.get(name)
    if attr is None:
        if default is None:
            report.findings.append(Finding(where, ERROR, f"attribute {name} is missing"))
        return default
    if attr.type != onnx.AttributeProto.INT:
        report.findings.append(Finding(where, ERROR, f"attribute {name} must be an int, got "
                                                     f"{onnx.AttributeProto.AttributeType.Name(attr.type)}"))
        return None
    return int(attr.i)


def _check_act_scale(where: str, attrs, act_quant: int | None, report: IntegrityReport) -> None:
    """act_scale: a finite float > 0 with act_quant=2, absent otherwise (the op's own rules)."""
    attr = attrs.get("act_scale")
    if act_quant != 2:
        if attr is not None:
            report.findings.append(Finding(where, ERROR, f"attribute act_scale is only used with act_quant=2, "
                                                         f"but act_quant={act_quant}"))
        return
    if attr is None:
        report.findings.append(Finding(where, ERROR, "attribute act_scale is missing (act_quant=2 needs it)"))
    elif attr.type != onnx.AttributeProto.FLOAT:
        report.findings.append(Finding(where, ERROR, "attribute act_scale must be a float, got "
                                                     f"{onnx.AttributeProto.AttributeType.Name(attr.type)}"))
    elif not (math.isfinite(attr.f) and attr.f > 0):
        report.findings.append(Finding(where, ERROR, f"attribute act_scale={attr.f} must be finite and > 0"))


def _check_activation(where: str, attrs, report: IntegrityReport) -> None:
    """TernaryConv's activation attributes, by the op's own rules (onnxbit/reference/activation.py)."""
    name = attrs.get("activation")
    params = {key: attrs[key].f for key in activations.ALL_PARAMETERS if key in attrs}
    try:
        activations.check(name.s.decode(errors="replace") if name is not None else None, params)
    except ValueError as error:
        report.findings.append(Finding(where, ERROR, str(error)))


def _conv_rows(attrs, where: str, report: IntegrityReport) -> tuple[int | None, int | None]:
    """TernaryConv's weight_shape [M, C/group, (kH,) kW] as (K, N) = (C/group * kH * kW, M)."""
    attr = attrs.get("weight_shape")
    if attr is None:
        report.findings.append(Finding(where, ERROR, "attribute weight_shape is missing"))
        return None, None
    shape = list(attr.ints)
    if attr.type != onnx.AttributeProto.INTS or len(shape) not in (3, 4) or min(shape) <= 0:
        report.findings.append(Finding(where, ERROR, f"attribute weight_shape={shape} must be 3 or 4 ints > 0 "
                                                     f"([M, C/group, (kH,) kW])"))
        return None, None
    return int(np.prod(shape[1:])), shape[0]


def _check_attributes(where: str, node: onnx.NodeProto, report: IntegrityReport):
    attrs = _attributes(node)
    for name in sorted(set(attrs) - KNOWN_ATTRIBUTES[node.op_type]):
        report.findings.append(Finding(where, WARNING, f"unknown attribute {name} (ignored by the op)"))
    if node.op_type == "TernaryConv":
        _check_activation(where, attrs, report)
        k, n = _conv_rows(attrs, where, report)
    else:
        k = _int_attribute(attrs, "K", where, report, default=None)
        n = _int_attribute(attrs, "N", where, report, default=None)
    group_size = _int_attribute(attrs, "group_size", where, report, default=0)
    act_quant = _int_attribute(attrs, "act_quant", where, report, default=0)
    crc = _int_attribute(attrs, checksum.ATTRIBUTE, where, report, default=None) if checksum.ATTRIBUTE in attrs else None
    bad = False
    for name, value in (("K", k), ("N", n)):
        if value is not None and value <= 0:
            report.findings.append(Finding(where, ERROR, f"attribute {name}={value} must be > 0"))
            bad = True
    if group_size is not None and group_size < 0:
        report.findings.append(Finding(where, ERROR, f"attribute group_size={group_size} must be >= 0"))
        bad = True
    if node.op_type == "TernaryConv" and act_quant == 3:
        if group_size and k is not None and group_size < k:
            report.findings.append(Finding(where, ERROR, f"act_quant=3 (int8 per input pixel) needs one scale group "
                                                         f"along K={k}, but group_size={group_size}"))
    elif act_quant is not None and act_quant not in (0, 1, 2):
        allowed = "0, 1 or 2 (3, per input pixel, is TernaryConv's only)" if node.op_type != "TernaryConv" \
            else "0, 1, 2 or 3"
        report.findings.append(Finding(where, ERROR, f"attribute act_quant={act_quant} must be {allowed}"))
    _check_act_scale(where, attrs, act_quant, report)
    if crc is not None and not 0 <= crc <= 0xFFFFFFFF:
        report.findings.append(Finding(where, ERROR, f"attribute crc32c={crc} is not a CRC32C (0 .. 2^32 - 1)"))
        crc = INVALID_CHECKSUM
    fmt = None
    fmt_attr = attrs.get("format")
    if fmt_attr is None:
        report.findings.append(Finding(where, ERROR, "attribute format is missing"))
    elif fmt_attr.type != onnx.AttributeProto.STRING:
        report.findings.append(Finding(where, ERROR, "attribute format must be a string"))
    else:
        name = fmt_attr.s.decode("utf-8", errors="replace")
        if name not in formats.OP_FORMATS:
            report.findings.append(Finding(where, ERROR, f"attribute format={name!r} is not one of "
                                                         f"{', '.join(formats.OP_FORMATS)}"))
        else:
            fmt = name
    if bad or k is None or n is None or group_size is None or fmt is None:
        return None
    return k, n, group_size, fmt, crc


def _check_ternary_node(where: str, node: onnx.NodeProto, constants: dict, report: IntegrityReport) -> None:
    """A TernaryMatMul, or a TernaryConv: the same B, scales and bias for N = M rows of K codes."""
    conv = node.op_type == "TernaryConv"
    attributes = _check_attributes(where, node, report)
    if len(node.input) < 3 or not node.input[1] or not node.input[2] or len(node.input) > 4:
        report.findings.append(Finding(where, ERROR, f"needs inputs {'X' if conv else 'A'}, B, scales and an "
                                                     f"optional bias, has {len(node.input)} inputs"))
        return
    if attributes is None:
        return
    k, n, group_size, fmt_name, crc = attributes
    stream = fmt_name in formats.STREAMS
    fmt = formats.get(formats.STREAM_ROW_FORMAT if stream else fmt_name)
    b_name, scales_name = node.input[1], node.input[2]
    if b_name not in constants or scales_name not in constants:
        report.findings.append(Finding(where, WARNING, "B or scales is not a constant of the model: "
                                                       "checked by the op when it runs, not here"))
        return
    packed, scales = _constant_array(constants[b_name]), _constant_array(constants[scales_name])
    if packed is None or scales is None:
        report.findings.append(Finding(where, ERROR, f"cannot read {'B' if packed is None else 'scales'} "
                                                     f"('{b_name if packed is None else scales_name}')"))
        return
    row_bytes = fmt.row_bytes(k)
    ok = True
    if packed.dtype != np.uint8:
        report.findings.append(Finding(where, ERROR, f"B ('{b_name}') is {packed.dtype}, must be uint8"))
        ok = False
    elif stream and packed.ndim != 1:
        report.findings.append(Finding(where, ERROR, f"B ('{b_name}') has shape {list(packed.shape)}; a {fmt_name} "
                                                     f"stream is 1-D"))
        ok = False
    elif not stream and conv and packed.size != n * row_bytes:  # the op reads B's bytes whatever its shape
        report.findings.append(Finding(where, ERROR, f"B ('{b_name}') has {packed.size} bytes; weight_shape's M={n} "
                                                     f"rows of K={k} codes in format {fmt_name} need {n * row_bytes}"))
        ok = False
    elif not stream and not conv and packed.shape not in ((n * row_bytes,), (n, row_bytes)):
        report.findings.append(Finding(where, ERROR, f"B ('{b_name}') has shape {list(packed.shape)}; K={k} N={n} "
                                                     f"in format {fmt_name} needs [{n}, {row_bytes}] or "
                                                     f"[{n * row_bytes}]"))
        ok = False
    groups = -(-k // group_size) if group_size else 0
    allowed = [(n, groups)] if group_size else [(1,), (n,)]
    if scales.dtype != np.float32:
        report.findings.append(Finding(where, ERROR, f"scales ('{scales_name}') is {scales.dtype}, must be float32"))
        ok = False
    elif scales.shape not in allowed and not (not group_size and scales.shape == ()):
        report.findings.append(Finding(where, ERROR, f"scales ('{scales_name}') has shape {list(scales.shape)}; "
                                                     f"expected {' or '.join(str(list(s)) for s in allowed)}"))
        ok = False
    if crc is None and checksum.ATTRIBUTE not in _attributes(node):
        report.findings.append(Finding(where, WARNING, "no crc32c attribute: corruption that still decodes to "
                                                       "valid codes and scales cannot be detected"))
    elif crc is not None and crc != INVALID_CHECKSUM:
        actual = checksum.crc32c(packed, scales)
        report.checksums_verified += 1
        if actual != crc:
            report.findings.append(Finding(where, ERROR, f"checksum mismatch: B ('{b_name}') and scales "
                                                         f"('{scales_name}') have CRC32C 0x{actual:08x}, the "
                                                         f"crc32c attribute says 0x{crc:08x}"))
    if not ok:
        return
    if scales.size and not (np.isfinite(scales) & (scales > 0)).all():
        bad = ~(np.isfinite(scales) & (scales > 0))
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        report.findings.append(Finding(where, ERROR, f"scales ('{scales_name}'): {int(bad.sum())} values not finite "
                                                     f"and > 0, first at index {first}: "
                                                     f"{float(scales.reshape(-1)[first])!r}"))
    try:
        if stream:
            streams.decode_base3(fmt_name, packed, n, k)
        else:
            unpack_ternary(packed.reshape(n, row_bytes), k, fmt.name)
        report.weights_decoded += 1
    except (CorruptPackedDataError, *streams.CORRUPT_STREAM_ERRORS) as exc:
        report.findings.append(Finding(where, ERROR, f"B ('{b_name}') does not decode: {exc}"))
    if len(node.input) == 4 and node.input[3] and node.input[3] in constants:
        bias = _constant_array(constants[node.input[3]])
        if bias is None or bias.dtype != np.float32 or bias.shape != (n,):
            got = "unreadable" if bias is None else f"{bias.dtype} {list(bias.shape)}"
            report.findings.append(Finding(where, ERROR, f"bias ('{node.input[3]}') must be float32 [{n}], got {got}"))


def render(report: IntegrityReport, echo=print) -> None:
    for finding in report.findings:
        echo(str(finding))
    status = "ok" if report.ok else f"{len(report.errors)} error{'s' if len(report.errors) != 1 else ''}"
    echo(f"{report.source}: {report.nodes_checked} onnxbit node{'s' if report.nodes_checked != 1 else ''} checked, "
         f"{report.checksums_verified} checksum{'s' if report.checksums_verified != 1 else ''} verified, "
         f"{report.weights_decoded} packed weight{'s' if report.weights_decoded != 1 else ''} decoded: {status}")


__all__ = ["Finding", "IntegrityReport", "ModelError", "render", "verify_model", "verify_model_file"]
