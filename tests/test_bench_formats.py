"""`onnxbit bench formats`: the entropy bound and bits per weight it reports."""

import json
import math

import numpy as np
from click.testing import CliRunner

from onnxbit.bench.formats import code_entropy_bits, synthetic_codes, tensor_sizes
from onnxbit.cli.main import main


def test_entropy_of_known_distributions():
    assert math.isclose(code_entropy_bits(np.array([-1, 0, 1] * 10)), math.log2(3))
    assert math.isclose(code_entropy_bits(np.array([0, 0, -1, 1] * 10)), 1.5)
    assert code_entropy_bits(np.zeros(7, np.int8)) == 0.0


def test_sizes_count_rows_padding_and_scales():
    codes = synthetic_codes(3, 7, 0.5, np.random.default_rng(0))
    sizes = tensor_sizes("t", codes, scale_count=3)
    assert sizes.bits["2bit"] == sizes.bits["base3"] == (8 * 3 * 2 + 96) / 21
    assert sizes.bits["rans"] > sizes.bits["base3"]  # the stream's header outweighs 21 weights
    assert sizes.best == "base3"  # ties go to the storage default
    assert sizes.bits["auto"] == sizes.bits["base3"]
    assert math.isclose(sizes.entropy_bits, code_entropy_bits(codes) + 96 / 21)


def test_cli_reports_every_tensor_kind_and_format(tmp_path):
    out = tmp_path / "formats.json"
    result = CliRunner().invoke(main, ["bench", "formats", "--size", "256", "--repeat", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    sources = [t["source"] for t in data["tensors"]]
    assert any(s.startswith("qat ") for s in sources) and any(s.startswith("absmean ") for s in sources)
    assert [s for s in sources if s.startswith("synthetic")] == [
        "synthetic 10% zeros", "synthetic 33% zeros", "synthetic 50% zeros", "synthetic 90% zeros",
        "synthetic 99% zeros"]
    assert {s["fmt"] for s in data["speeds"]} == {"2bit", "base3", "rans", "zeroruns", "sparse"}
    assert all(s["decode_gb_per_s"] > 0 and s["session_ms"] > 0 for s in data["speeds"])
    for tensor in data["tensors"]:  # nothing beats the order-0 bound; auto is never above base3
        assert min(tensor["bits"].values()) >= tensor["entropy_bits"] - 1e-9
        assert tensor["bits"]["auto"] <= tensor["bits"]["base3"]
    synthetic = {t["source"]: t for t in data["tensors"] if t["source"].startswith("synthetic")}
    assert synthetic["synthetic 90% zeros"]["bits"]["auto"] < 0.7
    # auto is the smallest of base3 and every stream format.
    for tensor in data["tensors"]:
        assert tensor["bits"]["auto"] == min(tensor["bits"][f] for f in ("base3", "rans", "zeroruns", "sparse"))
