"""The conversion report: one row per layer looked at, totals, model notes;
as JSON and as a rich summary table."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxbit.passes.base import LayerRecord


@dataclass
class ConversionReport:
    target: str
    preset: str | None
    layers: list[LayerRecord]
    notes: list[str] = field(default_factory=list)
    model_bytes_before: int = 0
    model_bytes_after: int = 0
    seconds: float = 0.0

    @property
    def converted(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.action in ("converted",)]

    @property
    def flagged(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.flag]

    @property
    def skipped(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.action == "skipped"]

    @property
    def listed(self) -> list[LayerRecord]:
        """Nodes shown for completeness that hold no weight (activation x activation products)."""
        return [r for r in self.layers if r.action == "listed"]

    @property
    def weight_bytes_before(self) -> int:
        return sum(r.bytes_before or 0 for r in self.converted)

    @property
    def weight_bytes_after(self) -> int:
        return sum(r.bytes_after or 0 for r in self.converted)

    def table_rows(self) -> list[LayerRecord]:
        """One row per node: its last record, with the folding passes that
        prepared it named in the note (the JSON keeps every record)."""
        by_node: dict[str, list[LayerRecord]] = {}
        for r in self.layers:
            by_node.setdefault(r.node, []).append(r)
        rows = []
        for records in by_node.values():
            last = records[-1]
            folds = [r.pass_name for r in records if r.action == "folded"]
            if folds and last.action != "folded":
                folded = "QAT fold: " + ", ".join(name.removeprefix("fold-") for name in folds)
                extra = "" if last.reason.startswith("QAT ternary weight") else last.reason
                last = dataclasses.replace(last, reason="; ".join(filter(None, [folded, extra])))
            rows.append(last)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "preset": self.preset,
            "summary": {
                "layers_converted": len(self.converted),
                "layers_skipped": len(self.skipped),
                "layers_listed": len(self.listed),
                "layers_folded": sum(r.action == "folded" for r in self.layers),
                "layers_flagged": len(self.flagged),
                "weight_bytes_before": self.weight_bytes_before,
                "weight_bytes_after": self.weight_bytes_after,
                "model_bytes_before": self.model_bytes_before,
                "model_bytes_after": self.model_bytes_after,
                "seconds": round(self.seconds, 4),
            },
            "notes": list(self.notes),
            "layers": [_finite(r.to_json()) for r in self.layers],
        }

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(self.json_text())

    def render(self, console=None) -> None:
        """Print the per-layer table and the totals with rich."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        table = Table(title=f"onnxbit conversion (target {self.target})", show_lines=False, expand=True)
        table.add_column("layer", overflow="fold", ratio=3)
        table.add_column("stored as", overflow="fold", ratio=2)
        for column in ("bits/w", "before", "after", "SQNR dB"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("note", overflow="fold", ratio=4)
        for r in self.table_rows():
            sqnr = r.weight_error.get("sqnr_db")
            stored = r.storage if r.action == "converted" else f"{r.action} ({r.precision or 'float'})"
            table.add_row(f"{r.node} ({r.op_type})", stored,
                          "" if r.bits_per_weight is None else f"{r.bits_per_weight:.2f}",
                          human_bytes(r.bytes_before), human_bytes(r.bytes_after),
                          "" if sqnr is None else ("exact" if math.isinf(sqnr) else f"{sqnr:.1f}"),
                          "; ".join(filter(None, [f"[bold red]LOW ACCURACY[/]: {r.flag}" if r.flag else "", r.reason])))
        console.print(table)
        before, after = self.weight_bytes_before, self.weight_bytes_after
        ratio = f" ({before / after:.1f}x smaller)" if after else ""
        listed = f", {len(self.listed)} without weights" if self.listed else ""
        console.print(f"{len(self.converted)} layer(s) converted, {len(self.skipped)} skipped{listed}; converted weights "
                      f"{human_bytes(before)} as float -> {human_bytes(after)}{ratio}; model "
                      f"{human_bytes(self.model_bytes_before)} -> {human_bytes(self.model_bytes_after)} "
                      f"in {self.seconds:.2f} s", soft_wrap=True)
        for note in self.notes:
            console.print(f"note: {note}", soft_wrap=True)
        if self.growth_summary():
            console.print(f"[bold red]warning[/]: {self.growth_summary()}", soft_wrap=True)
        if self.flagged:
            console.print(f"[bold red]warning[/]: {self.flagged_summary()}", soft_wrap=True)

    def growth_summary(self) -> str:
        """'' unless the converted model is larger than the original."""
        grown = self.model_bytes_after - self.model_bytes_before
        if grown <= 0 or not self.model_bytes_before:
            return ""
        return (f"the converted model is larger than the original ({human_bytes(self.model_bytes_before)} -> "
                f"{human_bytes(self.model_bytes_after)}, +{human_bytes(grown)}); the notes above say why")

    def flagged_summary(self) -> str:
        names = ", ".join(f"'{r.node}'" for r in self.flagged[:5]) + (" ..." if len(self.flagged) > 5 else "")
        return (f"{len(self.flagged)} layer(s) lost much accuracy (weight SQNR below the threshold): {names}; "
                "check the outputs with `onnxbit verify`, or use a higher precision for them (--strict makes "
                "this an error)")


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: an exact reconstruction's SQNR is written as null."""
    err = record.get("weight_error")
    if err:
        record["weight_error"] = {k: (v if math.isfinite(v) else None) for k, v in err.items()}
    return record
