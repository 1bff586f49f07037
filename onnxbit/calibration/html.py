"""A calibration result as one self-contained HTML page: each layer's output
error at every precision (the chosen one marked), the size / accuracy path
the search took, and the table. Plain SVG, no scripts, no external files."""

from __future__ import annotations

import html
import math

from onnxbit.calibration.result import LADDER, CalibrationResult

COLORS = {"binary": "#9467bd", "ternary": "#d62728", "int2": "#8c564b", "int4": "#ff7f0e", "int8": "#2ca02c",
          "fp32": "#1f77b4"}


def render_html(result: CalibrationResult, title: str = "onnxbit calibration") -> str:
    sections = [f"<h1>{html.escape(title)}</h1>",
                f"<p>Budget <b>{html.escape(str(result.budget))}</b>: {result.calibration_value:.5g} on "
                f"{result.samples[0]} calibration samples, {result.holdout_value:.5g} on {result.samples[1]} held-out "
                f"samples ({'met' if result.met else 'NOT met'}). Weights at {result.size_ratio:.3f}x of float.</p>",
                "<h2>Output error per layer and precision</h2>",
                "<p>The model's output error (1 - metric, or max_rel) with that layer alone quantized; "
                "the chosen precision has a black outline. Log scale.</p>",
                _sensitivity_svg(result),
                "<h2>Size and accuracy along the search</h2>",
                _trajectory_svg(result),
                "<h2>Layers</h2>", _table(result)]
    if result.adjustments:
        items = "".join(f"<li>{html.escape(a['layer'])}: {a['from']} &rarr; {a['to']} ({html.escape(a['why'])})</li>"
                        for a in result.adjustments)
        sections += ["<h2>Every change</h2>", f"<ol>{items}</ol>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}svg{background:#fafafa;border:1px solid #ddd}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")


def _sensitivity_svg(result: CalibrationResult) -> str:
    precisions = [p for p in LADDER[:-1] if any(p in l.sensitivity for l in result.layers)]
    errors = [l.sensitivity[p] for l in result.layers for p in precisions if l.sensitivity.get(p, 0) > 0]
    low = math.floor(math.log10(min(errors))) if errors else -6
    high = math.ceil(math.log10(max(errors))) if errors else 0
    high = max(high, low + 1)
    row, label_width, width = 22, 260, 560
    height = row * len(result.layers) + 40
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_width + width + 20}' height='{height}'>"]
    for i, layer in enumerate(result.layers):
        y = 20 + i * row
        parts.append(f"<text x='{label_width - 6}' y='{y + 14}' font-size='11' text-anchor='end'>"
                     f"{html.escape(_short(layer.node))}</text>")
        bar = (row - 4) / max(1, len(precisions))
        for j, p in enumerate(precisions):
            error = layer.sensitivity.get(p, 0.0)
            fraction = 0.0 if error <= 0 else (math.log10(error) - low) / (high - low)
            length = max(1.0, fraction * width)
            outline = " stroke='black' stroke-width='1.5'" if p == layer.precision else ""
            parts.append(f"<rect x='{label_width}' y='{y + j * bar:.1f}' width='{length:.1f}' height='{bar - 1:.1f}' "
                         f"fill='{COLORS[p]}'{outline}><title>{html.escape(layer.node)} @ {p}: {error:.3g}</title></rect>")
    for exponent in range(low, high + 1):
        x = label_width + (exponent - low) / (high - low) * width
        parts.append(f"<text x='{x:.1f}' y='{height - 4}' font-size='10' text-anchor='middle'>1e{exponent}</text>")
    legend = " ".join(f"<tspan fill='{COLORS[p]}'>&#9632; {p}</tspan>" for p in precisions)
    parts.append(f"<text x='{label_width}' y='12' font-size='11'>{legend}</text></svg>")
    return "".join(parts)


def _trajectory_svg(result: CalibrationResult) -> str:
    points = result.trajectory or [(1.0, result.calibration_value)]
    width, height, pad = 560, 260, 40
    values = [v for _, v in points] + [result.budget.bound]
    low, high = min(values), max(values)
    high = high if high > low else low + 1e-6

    def xy(size: float, value: float) -> tuple[float, float]:
        return pad + size * (width - 2 * pad), height - pad - (value - low) / (high - low) * (height - 2 * pad)

    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in points))
    _, budget_y = xy(0, result.budget.bound)
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='#1f77b4'><title>{s:.3f}x: {v:.5g}</title></circle>"
                   for (s, v), (x, y) in ((p, xy(*p)) for p in points))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"
            f"<line x1='{pad}' y1='{budget_y:.1f}' x2='{width - pad}' y2='{budget_y:.1f}' stroke='#d62728' "
            f"stroke-dasharray='4'/><text x='{width - pad}' y='{budget_y - 4:.1f}' font-size='10' text-anchor='end'>"
            f"budget {html.escape(str(result.budget))}</text>"
            f"<polyline points='{path}' fill='none' stroke='#1f77b4'/>{dots}"
            + "".join(f"<text x='{xy(t, low)[0]:.1f}' y='{height - pad + 14}' font-size='10' text-anchor='middle'>"
                      f"{t:g}x</text>" for t in (0, 0.25, 0.5, 0.75, 1.0))
            + f"<text x='{pad - 4}' y='{xy(0, high)[1] + 4:.1f}' font-size='10' text-anchor='end'>{high:.4g}</text>"
            f"<text x='{pad - 4}' y='{xy(0, low)[1] + 4:.1f}' font-size='10' text-anchor='end'>{low:.4g}</text>"
            f"<text x='{width / 2}' y='{height - 8}' font-size='11' text-anchor='middle'>weight size (x of float)"
            f"</text><text x='{pad}' y='{pad - 10}' font-size='11'>{html.escape(result.budget.metric)} on "
            f"calibration samples</text></svg>")


def _table(result: CalibrationResult) -> str:
    header = "".join(f"<th>{h}</th>" for h in ("layer", "K x N", "precision", *(f"error @{p}" for p in LADDER[:-1]),
                                                "bytes", "float bytes"))
    rows = "".join(
        f"<tr><td>{html.escape(l.node)}</td><td>{l.k} x {l.n}</td><td>{l.precision}</td>"
        + "".join(f"<td>{l.sensitivity[p]:.3g}</td>" if p in l.sensitivity else "<td></td>" for p in LADDER[:-1])
        + f"<td>{l.weight_bytes()}</td><td>{l.weight_bytes('fp32')}</td></tr>" for l in result.layers)
    return f"<table><tr>{header}</tr>{rows}</table>"


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else "..." + name[-(limit - 3):]
