"""Runs TernaryMatMul models in whatever onnxruntime this interpreter has and
checks them against the numpy reference; used by check_ort_versions.sh.

Needs: onnxruntime, onnx, numpy, cffi; PYTHONPATH holding the repo root and
tests/; ONNXBIT_LIBRARY pointing at the built library. Exits non-zero on any
mismatch or missing error."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort

from onnxbit.reference.ternary_matmul import ternary_matmul_reference
from onnxbit.runtime import InferenceSession
from op_models import NODE_NAME, ternary_matmul_model


def main() -> int:
    rng = np.random.default_rng(7)
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    failures = 0
    for fmt in ("2bit", "base3"):
        for act_quant in (0, 1):
            for constant in (True, False):
                k, n = 77, 19
                codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
                scales = rng.uniform(0.5, 2, size=(n, 3)).astype(np.float32)
                bias = rng.standard_normal(n).astype(np.float32)
                op = ternary_matmul_model(codes, scales, bias, fmt=fmt, group_size=32,
                                          act_quant=act_quant, constant=constant,
                                          a_shape=("batch", "k"))
                a = rng.standard_normal((5, k)).astype(np.float32)
                options = ort.SessionOptions()
                options.intra_op_num_threads = 2
                y = InferenceSession(op.model, sess_options=options).run(None, op.feeds(a))[0]
                expected = ternary_matmul_reference(a, codes, scales, 32, act_quant, bias)
                ok = (np.array_equal(y, expected) if act_quant
                      else np.allclose(y, expected, rtol=1e-5, atol=1e-4))
                failures += not ok
                print(f"  {fmt:5s} act_quant={act_quant} constant={constant!s:5s} "
                      f"{'ok' if ok else 'MISMATCH'}")

    codes = np.zeros((8, 2), np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32))
    op.model.graph.initializer[0].raw_data = b"\xff" * 4  # 2bit code 3: invalid
    a = np.ones((1, 8), np.float32)
    version = tuple(int(part) for part in ort.__version__.split(".")[:2])
    if version < (1, 16):
        # Before API 16 a kernel cannot return a status: the library reports
        # the error on stderr and leaves Y unset.
        y = InferenceSession(op.model).run(None, op.feeds(a))[0]
        failures += y is not None
        print(f"  corrupt constant B (API < 16: stderr only), Y left unset: "
              f"{'ok' if y is None else y}")
        return 1 if failures else 0
    try:
        InferenceSession(op.model)
        print("  corrupt constant B: session created, expected an error")
        failures += 1
    except Exception as error:  # onnxruntime's exception types differ across versions
        named = NODE_NAME in str(error) and "invalid 2bit code" in str(error)
        failures += not named
        print(f"  corrupt constant B fails session creation: {'ok' if named else error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
