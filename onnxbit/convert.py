"""The Python API: convert an exported ONNX model to low-bit weights.

    import onnxbit.convert as cv
    model = cv.quantize("model.onnx", preset="bitnet", target="onnxbit", output_path="model.obx.onnx")

The input is never modified (a path is only read; a ModelProto is copied).
Writing is atomic: the model goes to a temporary file in the destination
directory and is renamed over the destination only when complete. Models of
2 GB or more are written with their tensors in one external data file
"<name>.data" next to the model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import onnx
from onnx import external_data_helper

from onnxbit.config import QuantConfig, load_config
from onnxbit.passes.base import LayerRecord
from onnxbit.model_size import model_nbytes
from onnxbit.passes.manager import TWO_GB, ModelError, PassManager, default_passes
from onnxbit.report import ConversionReport

FINAL_PASSES = ("find_weights", "pack_weights")


@dataclass
class ConversionResult:
    model: onnx.ModelProto
    report: ConversionReport


def load_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        try:
            return onnx.load(str(path)), path
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ModelError(f"{path} is not a readable ONNX model: {exc}") from None
    raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


def convert(model_or_path: onnx.ModelProto | str | os.PathLike, config: QuantConfig | dict | str | os.PathLike | None = None,
            preset: str | None = "bitnet", target: str = "onnxbit", output_path: str | os.PathLike | None = None,
            report_path: str | os.PathLike | None = None, progress: bool | Callable[[str, int, int], None] = True,
            measure_error: bool = True) -> ConversionResult:
    """Convert a model; returns the new model and the per-layer report.

    config: a QuantConfig, a dict, or a JSON file path; None uses `preset`.
    target: "onnxbit" (TernaryMatMul, needs the onnxbit library at run time),
    "ort" (stock onnxruntime: MatMulNBits) or "onnx" (standard ops only).
    progress: True for a rich progress bar on stderr, or a callback
    (node_name, done, total).
    """
    start = time.perf_counter()
    quant_config = load_config(config, preset)
    quant_config.check_target(target)
    model, input_path = load_model(model_or_path)
    if output_path is not None and input_path is not None and Path(output_path).resolve() == input_path.resolve():
        raise ValueError(f"output path {output_path} is the input model; write the converted model elsewhere")
    with _progress_callback(progress) as callback:
        manager = PassManager(default_passes(measure_error), target=target, config=quant_config, progress=callback)
        out, ctx = manager.run(model)
    report = ConversionReport(target=target, preset=quant_config.preset, layers=final_records(ctx.records),
                              notes=ctx.notes,
                              model_bytes_before=model_nbytes(model), model_bytes_after=model_nbytes(out))
    if output_path is not None:
        save_model_atomic(out, output_path)
    report.seconds = time.perf_counter() - start
    if report_path is not None:
        report.write_json(report_path)
    return ConversionResult(out, report)


def quantize(model_or_path: onnx.ModelProto | str | os.PathLike, config: QuantConfig | dict | str | os.PathLike | None = None,
             preset: str | None = "bitnet", target: str = "onnxbit", output_path: str | os.PathLike | None = None,
             report_path: str | os.PathLike | None = None, progress: bool | Callable[[str, int, int], None] = True,
             measure_error: bool = True) -> onnx.ModelProto:
    """Convert a model and return the converted ModelProto (see :func:`convert`)."""
    return convert(model_or_path, config=config, preset=preset, target=target, output_path=output_path,
                   report_path=report_path, progress=progress, measure_error=measure_error).model


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
                      external_data: bool | None = None) -> None:
    """Write `model` to output_path so that readers see the old file or the
    complete new one, never a partial file. external_data: store tensors in
    "<name>.data" (None: only when the model is 2 GB or more, protobuf's limit)."""
    path = Path(output_path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {directory} does not exist")
    if external_data is None:
        external_data = model_nbytes(model) >= TWO_GB
    if not external_data:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(model.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    data_name = f"{path.name}.data"
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=directory))
    try:
        # onnx moves tensor bytes out of the proto while saving; they are
        # loaded back below so the caller's model stays complete.
        onnx.save_model(model, str(staging / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        if (staging / data_name).exists():  # absent when every tensor is under the 1 KiB threshold
            os.replace(staging / data_name, directory / data_name)
        os.replace(staging / path.name, path)
        external_data_helper.load_external_data_for_model(model, str(directory))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
