"""`onnxbit bench codecs`: runs every ISA and reports every operation."""

import json

from click.testing import CliRunner

from onnxbit import native
from onnxbit.cli.main import main

OPERATIONS = [f"{op} {fmt}" for fmt in ("2bit", "base3") for op in ("decode", "encode", "quantize+pack")]


def test_bench_codecs_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "codecs.json"
    result = CliRunner().invoke(main, ["bench", "codecs", "--mb", "1", "--repeat", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for isa in native.available_isas():
        assert isa in result.output
    report = json.loads(out.read_text())
    assert (report["mb"], report["repeat"]) == (1, 2)
    rows = {(r["isa"], r["metric"]): r["gb_per_s"] for r in report["results"]}
    assert set(rows) == {(isa, op) for isa in native.available_isas() for op in OPERATIONS}
    assert all(rate > 0 for rate in rows.values())


def test_bench_codecs_rejects_zero_sizes():
    result = CliRunner().invoke(main, ["bench", "codecs", "--mb", "0"])
    assert result.exit_code != 0 and "--mb" in result.output
