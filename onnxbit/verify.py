"""Run an original and a converted model side by side: agreement, size, speed.

Used by `onnxbit verify` (a deployment check: exit status 1 when the outputs
disagree beyond a tolerance) and `onnxbit demo`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from onnxbit.bench.timing import interleave, median_ms, time_ns

_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.BOOL: np.bool_,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
}


@dataclass
class OutputAgreement:
    name: str
    max_abs: float
    max_rel: float  # max |converted - original| / max |original|
    argmax_match: float | None  # fraction of positions whose last-axis argmax agrees


@dataclass
class Comparison:
    outputs: list[OutputAgreement]
    bytes_original: int
    bytes_converted: int
    ms_original: float
    ms_converted: float
    threads: int
    feeds: int
    notes: list[str] = field(default_factory=list)

    @property
    def worst_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def speedup(self) -> float:
        return self.ms_original / self.ms_converted if self.ms_converted > 0 else float("nan")


def model_bytes(path_or_model: Any) -> int:
    """Bytes on disk of a model file plus any external data files next to it."""
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model.ByteSize()
    path = Path(path_or_model)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in _all_initializers(model.graph)
                 for entry in tensor.external_data if entry.key == "location"}
    return total + sum((path.parent / loc).stat().st_size for loc in locations)


def _all_initializers(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node or attr.g.initializer:
                yield from _all_initializers(attr.g)
            for sub in attr.graphs:
                yield from _all_initializers(sub)


def synthesize_feeds(model: onnx.ModelProto, batch: int = 1, seq: int = 16, seed: int = 0,
                     vocab: int = 100) -> dict[str, np.ndarray]:
    """Plausible inputs from the graph's input types: token ids in [0, vocab),
    masks of ones, standard-normal floats; symbolic dims become batch, then seq."""
    rng = np.random.default_rng(seed)
    initializer_names = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in _DTYPES:
            raise ValueError(f"cannot synthesize input {value.name!r} of ONNX element type "
                             f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}; pass --inputs FILE.npz")
        symbolic = iter([batch, seq])
        shape = [d.dim_value if d.HasField("dim_value") else next(symbolic, 1) for d in tensor_type.shape.dim]
        dtype = _DTYPES[tensor_type.elem_type]
        lowered = value.name.lower()
        if np.issubdtype(dtype, np.integer) and "mask" in lowered:
            feeds[value.name] = np.ones(shape, dtype=dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, vocab, size=shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[value.name] = np.ones(shape, dtype=bool)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def load_feeds(path: str | os.PathLike, input_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Feeds from an .npz: keys equal to the input names (one feed), or
    NAME_0, NAME_1, ... (one feed per index)."""
    data = np.load(path)
    names = list(input_names)
    if all(name in data for name in names):
        return [{name: data[name] for name in names}]
    indices = sorted({int(m.group(1)) for key in data.files for m in [re.search(r"_(\d+)$", key)] if m})
    feeds = [{name: data[f"{name}_{i}"] for name in names if f"{name}_{i}" in data} for i in indices]
    feeds = [feed for feed in feeds if len(feed) == len(names)]
    if not feeds:
        raise ValueError(f"{path} holds {sorted(data.files)}; expected the model's inputs {names} "
                         "as keys, or NAME_0, NAME_1, ... for several feeds")
    return feeds


def _session(model: Any, threads: int, with_library: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Two sessions alternate in one process; spinning pools would steal each
    # other's cores and distort both timings.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    if with_library:
        from onnxbit.runtime import InferenceSession

        return InferenceSession(source, sess_options=options)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def needs_library(model: onnx.ModelProto) -> bool:
    return any(op.domain == "com.onnxbit" for op in model.opset_import)


def compare(original: Any, converted: Any, feeds: list[dict[str, np.ndarray]] | None = None,
            threads: int = 1, rounds: int = 20) -> Comparison:
    """Run both models on the same feeds; agreement over all feeds, and the
    median latency of the first feed with the two models interleaved."""
    original_proto = original if isinstance(original, onnx.ModelProto) else onnx.load(os.fspath(original))
    converted_proto = converted if isinstance(converted, onnx.ModelProto) else onnx.load(os.fspath(converted))
    if feeds is None:
        feeds = [synthesize_feeds(original_proto)]
    before = _session(original, threads, with_library=needs_library(original_proto))
    after = _session(converted, threads, with_library=needs_library(converted_proto))
    output_names = [o.name for o in before.get_outputs()]
    missing = set(output_names) - {o.name for o in after.get_outputs()}
    if missing:
        raise ValueError(f"the converted model lacks outputs {sorted(missing)} of the original")

    worst: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name in output_names}
    for feed in feeds:
        for name, ref, got in zip(output_names, before.run(output_names, feed), after.run(output_names, feed)):
            ref64, got64 = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
            diff = np.abs(ref64 - got64)
            stats = worst[name]
            stats[0] = max(stats[0], float(diff.max(initial=0.0)))
            stats[1] = max(stats[1], float(diff.max(initial=0.0) / max(np.abs(ref64).max(initial=0.0), 1e-30)))
            if ref64.ndim >= 1 and ref64.shape[-1] > 1 and np.issubdtype(np.asarray(ref).dtype, np.floating):
                stats[2] += float((ref64.argmax(-1) == got64.argmax(-1)).sum())
                stats[3] += float(ref64[..., 0].size)
    outputs = [OutputAgreement(name, s[0], s[1], s[2] / s[3] if s[3] else None) for name, s in worst.items()]

    first = feeds[0]
    probes = {"original": lambda: {"t": time_ns(lambda: before.run(None, first))},
              "converted": lambda: {"t": time_ns(lambda: after.run(None, first))}}
    for probe in probes.values():  # warm-up: first runs allocate and prepack
        probe()
    samples = interleave(probes, rounds)
    return Comparison(outputs=outputs, bytes_original=model_bytes(original),
                      bytes_converted=model_bytes(converted),
                      ms_original=median_ms(samples["original"]["t"]),
                      ms_converted=median_ms(samples["converted"]["t"]), threads=threads, feeds=len(feeds))


def render(comparison: Comparison, console=None, title: str = "original vs converted") -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title)
    for column in ("", "original", "converted", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    c = comparison
    table.add_row("size", _mb(c.bytes_original), _mb(c.bytes_converted),
                  f"{c.bytes_original / max(c.bytes_converted, 1):.2f}x smaller")
    table.add_row(f"latency ({c.threads} thread{'s' if c.threads > 1 else ''}, median)",
                  f"{c.ms_original:.3f} ms", f"{c.ms_converted:.3f} ms", f"{c.speedup:.2f}x faster")
    console.print(table)
    agreement = Table(title=f"agreement over {c.feeds} input batch{'es' if c.feeds > 1 else ''}")
    for column in ("output", "max abs diff", "max rel diff", "argmax agreement"):
        agreement.add_column(column, justify="left" if column == "output" else "right")
    for o in c.outputs:
        agreement.add_row(o.name, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}",
                          "-" if o.argmax_match is None else f"{100 * o.argmax_match:.2f}%")
    console.print(agreement)


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"
