"""The Python API: convert an exported ONNX model to low-bit weights.

    import onnxbit.convert as cv
    model = cv.quantize("model.onnx", preset="bitnet", target="onnxbit", output_path="model.obx.onnx")

The input is never modified (a path is only read; a ModelProto is copied),
and no output may be the input model, one of its external-data files or
another output (OutputPathError, before any work is done).

Writing is all or nothing: the model, its external-data file and the report
are written in full to temporary files next to their destinations, then
renamed into place together (onnxbit.modelio.publish). Weights are read from
the input one layer at a time and streamed to the output, so memory stays
near one layer's size plus the packed result, not the model's. Outputs of
2 GB or more (protobuf's limit), or when external_data=True, keep their
tensors in one data file next to the model, named "<output>.data" unless
the input uses that name.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import onnx

from onnxbit.config import QuantConfig, load_config
from onnxbit.errors import LayerError
from onnxbit.model_check import check_model, read_model
from onnxbit.model_size import model_nbytes
from onnxbit.modelio.paths import check_outputs, data_file_name, input_files
from onnxbit.modelio.publish import Publication
from onnxbit.modelio.save import Skeleton, write_model
from onnxbit.passes.base import LayerRecord
from onnxbit.graph.borrowed import BorrowedInitializers
from onnxbit.passes.manager import TWO_GB, PassManager, default_passes  # noqa: F401  (TWO_GB re-exported)
from onnxbit.report import ConversionReport

FINAL_PASSES = ("find_weights", "pack_weights")


class ConversionResult:
    """The converted model and the per-layer report. `model` is built on first
    access (a converted multi-GB model is only ever streamed to its file)."""

    def __init__(self, skeleton: Skeleton, report: ConversionReport, written: list[Path]):
        self._skeleton = skeleton
        self._model: onnx.ModelProto | None = None
        self.report = report
        self.written = written  # files published, the model last; empty without output_path

    @property
    def model(self) -> onnx.ModelProto:
        if self._model is None:
            self._model = self._skeleton.materialize()
        return self._model


def load_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, Path | None]:
    """The model (external data not loaded) and its path; every problem of
    the file is a ModelError naming it and the node or tensor."""
    if isinstance(model_or_path, onnx.ModelProto):
        check_model(model_or_path, None, source="the model")
        return model_or_path, None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        model = read_model(path)
        check_model(model, path.parent, source=str(path))
        return model, path
    raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


def convert(model_or_path: onnx.ModelProto | str | os.PathLike, config: QuantConfig | dict | str | os.PathLike | None = None,
            preset: str | None = "bitnet", target: str = "onnxbit", output_path: str | os.PathLike | None = None,
            report_path: str | os.PathLike | None = None, progress: bool | Callable[[str, int, int], None] = True,
            measure_error: bool = True, external_data: bool | None = None,
            strict: bool = False, write_noop: bool = True) -> ConversionResult:
    """Convert a model; returns the new model and the per-layer report.

    config: a QuantConfig, a dict, or a JSON file path; None uses `preset`.
    target: "onnxbit" (TernaryMatMul, needs the onnxbit library at run time),
    "ort" (stock onnxruntime: MatMulNBits) or "onnx" (standard ops only).
    progress: True for a rich progress bar on stderr, or a callback
    (node_name, done, total).
    external_data: write the output's tensors to "<output>.data" (None: only
    when the output is 2 GB or more).
    strict: raise LayerError, writing nothing, when a converted layer is
    flagged as having lost much accuracy (weight SQNR below LOW_SQNR_DB).
    write_noop: when no layer is converted, still write the (unchanged) output
    and report; False writes nothing then (the CLI without --allow-noop).
    """
    start = time.perf_counter()
    quant_config = load_config(config, preset)
    quant_config.check_target(target)
    model, input_path = load_model(model_or_path)
    inputs = input_files(input_path, model)
    output = Path(output_path) if output_path is not None else None
    report_file = Path(report_path) if report_path is not None else None
    data_name = None
    if output is not None or report_file is not None:
        outputs = {"output": output, "--report": report_file}
        outputs = {role: path for role, path in outputs.items() if path is not None}
        check_outputs(inputs, outputs)
        if output is not None:
            data_name = data_file_name(output, inputs + ([report_file] if report_file else []))
            check_outputs(inputs, {**outputs, "external data": output.parent / data_name})
    with _progress_callback(progress) as callback:
        manager = PassManager(default_passes(measure_error), target=target, config=quant_config, progress=callback)
        skeleton, ctx = manager.run_to_skeleton(model, input_path.parent if input_path else None)
    records = final_records(ctx.records)
    notes = list(ctx.notes)
    converted = any(r.action == "converted" for r in records)
    if not converted:
        # Nothing to gain: the output is the input as it was (no added shape
        # annotations, no raised opset), so it is never larger.
        skeleton = _unchanged(model, input_path)
        notes = [n for n in notes if not n.startswith("default opset raised")]
        notes.append(_noop_note(records))
    before = _input_bytes(model, inputs)
    # A no-op writes the input back as it was: the same bytes (the skeleton's estimate is not exact).
    report = ConversionReport(target=target, preset=quant_config.preset, layers=records, notes=notes,
                              model_bytes_before=before,
                              model_bytes_after=skeleton.estimated_size() if converted else before)
    if strict and report.flagged:
        raise LayerError(f"--strict: {report.flagged_summary()}")
    written: list[Path] = []
    if not write_noop and not report.converted:
        from onnxbit.modelio.publish import check_destination_folder

        for destination in (output, report_file):  # the same errors a write would give, though none is made
            if destination is not None:
                check_destination_folder(destination)
        report.seconds = time.perf_counter() - start
        return ConversionResult(skeleton, report, written)
    if output is not None or report_file is not None:
        with Publication() as publication:
            if output is not None:
                written = write_model(skeleton, output, publication, external_data=external_data,
                                      data_name=data_name)
                report.model_bytes_after = sum(os.path.getsize(publication.staged_file(p)) for p in written)
            report.seconds = time.perf_counter() - start
            if report_file is not None:
                publication.write_bytes(report_file, report.json_text().encode())
            publication.commit()
    report.seconds = time.perf_counter() - start
    return ConversionResult(skeleton, report, written)


def quantize(model_or_path: onnx.ModelProto | str | os.PathLike, config: QuantConfig | dict | str | os.PathLike | None = None,
             preset: str | None = "bitnet", target: str = "onnxbit", output_path: str | os.PathLike | None = None,
             report_path: str | os.PathLike | None = None, progress: bool | Callable[[str, int, int], None] = True,
             measure_error: bool = True, strict: bool = False) -> onnx.ModelProto:
    """Convert a model and return the converted ModelProto (see :func:`convert`)."""
    return convert(model_or_path, config=config, preset=preset, target=target, output_path=output_path,
                   report_path=report_path, progress=progress, measure_error=measure_error, strict=strict).model


def _unchanged(model: onnx.ModelProto, input_path: Path | None) -> Skeleton:
    """The input itself as an output skeleton (its weights borrowed, not copied)."""
    borrowed = BorrowedInitializers(model, input_path.parent if input_path else None)
    work = borrowed.working_copy()
    names = {t.name for t in work.graph.initializer}
    return Skeleton(work, {name: payload for name, payload in borrowed.sources.items() if name in names})


def _reason_kind(reason: str) -> str:
    """A skip reason with the names it quotes left out, so that the same
    reason on different tensors counts as one."""
    return re.sub(r"'[^']*'", "'...'", reason)


def noop_summary(records: list[LayerRecord]) -> str:
    """One line for a conversion that converted nothing: the most common
    reasons, each as one example and how many layers gave it."""
    example: dict[str, str] = {}  # kind -> its first reason
    kinds = Counter()
    for r in records:
        if r.action == "skipped" and r.reason:
            reason = r.reason.split(";")[0]
            kind = _reason_kind(reason)
            example.setdefault(kind, reason)
            kinds[kind] += 1
    common = "; ".join(f"{example[kind]} ({count}x{', alike' if count > 1 else ''})"
                       for kind, count in kinds.most_common(3))
    if not records:
        common = "the model has no MatMul, Gemm, Conv or other weight-carrying node"
    return "no layer was converted" + (f"; most common reasons: {common}" if common else "")


def _noop_note(records: list[LayerRecord]) -> str:
    return noop_summary(records) + "; the output is the input unchanged"


def _input_bytes(model: onnx.ModelProto, inputs: list[Path]) -> int:
    """The input's size on disk (model file and external data), or its serialized size."""
    if inputs:
        return sum(os.path.getsize(p) for p in dict.fromkeys(inputs) if p.is_file())
    tensors = model_nbytes(model)
    return model.ByteSize() if tensors < TWO_GB else tensors  # ByteSize cannot count past protobuf's limit


def final_records(records: list[LayerRecord]) -> list[LayerRecord]:
    """The records worth reporting: once the weight passes (or a fold) have had
    their say on a node, earlier passes' "skipped" records for it are dropped
    (a folding pass declining a float layer that packing then handles is not news)."""
    decided = {r.node for r in records
               if r.action in ("converted", "folded") or r.pass_name in FINAL_PASSES}
    return [r for r in records
            if not (r.action == "skipped" and r.node in decided and r.pass_name not in FINAL_PASSES)]


@contextlib.contextmanager
def _progress_callback(progress) -> Iterator[Callable[[str, int, int], None] | None]:
    if callable(progress):
        yield progress
        return
    if not progress:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("converting layers", total=None)

        def update(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"converting {name}")

        yield update


def save_model_atomic(model: onnx.ModelProto, output_path: str | os.PathLike,
                      external_data: bool | None = None) -> list[Path]:
    """Write a complete `model` to output_path, all or nothing (external
    data in "<name>.data": None means only at 2 GB or more). Returns the files written."""
    skeleton = _unchanged(model, None)
    with Publication() as publication:
        written = write_model(skeleton, Path(output_path), publication, external_data=external_data)
        publication.commit()
    return written
