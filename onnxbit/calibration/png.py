"""A calibration result as one PNG picture (the optional `plot` extra): the
same two charts as the HTML page, drawn with matplotlib's Agg backend (no
display needed). Left: each layer's output error at every precision, the
chosen one outlined, log scale. Right: size and accuracy along the search,
with the budget line and the held-out result."""

from __future__ import annotations

import io
import math

from onnxbit.calibration.html import COLORS
from onnxbit.calibration.result import LADDER, CalibrationResult
from onnxbit.errors import ConfigError

INSTALL_HINT = "pip install 'onnxbit[plot]'"
LABEL_LIMIT = 36  # characters of a layer label; longer names keep their tail


def render_png(result: CalibrationResult, title: str = "onnxbit calibration") -> bytes:
    """The PNG bytes of both charts. ConfigError naming the extra without matplotlib."""
    figure_class = require_matplotlib()
    rows = len(result.layers)
    # Each layer gets a fixed height so labels never overlap, however many there are.
    chart_height = max(3.2, 0.15 * rows * max(1, len(_precisions(result))) + 1.2)
    figure = figure_class(figsize=(14, chart_height + 1.6), dpi=100, layout="constrained")
    grid = figure.add_gridspec(1, 2, width_ratios=(1.45, 1))
    _sensitivity_axes(figure.add_subplot(grid[0]), result)
    # Many layers make a tall error chart: the search chart keeps about 5 inches, at the top.
    trajectory_height = min(chart_height, 5.0)
    right = grid[1].subgridspec(2, 1, height_ratios=(trajectory_height, chart_height - trajectory_height + 1e-3))
    _trajectory_axes(figure.add_subplot(right[0]), result)
    figure.suptitle(f"{title}\n{_summary(result)}", fontsize=12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def short_labels(names: list[str], limit: int = LABEL_LIMIT) -> list[str]:
    """Readable, distinct labels for ONNX node names: path segments split on '/',
    a segment dropped when the next one repeats it ("layers/layers.0" ->
    "layers.0"), the leading segments every name shares dropped, and names
    still too long keep their first and last segments. Names that would then
    look alike are left whole."""
    split = [_segments(name) for name in names]
    shared = 0
    while (len(split) > 1 and all(len(s) > shared + 1 for s in split)
           and len({s[shared] for s in split}) == 1):
        shared += 1
    labels = [_fit("/".join(s[shared:]), limit) for s in split]
    if len(set(labels)) < len(labels):  # shortening merged two names: keep them apart
        labels = list(names)
    return labels


def require_matplotlib():
    """matplotlib's Figure class; ConfigError naming the extra when matplotlib is missing.
    A bare Figure draws with Agg and leaves pyplot's global state (the user's
    backend, open windows) alone."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(f"writing a PNG needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure


def _precisions(result: CalibrationResult) -> list[str]:
    return [p for p in LADDER[:-1] if any(p in l.sensitivity for l in result.layers)]


def _summary(result: CalibrationResult) -> str:
    verdict = "met" if result.met else "NOT met"
    return (f"budget {result.budget}: {result.calibration_value:.5g} on {result.samples[0]} calibration samples, "
            f"{result.holdout_value:.5g} on {result.samples[1]} held out ({verdict}); "
            f"weights {result.size_ratio:.3f}x of float")


def _sensitivity_axes(axes, result: CalibrationResult) -> None:
    precisions = _precisions(result)
    errors = [l.sensitivity[p] for l in result.layers for p in precisions if l.sensitivity.get(p, 0) > 0]
    low = 10.0 ** (math.floor(math.log10(min(errors))) if errors else -6)
    high = 10.0 ** (math.ceil(math.log10(max(errors))) if errors else 0)
    high = max(high, low * 10)
    bar = 0.8 / max(1, len(precisions))
    for j, precision in enumerate(precisions):
        ys, widths, edges, lines = [], [], [], []
        for i, layer in enumerate(result.layers):
            if precision not in layer.sensitivity:
                continue
            chosen = layer.precision == precision
            ys.append(i - 0.4 + (j + 0.5) * bar)
            # An error of 0 has no place on a log axis: it is drawn as a stub at the axis' left end.
            widths.append(max(layer.sensitivity[precision], low * 1.05))
            edges.append("black" if chosen else "none")
            if layer.sensitivity[precision] <= 0:
                axes.annotate("0", (low, ys[-1]), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
            lines.append(1.6 if chosen else 0)
        axes.barh(ys, [w - low for w in widths], left=low, height=bar * 0.92, color=COLORS[precision],
                  edgecolor=edges, linewidth=lines, label=precision)
    names = short_labels([l.node for l in result.layers])
    axes.set_yticks(range(len(names)), names, fontsize=9, family="monospace")
    axes.set_ylim(max(1, len(names)) - 0.5, -0.5)  # first layer at the top, as in the model
    if not names or not errors:
        # top1 on a few samples often does not move for one layer: say so rather than show empty bars.
        note = ("no layer was calibrated" if not names else
                f"every error is 0: no layer alone changes {result.budget.metric}\non the calibration samples")
        axes.text(0.5, 0.5, note, transform=axes.transAxes, ha="center", va="center", fontsize=10,
                  bbox={"facecolor": "white", "edgecolor": "#bbbbbb"})
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    axes.grid(axis="x", which="major", color="#dddddd", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.set_xlabel(f"model output error with this layer alone quantized ({_error_name(result)}, log)")
    axes.set_title("Output error per layer and precision", fontsize=11, pad=22)
    # The chosen precision in words beside each row: also names a layer kept float (no bar outlined).
    for i, layer in enumerate(result.layers):
        name = "float" if layer.precision == "fp32" else layer.precision
        axes.annotate(name, (1.0, i), xycoords=("axes fraction", "data"), xytext=(4, 0),
                      textcoords="offset points", va="center", fontsize=8,
                      color=COLORS.get(layer.precision, "#444444"), fontweight="bold")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=COLORS[p], label=p) for p in precisions]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=1.6, label="chosen"))
    # Between the title and the bars: in reach of the top rows however tall the chart is.
    axes.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), fontsize=9,
                frameon=False, borderaxespad=0.2)


def _trajectory_axes(axes, result: CalibrationResult) -> None:
    points = result.trajectory or [(1.0, result.calibration_value)]
    sizes, values = [s for s, _ in points], [v for _, v in points]
    axes.plot(sizes, values, "-o", color="#1f77b4", markersize=5, label="search steps (calibration samples)")
    axes.plot([result.size_ratio], [result.holdout_value], "*", color="#9467bd", markersize=13,
              label=f"result on held-out samples ({result.holdout_value:.5g})")
    axes.axhline(result.budget.bound, color="#d62728", linestyle="--", linewidth=1.2, label=f"budget {result.budget}")
    axes.annotate("float", (sizes[0], values[0]), xytext=(-6, 6), textcoords="offset points", ha="right", fontsize=8)
    # The held-out check may raise layers after the search: the result's size is the star's, not the last step's.
    axes.annotate(f"result {result.size_ratio:.3f}x", (result.size_ratio, result.holdout_value), xytext=(8, -3),
                  textcoords="offset points", fontsize=8, va="top")
    axes.set_xlim(0, 1.05)
    bounds = (-1e9, result.budget.bound) if result.budget.met(math.inf) else (result.budget.bound, 1e9)
    axes.axhspan(*bounds, color="#d62728", alpha=0.06, linewidth=0)  # the side that misses the budget
    spread = max(values + [result.holdout_value, result.budget.bound]) - min(values + [result.holdout_value,
                                                                                      result.budget.bound])
    margin = spread * 0.15 or 1e-4
    axes.set_ylim(min(values + [result.holdout_value, result.budget.bound]) - margin,
                  max(values + [result.holdout_value, result.budget.bound]) + margin)
    axes.ticklabel_format(axis="y", useOffset=False)
    axes.grid(color="#dddddd", linewidth=0.8)
    axes.set_xlabel("weight size (x of float)")
    axes.set_ylabel(f"{result.budget.metric}")
    axes.set_title("Size and accuracy along the search", fontsize=11)
    axes.legend(fontsize=8, loc="best")


def _error_name(result: CalibrationResult) -> str:
    return result.budget.metric if result.budget.metric == "max_rel" else f"1 - {result.budget.metric}"


def _segments(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p] or [name]
    return [p for k, p in enumerate(parts) if not (k + 1 < len(parts) and parts[k + 1].startswith(p + "."))]


def _fit(label: str, limit: int) -> str:
    """The label, or its first segment (in transformers the block: "layer.3")
    and as many last segments as fit, the middle elided."""
    if len(label) <= limit:
        return label
    parts = label.split("/")
    head, kept = (parts[0] + "/…/", parts[-1]) if len(parts) > 2 else ("…/", parts[-1])
    for part in reversed(parts[1:-1]):
        if len(head) + len(part) + 1 + len(kept) > limit:
            break
        kept = f"{part}/{kept}"
    label = head + kept
    return label if len(label) <= limit else "…" + label[-(limit - 1):]
