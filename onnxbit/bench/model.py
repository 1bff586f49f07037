"""`onnxbit bench model ORIGINAL CONVERTED`: how fast a user's converted model
runs against the original, where it matters: one short input (batch 1) and
a prefill-sized one (128 tokens, or 128 rows when the model has no sequence
dimension, 8 images for an image model; none when every input shape is
fixed), with 1 and 2 threads. Image sizes the graph leaves open are timed at
224x224 unless the user gives one (verify's 32x32 guess times almost
nothing: nudenet's YOLOv8n converted ternary read 1.15x faster there and
1.48x at 224x224). The sessions keep onnxruntime's default
spinning workers; the two models alternate run by run at one thread
(timing.interleave) and in blocks after a pause at two
(timing.interleave_spinning), and the medians are compared; inputs are
synthesized from the graph as `verify` does, or given as an .npz."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from onnxbit.bench.timing import interleave_for_threads, median_ms, time_ns
from onnxbit.feeds import PROFILES, FeedError, FeedPlan, plan_feeds
from onnxbit.verify import open_model, open_session, run_model

WORKLOADS = (("batch 1", dict(PROFILES[0], batch=1, seq=16)), ("prefill 128", dict(PROFILES[0], batch=1, seq=128)))
ROWS_WHEN_NO_SEQUENCE = 128
IMAGES_WHEN_NO_SEQUENCE = 8
DEFAULT_IMAGE_SIZE = 224


@dataclass
class ModelTiming:
    workload: str
    shapes: str
    threads: int
    ms_original: float
    ms_converted: float

    @property
    def ratio(self) -> float:
        """Original time / converted time: above 1 the converted model is faster."""
        return self.ms_original / self.ms_converted


# Ratios within this of 1 read "as fast": medians of interleaved runs of the
# same arithmetic (an int8 DequantizeLinear + Conv model against its float
# original) land within 1% either way, and a red "1.00x slower" for them said
# nothing true.
SAME_SPEED = 0.02


def speed_words(ratio: float) -> str:
    """'1.53x faster', '1.27x slower' (never 'faster' for a slowdown), or 'as fast (0.996x)' within SAME_SPEED."""
    if abs(ratio - 1) < SAME_SPEED:
        return f"as fast ({ratio:.3f}x)"
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def is_slower(ratio: float) -> bool:
    return ratio <= 1 - SAME_SPEED


def workload_feeds(original_proto, image_size: int | None = None,
                   plan: FeedPlan | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The workloads' feeds, open image sizes at image_size (default
    DEFAULT_IMAGE_SIZE); a model whose input shapes are all fixed has one
    (a 1 x 3 x 416 x 416 detector was timed twice, once labelled batch 128).
    plan: plan_feeds(original_proto), when the caller has it."""
    plan = plan or plan_feeds(original_proto)
    spatial = image_size or DEFAULT_IMAGE_SIZE
    batch = IMAGES_WHEN_NO_SEQUENCE if plan.has_spatial() else ROWS_WHEN_NO_SEQUENCE
    feeds = []
    for name, profile in WORKLOADS:
        feed = plan.feed(dict(profile, spatial=spatial), 0, 100)
        if feeds and _shapes(feed) == _shapes(feeds[0][1]):
            name, feed = f"batch {batch}", plan.feed(dict(profile, batch=batch, seq=16, spatial=spatial), 0, 100)
            if _shapes(feed) == _shapes(feeds[0][1]):
                continue
        feeds.append((name, feed))
    return feeds


def workload_notes(original_proto, image_size: int | None = None, plan: FeedPlan | None = None) -> list[str]:
    """What the table cannot show: image sizes that were a guess, or an
    --image-size the graph leaves no room for."""
    plan = plan or plan_feeds(original_proto)
    guessed = plan.guessed_spatial()
    if guessed and image_size is None:
        return [f"image sizes guessed: {', '.join(guessed)} at {DEFAULT_IMAGE_SIZE}x{DEFAULT_IMAGE_SIZE}; the "
                "speed-up can differ at your own sizes: pass --image-size N or --inputs FILE.npz"]
    if image_size is not None and not guessed:
        return ["--image-size had no effect: the graph fixes every image size (or the model has no image input)"]
    return []


def bench_models(original: Any, converted: Any, threads: tuple[int, ...] = (1, 2), rounds: int = 15,
                 feeds: list[tuple[str, Mapping[str, np.ndarray]]] | None = None,
                 image_size: int | None = None) -> list[ModelTiming]:
    before, after = open_model(original, "original"), open_model(converted, "converted")
    feeds = feeds if feeds is not None else workload_feeds(before.proto, image_size)
    results = []
    for count in threads:
        sessions = {"original": (open_session(before, count), before),
                    "converted": (open_session(after, count), after)}
        for workload, feed in feeds:
            for session, model in sessions.values():
                try:
                    run_model(session, model, None, feed, f"the {workload} input ({_shapes(feed)})")  # warm-up
                except Exception as exc:
                    raise FeedError(f"{exc}; pass --inputs FILE.npz") from None
            probes = {name: (lambda s=session, m=model: {"t": time_ns(lambda: s.run(None, dict(feed)))})
                      for name, (session, model) in sessions.items()}
            samples = interleave_for_threads(probes, rounds, count)
            results.append(ModelTiming(workload, _shapes(feed), count, median_ms(samples["original"]["t"]),
                                       median_ms(samples["converted"]["t"])))
    return results


def render(results: list[ModelTiming], console=None, notes: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="original vs converted model (medians of interleaved runs)")
    for column in ("input", "threads", "original ms", "converted ms", "converted is"):
        table.add_column(column, justify="left" if column == "input" else "right")
    for r in results:
        words = speed_words(r.ratio)
        table.add_row(f"{r.workload} ({r.shapes})", str(r.threads), f"{r.ms_original:.3f}", f"{r.ms_converted:.3f}",
                      f"[bold red]{words}[/]" if is_slower(r.ratio) else words)
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True, markup=False)
    slower = [r for r in results if is_slower(r.ratio)]
    if slower:
        worst = min(slower, key=lambda r: r.ratio)
        console.print(f"[bold red]the converted model is slower[/] in {len(slower)} of {len(results)} cases "
                      f"(worst: {speed_words(worst.ratio)}, {worst.workload}, {worst.threads} thread(s))",
                      soft_wrap=True)


def _shapes(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {list(array.shape)}" for name, array in feed.items())
