"""onnxruntime unloads the custom-op library when the sessions that registered it
are gone and loads it again for the next one. The library's per-thread caches
(conv scratch buffers, matmul scratch blocks) must survive that: a pthread key
created per load and never deleted ran out after about 1000 loads, and the conv
buffers then took another library's thread value for their own and corrupted
the heap ("free(): invalid pointer"). A child process makes 1100 sessions one
after the other, each running a TernaryConv (the per-pixel depthwise path,
which uses a thread buffer on the calling thread) and a TernaryMatMul."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime as ort
    sys.path.insert(0, {tests!r})
    from op_models import ternary_conv_model, ternary_matmul_model
    from onnxbit import runtime

    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, size=(8, 1, 3, 3)).astype(np.int8)
    conv = ternary_conv_model(codes, np.ones(8, np.float32), None, act_quant=3,
                              conv_attrs={{"group": 8, "pads": [1, 1, 1, 1]}})
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    w = rng.integers(-1, 2, size=(64, 32)).astype(np.int8)
    matmul = ternary_matmul_model(w, np.ones(1, np.float32), act_quant=1)
    a = rng.standard_normal((3, 64)).astype(np.float32)
    first = None
    for i in range({sessions}):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        model = conv if i % 2 == 0 else matmul
        feeds = model.feeds(x) if i % 2 == 0 else model.feeds(a)
        y = runtime.InferenceSession(model.model, sess_options=options).run(None, feeds)[0]
        if i < 2:
            first = (first or []) + [y]
        elif not np.array_equal(y, first[i % 2]):
            raise SystemExit(f"session {{i}}: a different result")
    print("ok")
""")


def test_a_thousand_library_loads_keep_the_thread_caches_sound():
    code = CHILD.format(tests=str(TESTS), sessions=1100)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])
