"""The sample model bundled with the package (a copy of a fixture in models/).

`pip install .` installs models/fixtures/bitnet_online_dynamo.onnx and its
inputs into onnxbit/samples/; a source checkout used in place reads them from
models/fixtures/.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_MODEL = "bitnet_online_dynamo.onnx"
SAMPLE_INPUTS = "bitnet_inputs.npz"

_PACKAGE_DIR = Path(__file__).resolve().parent


def sample_path(name: str) -> Path:
    for folder in (_PACKAGE_DIR / "samples", _PACKAGE_DIR.parent / "models" / "fixtures"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"the bundled sample {name} is missing from {_PACKAGE_DIR / 'samples'}; "
                            "reinstall onnxbit with `pip install .` from a full checkout")
