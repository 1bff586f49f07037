"""TernaryMatMul with static int8 activations (act_quant 2) against per-token
ones (act_quant 1): same weights, same inputs, one process, runs interleaved,
medians. The static mode skips the per-row absmax pass, so the difference is
that pass's cost at each M.

    python -m onnxbit.bench.act_quant [--k 4096] [--n 4096] [--m 1,8,128] [--rounds 200] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxbit import runtime
from onnxbit.bench.timing import interleave, median_ms, time_ns
from onnxbit.codecs import pack_ternary
from onnxbit.ops.schemas import DOMAIN, OPSET_VERSION


def model(packed: np.ndarray, k: int, n: int, act_quant: int, act_scale: float | None):
    attrs = {"K": k, "N": n, "format": "2bit", "act_quant": act_quant}
    if act_scale is not None:
        attrs["act_scale"] = act_scale
    node = helper.make_node("TernaryMatMul", ["A", "B", "scales"], ["Y"], domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], "tmm", [helper.make_tensor_value_info("A", 1, ["m", k])],
                              [helper.make_tensor_value_info("Y", 1, ["m", n])],
                              initializer=[numpy_helper.from_array(packed, "B"),
                                           numpy_helper.from_array(np.array([0.5], np.float32), "scales")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    proto.ir_version = 8
    return proto


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--m", default="1,8,128")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, size=(args.n, args.k)).astype(np.int8)
    packed = pack_ternary(codes, "2bit")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    # A second, identical per-token session shows the noise floor (its ratio should be 1).
    sessions = {"token": runtime.InferenceSession(model(packed, args.k, args.n, 1, None), options),
                "static": runtime.InferenceSession(model(packed, args.k, args.n, 2, 33.0), options),
                "token again": runtime.InferenceSession(model(packed, args.k, args.n, 1, None), options)}
    print(f"K={args.k} N={args.n}, {args.threads} thread(s), {args.rounds} interleaved rounds, medians")
    for m in (int(v) for v in args.m.split(",")):
        a = rng.standard_normal((m, args.k)).astype(np.float32)
        probes = {name: (lambda s=s: {"ms": time_ns(lambda: s.run(None, {"A": a}))})
                  for name, s in sessions.items()}
        for session in sessions.values():  # warm up
            session.run(None, {"A": a})
        samples = interleave(probes, args.rounds)
        token, static, again = (median_ms(samples[name]["ms"]) for name in sessions)
        print(f"M={m:4d}: token {token:.4f} ms, static {static:.4f} ms, token/static {token / static:.3f}x "
              f"(noise floor: token/token again {token / again:.3f}x)")


if __name__ == "__main__":
    main()
