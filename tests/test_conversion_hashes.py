"""Every committed fixture x preset x target converts to the same bytes as
recorded in tests/data/conversion_hashes.json.

Refactoring the converter must not change a single output byte; a change
that is meant to change outputs regenerates the record on purpose:

    PYTHONPATH=. python tests/test_conversion_hashes.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
RECORD = Path(__file__).resolve().parent / "data" / "conversion_hashes.json"
CONFIGS = {
    "bitnet": {"preset": "bitnet"},
    "bitnet-base3": {"preset": "bitnet", "default": {"format": "base3"}},
    "int4": {"preset": "int4"},
    "int8": {"preset": "int8"},
}
TARGETS = ("onnxbit", "ort", "onnx")


def conversion_hash(fixture: Path, config: dict, target: str, folder: Path) -> str:
    from onnxbit.convert import convert
    from onnxbit.errors import OnnxbitError

    output = folder / f"{fixture.stem}.onnx"
    try:
        convert(fixture, config=config, target=target, output_path=output, progress=False)
    except OnnxbitError as exc:
        return f"error: {type(exc).__name__}"
    return hashlib.sha256(output.read_bytes()).hexdigest()


def all_cases() -> list[tuple[str, str, str]]:
    return [(f.name, c, t) for f in sorted(FIXTURES.glob("*.onnx")) for c in CONFIGS for t in TARGETS]


def compute_record() -> dict[str, str]:
    record = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, config, target in all_cases():
            record[f"{name}|{config}|{target}"] = conversion_hash(FIXTURES / name, CONFIGS[config], target,
                                                                  Path(folder))
    return record


@pytest.mark.parametrize("name,config,target", all_cases())
def test_conversion_output_is_byte_identical(name, config, target, tmp_path):
    expected = json.loads(RECORD.read_text())[f"{name}|{config}|{target}"]
    assert conversion_hash(FIXTURES / name, CONFIGS[config], target, tmp_path) == expected


if __name__ == "__main__" and "--write" in sys.argv:
    RECORD.write_text(json.dumps(compute_record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}")


SEEDED_RUN = """
import hashlib, sys
from onnxbit.convert import convert
convert(sys.argv[1], preset="int4", target="onnxbit", output_path=sys.argv[2], progress=False)
print(hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest())
"""


def test_output_does_not_depend_on_the_hash_seed(tmp_path):
    # A model that gets two custom domains (TernaryMatMul from the QAT fold,
    # MatMulNBits for int4): their import order once followed set iteration.
    import os
    import subprocess

    digests = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", SEEDED_RUN, str(FIXTURES / "bitnet_online_dynamo.onnx"),
                              str(tmp_path / f"out{seed}.onnx")], capture_output=True, text=True, env=env, check=True)
        digests.add(run.stdout.strip())
    assert len(digests) == 1
