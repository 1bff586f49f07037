"""Storage formats on real and synthetic ternary tensors: bits per weight
against the entropy bound, codec throughput, session-creation time.

Tensors:

* the QAT ternary tensors of the committed fixtures (converted with the
  bitnet preset; their codes are the trained ones),
* the float fixture's weights ternarized with BitNet absmean,
* synthetic [N, K] tensors at 10, 33, 50 and 90 % zeros (signs even).

Per tensor and format: bits per weight = (B bytes + scales bytes) x 8 /
weights, and the bound a memoryless code cannot beat, per tensor:
n * H(p) bits + 32 bits per float32 scale, where n is the tensor's number of
codes and H(p) = -sum p_c log2 p_c over the empirical frequencies p of -1, 0
and +1 in it (order 0). The goals: `auto` never larger than base3 and within
GAP_GOAL (3 %) of that bound on every tensor.

Per format and synthetic zero fraction: encode / decode GB/s of int8 codes
(one thread, the active ISA; goal: decode >= 1 GB/s), and per format the
median time to create an onnxruntime session holding one weight at a third
zeros. Stream formats' (rans, zeroruns, sparse) encode/decode include the
base3 packing/unpacking around the stream (int8 codes in and out, like the
row formats).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onnxbit import codecs, formats, native, streams

# Every storage a TernaryMatMul can hold, then the per-tensor choice.
STORAGES = formats.OP_FORMATS + (formats.AUTO,)

QAT_FIXTURES = ("digits_qat_mlp.onnx", "bitnet_online_dynamo.onnx")
FLOAT_FIXTURES = ("digits_float_mlp.onnx",)
SYNTHETIC_ZEROS = (0.10, 0.33, 0.50, 0.90, 0.99)
GAP_GOAL = 0.03  # auto may exceed the entropy bound by this fraction at most
DECODE_GOAL_GB_PER_S = 1.0


@dataclass
class TensorSizes:
    source: str                  # "qat digits_qat_mlp.onnx /fc1", "synthetic 90% zeros", ...
    k: int
    n: int
    zero_fraction: float
    entropy_bits: float          # empirical code entropy + scales, bits per weight
    bits: dict[str, float] = field(default_factory=dict)  # storage -> bits per weight, scales included

    @property
    def auto_gap(self) -> float:
        """auto's size over the entropy bound, as a fraction (0.012 = +1.2 %)."""
        return self.bits[formats.AUTO] / self.entropy_bits - 1

    @property
    def meets_goals(self) -> bool:
        """auto is no larger than base3 and within GAP_GOAL of the bound."""
        return (self.bits[formats.AUTO] <= self.bits[formats.STREAM_ROW_FORMAT]
                and self.auto_gap <= GAP_GOAL)

    @property
    def best(self) -> str:
        stored = [f for f in self.bits if f != formats.AUTO]
        return min(stored, key=lambda f: (self.bits[f], f != formats.STORAGE_DEFAULT))


@dataclass
class FormatSpeed:
    fmt: str
    zero_fraction: float         # of the synthetic [n, k] tensor timed
    encode_gb_per_s: float       # GB of int8 codes in per second (median run)
    decode_gb_per_s: float       # GB of int8 codes out per second (median run)
    session_ms: float | None     # median onnxruntime session creation, one [n, k] weight (a third zeros only)
    encode_best_gb_per_s: float = 0.0  # the same from the fastest run
    decode_best_gb_per_s: float = 0.0


@dataclass
class FormatsBench:
    isa: str
    tensors: list[TensorSizes]
    speeds: list[FormatSpeed]

    def as_dict(self) -> dict:
        return {"isa": self.isa, "tensors": [asdict(t) for t in self.tensors],
                "speeds": [asdict(s) for s in self.speeds]}


def code_entropy_bits(codes: np.ndarray) -> float:
    """Empirical entropy of the codes, bits per code (order 0)."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).reshape(-1) + 1, minlength=3)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def tensor_sizes(source: str, codes_nk: np.ndarray, scale_count: int) -> TensorSizes:
    """Sizes of one tensor, W^T codes [N, K] with `scale_count` float32 scales, in every format."""
    n, k = codes_nk.shape
    weights = n * k
    scale_bits = 32 * scale_count
    sizes = TensorSizes(source, k, n, float(np.mean(codes_nk == 0)),
                        code_entropy_bits(codes_nk) + scale_bits / weights)
    for name in formats.NAMES:
        sizes.bits[name] = (8 * n * formats.get(name).row_bytes(k) + scale_bits) / weights
    for name in formats.STREAMS:
        sizes.bits[name] = (8 * streams.pack(name, codes_nk).nbytes + scale_bits) / weights
    # auto: the smallest of base3 and every stream, as the onnxbit target chooses.
    sizes.bits[formats.AUTO] = min(sizes.bits[name] for name in (formats.STREAM_ROW_FORMAT, *formats.STREAMS))
    return sizes


def _ternary_layers(path: Path):
    """(node name, codes [N, K], scale count) of every TernaryMatMul a bitnet conversion of `path` makes."""
    import onnxbit
    from onnx import numpy_helper

    model = onnxbit.quantize(str(path), preset="bitnet", target="onnxbit")
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "TernaryMatMul":
            continue
        attrs = {a.name: a for a in node.attribute}
        k, n, fmt = attrs["K"].i, attrs["N"].i, attrs["format"].s.decode()
        packed = numpy_helper.to_array(constants[node.input[1]]).reshape(n, -1)
        scales = numpy_helper.to_array(constants[node.input[2]])
        yield node.name, codecs.unpack_ternary(packed, k, fmt), scales.size


def _float_weights(path: Path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        w = numpy_helper.to_array(tensor)
        if w.ndim == 2 and min(w.shape) >= 8 and w.dtype == np.float32:
            yield tensor.name, w


def _sample(name: str) -> Path | None:
    """A fixture installed with the package (onnxbit/samples) or in the checkout."""
    from onnxbit.samples import sample_path

    try:
        return sample_path(name)
    except FileNotFoundError:
        return None


def synthetic_codes(n: int, k: int, zero_fraction: float, rng: np.random.Generator) -> np.ndarray:
    nonzero = rng.random((n, k)) >= zero_fraction
    signs = np.where(rng.random((n, k)) < 0.5, -1, 1)
    return (nonzero * signs).astype(np.int8)


def measure_sizes(n: int = 1024, k: int = 1024, seed: int = 0) -> list[TensorSizes]:
    from onnxbit.quant.ternary import bitnet_absmean

    rng = np.random.default_rng(seed)
    results = []
    for name in QAT_FIXTURES:
        if (path := _sample(name)) is not None:
            for node, codes, scale_count in _ternary_layers(path):
                results.append(tensor_sizes(f"qat {name} {node}", codes, scale_count))
    for name in FLOAT_FIXTURES:
        if (path := _sample(name)) is not None:
            for tensor, w in _float_weights(path):
                codes_kn, gamma = bitnet_absmean(w)
                results.append(tensor_sizes(f"absmean {name} {tensor}", np.ascontiguousarray(codes_kn.T),
                                            np.asarray(gamma).size))
    for zeros in SYNTHETIC_ZEROS:
        results.append(tensor_sizes(f"synthetic {zeros:.0%} zeros", synthetic_codes(n, k, zeros, rng), 1))
    return results


def _seconds(fn, repeat: int) -> tuple[float, float]:
    """(median, fastest) of `repeat` timed runs after a warm-up. The fastest is
    what one uncontended core does; on a loaded machine the median is not."""
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def _median_seconds(fn, repeat: int) -> float:
    return _seconds(fn, repeat)[0]


def _stored(fmt: str, codes_nk: np.ndarray) -> np.ndarray:
    return streams.pack(fmt, codes_nk) if fmt in formats.STREAMS else codecs.pack_ternary(codes_nk, fmt)


def _session_ms(fmt: str, codes_nk: np.ndarray, repeat: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from onnxbit import checksum
    from onnxbit.ops.schemas import DOMAIN, OPSET_VERSION
    from onnxbit.runtime import InferenceSession

    n, k = codes_nk.shape
    packed = _stored(fmt, codes_nk)
    scales = np.ones(1, np.float32)
    node = helper.make_node("TernaryMatMul", ["A", "B", "scales"], ["Y"], domain=DOMAIN, name="bench",
                            K=k, N=n, format=fmt, act_quant=1,
                            crc32c=checksum.packed_weight_crc32c(packed, scales))
    graph = helper.make_graph([node], "bench", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])],
                              initializer=[numpy_helper.from_array(packed, "B"),
                                           numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    data = model.SerializeToString()
    del onnx

    def create():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        InferenceSession(data, sess_options=options)

    return 1e3 * _median_seconds(create, repeat)


SESSION_ZEROS = 0.33


def measure_speeds(n: int = 2048, k: int = 2048, repeat: int = 5, seed: int = 1) -> list[FormatSpeed]:
    """Every format on every synthetic zero fraction; session creation at a third zeros."""
    rng = np.random.default_rng(seed)
    results = []
    for zeros in SYNTHETIC_ZEROS:
        codes = synthetic_codes(n, k, zeros, rng)
        for fmt in formats.OP_FORMATS:
            packed = _stored(fmt, codes)
            encode = _seconds(lambda: _stored(fmt, codes), repeat)
            if fmt in formats.STREAMS:
                decode = _seconds(lambda: streams.unpack(fmt, packed, k, n), repeat)
            else:
                decode = _seconds(lambda: codecs.unpack_ternary(packed, k, fmt), repeat)
            session = _session_ms(fmt, codes, repeat) if zeros == SESSION_ZEROS else None
            gb = codes.nbytes / 1e9
            results.append(FormatSpeed(fmt, zeros, gb / encode[0], gb / decode[0], session,
                                       gb / encode[1], gb / decode[1]))
    return results


def run_formats_bench(n: int = 1024, k: int = 1024, repeat: int = 5) -> FormatsBench:
    return FormatsBench(native.isa(), measure_sizes(n, k), measure_speeds(2 * n, 2 * k, repeat))
