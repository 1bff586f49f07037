"""`onnxbit bench model`: a converted model's speed against its original."""

from __future__ import annotations

from pathlib import Path

import click

from onnxbit.cli.groups import bench
from onnxbit.cli.values import positive_ints


@bench.command("model")
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("converted", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=".npz of inputs (NAME or NAME_0, NAME_1, ...) timed instead of the synthesized batch-1 and "
                   "prefill-sized ones.")
@click.option("--image-size", type=click.IntRange(1), default=None, metavar="N",
              help="Height and width for image inputs whose size the graph leaves open (default 224).")
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--rounds", type=click.IntRange(1), default=15, show_default=True,
              help="Timed runs of each model per case (interleaved; the median is shown).")
def bench_model_command(original: Path, converted: Path, inputs: Path | None, image_size: int | None, threads: str,
                        rounds: int) -> None:
    """Latency of CONVERTED against ORIGINAL at batch 1 and at a prefill-sized input, 1 and 2 threads."""
    from onnxbit.bench.model import bench_models, render, workload_feeds, workload_notes
    from onnxbit.errors import OnnxbitError
    from onnxbit.feeds import load_feeds, plan_feeds
    from onnxbit.verify import open_model

    counts = tuple(positive_ints(threads, "--threads"))
    try:
        if inputs is not None and image_size is not None:
            raise click.UsageError("give --inputs or --image-size, not both: the inputs fix their own sizes")
        feeds, notes = None, []
        before = open_model(original, "original")  # read once, for the feeds and the timing
        proto = before.proto
        if inputs is not None:
            names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
            feeds = [(f"input {i}", feed) for i, feed in enumerate(load_feeds(inputs, names))]
        else:  # one plan of the inputs (shape inference over the graph) for the feeds and the notes
            plan = plan_feeds(proto)
            feeds, notes = workload_feeds(proto, image_size, plan), workload_notes(proto, image_size, plan)
        results = bench_models(before, converted, counts, rounds, feeds)
    except OnnxbitError as exc:
        raise click.ClickException(str(exc)) from None
    render(results, notes=notes)
