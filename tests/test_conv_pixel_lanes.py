"""TernaryConv's pixel-lanes path (csrc/conv/tconv_pixel_lanes*.c): stride-1
convs with act_quant 1 or 2 (group by group) or 3 (ungrouped), and 2-D stride-2
ones with act_quant 1 or 2 (on the input's phase planes), on AVX-512 VNNI and
on AVX2, output pixels in the vector lanes. It must equal the numpy reference bit for bit on every shape it
takes (kernel sizes, asymmetric pads, dilation, channel counts that are not a
multiple of 4, widths that are not a multiple of 16, tiny planes, batches,
NaN and Inf windows, with and without bias); ONNXBIT_CONV_PATH=pixel_lanes
makes it take every eligible call whatever its size rule, and the library's
run counter shows it really ran (only on AVX-512 and AVX2: the other ISAs
keep their paths and must stay exact too). On any x86 CPU with AVX2 the kernel also runs
on stand-ins for its intrinsics (tests/native), against the channels-last path."""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxbit import native, runtime
from onnxbit.reference.ternary_conv import ternary_conv_reference
from op_models import random_scales, ternary_conv_model

LANES_ISAS = ("avx2", "avx512")  # the ISAs with a pixel-lanes kernel

# name: (x shape, weight shape [M, C, *kernel], conv attributes)
SHAPES = {
    "1x1": ((1, 16, 5, 7), (24, 16, 1, 1), {}),
    "1x1_odd_channels_tail": ((1, 37, 9, 11), (19, 37, 1, 1), {}),  # 99 pixels: a partial last tile read in place
    "1x1_batch2_tail": ((2, 9, 5, 5), (7, 9, 1, 1), {}),  # image 0's partial tile reads on into image 1
    "1x1_exact_tiles": ((1, 8, 8, 16), (6, 8, 1, 1), {}),  # 128 pixels, two full tiles
    "1x1_padded": ((1, 12, 7, 7), (10, 12, 1, 1), {"pads": [1, 0, 0, 2]}),
    "3x3_pad1": ((1, 8, 9, 9), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3_no_pad": ((1, 5, 10, 21), (7, 5, 3, 3), {}),
    "3x3_asym_pads": ((1, 6, 12, 13), (13, 6, 3, 3), {"pads": [0, 1, 2, 0]}),
    "5x5": ((1, 7, 11, 19), (9, 7, 5, 5), {"pads": [2, 2, 2, 2]}),
    "3x1": ((1, 9, 13, 6), (11, 9, 3, 1), {"pads": [1, 0, 1, 0]}),
    "1x3_wide": ((1, 3, 4, 70), (5, 3, 1, 3), {"pads": [0, 1, 0, 1]}),
    "dilation": ((1, 3, 13, 12), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    "tiny_plane": ((1, 4, 1, 1), (3, 4, 1, 1), {}),
    "tiny_plane_padded": ((1, 2, 2, 3), (7, 2, 3, 3), {"pads": [1, 1, 1, 1]}),
    "one_channel": ((1, 1, 6, 9), (5, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    "batch3": ((3, 10, 6, 6), (12, 10, 3, 3), {"pads": [1, 1, 1, 1]}),
    "1d": ((2, 7, 40), (9, 7, 3), {"pads": [1, 2]}),
    # many tiles and output channels: several channel blocks of 6 and a remainder, channels split in parts
    "many_tiles": ((1, 33, 20, 23), (50, 33, 3, 3), {"pads": [1, 1, 1, 1]}),
    "few_tiles_many_channels": ((1, 64, 7, 7), (71, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    # long K (a tile larger than L1) with 4, 2 and 1 pixel vectors
    "3x3_many_slabs": ((1, 130, 8, 9), (8, 130, 3, 3), {"pads": [1, 1, 1, 1]}),
    "1x1_long_k_one_vector": ((2, 1601, 2, 5), (7, 1601, 1, 1), {}),
    # groups: each with its own window scales (absmax over the group's channels) and output channels
    "groups_3x3": ((1, 24, 9, 11), (18, 8, 3, 3), {"group": 3, "pads": [1, 0, 1, 2]}),
    "groups_odd_channels": ((2, 20, 6, 7), (12, 5, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    "groups_1x1_tail": ((2, 12, 3, 5), (8, 6, 1, 1), {"group": 2}),
    "groups_many_channels": ((1, 128, 14, 14), (64, 32, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    # stride 2 (act_quant 1 and 2): the four phase planes, a tap a shift in one of them
    "stride2_3x3": ((1, 16, 23, 22), (32, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride2_asym_pads": ((1, 6, 12, 13), (13, 6, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 0]}),
    "stride2_5x5": ((1, 7, 17, 19), (9, 7, 5, 5), {"strides": [2, 2], "pads": [2, 2, 2, 2]}),
    "stride2_1x1": ((2, 12, 9, 11), (10, 12, 1, 1), {"strides": [2, 2]}),
    "stride2_no_pad_batch2": ((2, 9, 10, 9), (11, 9, 3, 3), {"strides": [2, 2]}),
    "stride2_groups": ((1, 24, 11, 10), (18, 8, 3, 3), {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride2_wide": ((1, 20, 9, 70), (8, 20, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride2_wide_pads": ((1, 5, 6, 7), (6, 5, 3, 3), {"strides": [2, 2], "pads": [2, 3, 2, 3]}),
    "stride2_2x2": ((1, 4, 8, 9), (5, 4, 2, 2), {"strides": [2, 2]}),
}
STATIC_SCALE = np.float32(127.0 / 2.5)  # clips the tails of a standard normal input
REPO = Path(__file__).resolve().parents[1]


def _session(model, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return runtime.InferenceSession(model, sess_options=options)


def _runs() -> int:
    library = ctypes.CDLL(native.library_path())  # the same loaded library onnxruntime uses
    library.obx_tconv_pixel_lanes_runs.restype = ctypes.c_size_t
    return library.obx_tconv_pixel_lanes_runs()


def _case(rng, name, with_bias):
    x_shape, w_shape, attrs = SHAPES[name]
    codes = rng.integers(-1, 2, size=w_shape).astype(np.int8)
    m, k = w_shape[0], int(np.prod(w_shape[1:]))
    scales = random_scales(rng, "channel" if m % 2 else "tensor", k, m, 0)
    bias = rng.standard_normal(m).astype(np.float32) if with_bias else None
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[..., ::3] *= 20  # pixels of very different ranges: windows get distinct scales
    return codes, scales, bias, x, attrs


def _reference(x, codes, scales, bias, attrs, act_quant):
    return ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1),
                                  act_quant=act_quant, bias=bias, strides=attrs.get("strides"),
                                  pads=attrs.get("pads"), dilations=attrs.get("dilations"),
                                  act_scale=STATIC_SCALE if act_quant == 2 else None)


def _check(isa, codes, scales, bias, x, attrs, act_quant, monkeypatch):
    op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs=attrs,
                            act_scale=STATIC_SCALE if act_quant == 2 else None)
    expected = _reference(x, codes, scales, bias, attrs, act_quant)
    # act_quant 3 scales a pixel over all channels: grouped convs keep their per-tap matmuls, and so do
    # stride-2 ones (the phase planes are for act_quant 1 and 2)
    lanes = isa in LANES_ISAS and (act_quant != 3 or (attrs.get("group", 1) == 1 and "strides" not in attrs))
    monkeypatch.setenv("ONNXBIT_CONV_PATH", "pixel_lanes")
    for threads in (1, 2):
        before = _runs()
        y = _session(op.model, threads).run(None, op.feeds(x))[0]
        np.testing.assert_array_equal(y, expected)
        # taken on AVX-512 (which has VNNI here) and AVX2, never elsewhere
        assert (_runs() > before) == lanes, (isa, _runs() - before)
    # the channels-last / im2col paths (per-tap matmuls for act_quant 3) compute the same bits
    monkeypatch.setenv("ONNXBIT_CONV_PATH", "channels_last")
    before = _runs()
    np.testing.assert_array_equal(_session(op.model, 2).run(None, op.feeds(x))[0], expected)
    assert _runs() == before
    return expected


@pytest.mark.parametrize("act_quant", [1, 2, 3])
@pytest.mark.parametrize("name", list(SHAPES))
def test_equals_reference_on_every_isa(isa, rng, monkeypatch, name, act_quant):
    codes, scales, bias, x, attrs = _case(rng, name, with_bias=act_quant == 1 or name.startswith("3x3"))
    _check(isa, codes, scales, bias, x, attrs, act_quant, monkeypatch)


@pytest.mark.parametrize("act_quant", [1, 2, 3])
@pytest.mark.parametrize("name", list(SHAPES))
def test_plain_avx2_kernel_equals_reference(rng, monkeypatch, name, act_quant):
    """The `isa` fixture's avx2 takes AVX-VNNI where the CPU has it (vpdpbusd into int32 sums): the
    plain AVX2 kernel (vpmaddubsw into 16-bit sums widened every 64 steps) runs here, forced without
    the extension."""
    if "avx2" not in native.available_isas():
        pytest.skip("needs AVX2")
    codes, scales, bias, x, attrs = _case(rng, name, with_bias=True)
    with native.forced_isa("avx2", baseline=True):
        _check("avx2", codes, scales, bias, x, attrs, act_quant, monkeypatch)


@pytest.mark.parametrize("act_quant", [1, 2, 3])
def test_non_finite_pixels_make_their_windows_nan(isa, rng, monkeypatch, act_quant):
    codes, scales, bias, x, attrs = _case(rng, "3x3_asym_pads", with_bias=True)  # out 14 x 12
    x[0, 2, 4, 4] = np.nan
    x[0, 5, 0, 12] = np.inf
    x[0, 1, 11, 0] = -np.inf
    y = _check(isa, codes, scales, bias, x, attrs, act_quant, monkeypatch)
    nan = np.isnan(y[0]).all(axis=0)
    assert nan.sum() == 9 + 4 + 3 and not np.isnan(y[0][:, ~nan]).any()


def test_static_scale_clips(isa, rng, monkeypatch):
    """Values far beyond 127 / act_scale clamp to -128 and 127 (not wrap)."""
    codes, scales, bias, x, attrs = _case(rng, "1x1_odd_channels_tail", with_bias=False)
    x *= 1000
    _check(isa, codes, scales, bias, x, attrs, 2, monkeypatch)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 3, 12, 12), (4, 3, 9, 9), {"pads": [4, 4, 4, 4]}),  # 81 taps: more than the path takes
    ((1, 4100, 3, 3), (3, 4100, 3, 3), {"pads": [1, 1, 1, 1]}),  # K = 36900: a tile would outgrow L2
    ((1, 6, 13, 13), (4, 6, 3, 3), {"strides": [3, 3]}),  # stride 3
    ((1, 6, 13, 13), (4, 6, 3, 3), {"strides": [2, 2], "dilations": [2, 2]}),  # stride 2 dilated
    ((1, 6, 13, 13), (4, 6, 3, 3), {"strides": [1, 2]}),  # strides 1 and 2
    ((1, 8, 6, 6), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise: its own direct kernel
])
def test_shapes_the_path_does_not_take(isa, rng, monkeypatch, x_shape, w_shape, attrs):
    codes = rng.integers(-1, 2, size=w_shape).astype(np.int8)
    scales = random_scales(rng, "channel", int(np.prod(w_shape[1:])), w_shape[0], 0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    op = ternary_conv_model(codes, scales, None, act_quant=1, conv_attrs=attrs)
    monkeypatch.setenv("ONNXBIT_CONV_PATH", "pixel_lanes")
    before = _runs()
    y = _session(op.model, 2).run(None, op.feeds(x))[0]
    assert _runs() == before
    np.testing.assert_array_equal(y, ternary_conv_reference(
        x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1), act_quant=1,
        strides=attrs.get("strides"), pads=attrs.get("pads"), dilations=attrs.get("dilations")))


def test_act_quant_3_keeps_per_tap_matmuls_for_a_tall_dilated_window(isa, rng, monkeypatch):
    """A tile quantizes every pixel its taps read: a window 21 rows tall on a 300-wide plane spans
    about 6000 pixels per 64 outputs, more than its taps' windows, so act_quant 3 keeps the per-tap
    matmuls there (and computes the same bits)."""
    codes = rng.integers(-1, 2, size=(6, 8, 3, 3)).astype(np.int8)
    scales = random_scales(rng, "channel", 72, 6, 0)
    x = rng.standard_normal((1, 8, 30, 300)).astype(np.float32)
    attrs = {"dilations": [10, 1], "pads": [10, 1, 10, 1]}
    op = ternary_conv_model(codes, scales, None, act_quant=3, conv_attrs=attrs)
    monkeypatch.setenv("ONNXBIT_CONV_PATH", "pixel_lanes")
    before = _runs()
    y = _session(op.model, 2).run(None, op.feeds(x))[0]
    assert _runs() == before
    np.testing.assert_array_equal(y, _reference(x, codes, scales, None, attrs, 3))


# taken: on AVX-512 VNNI, on AVX2 (each kernel table's thresholds for multi-tap convs: 64 and 256 outputs)
@pytest.mark.parametrize("size, kernel, channels, group, act_quant, taken", [
    (28, 3, 32, 1, 1, (True, True)),     # a large plane
    (7, 3, 32, 1, 1, (False, False)),    # a 3x3 conv on a 7x7 plane keeps the channels-last path
    (8, 3, 32, 1, 1, (True, False)),     # AVX-512 takes this one from 8x8 on
    (15, 3, 32, 1, 1, (True, False)),
    (16, 3, 32, 1, 1, (True, True)),     # AVX2 from 16x16 on
    (7, 1, 32, 1, 1, (True, True)),      # a 1x1 conv takes it from 4x4 planes on
    (4, 1, 32, 1, 1, (True, True)),
    (3, 1, 32, 1, 1, (False, False)),    # below, the channels-last path runs the batch as one matmul
    (1, 1, 32, 1, 1, (False, False)),
    (7, 3, 4, 1, 1, (True, True)),       # without the channels-last layout (C < 8) the alternative is slower
    (7, 3, 32, 2, 1, (True, True)),      # and so is the channels-last path of a grouped conv
    (7, 3, 32, 1, 3, (True, False)),     # act_quant 3: per-tap matmuls the alternative, on AVX2 faster below 256
    (16, 3, 32, 1, 3, (True, True)),
    (3, 1, 32, 1, 3, (True, True)),
])
@pytest.mark.parametrize("lanes_isa", LANES_ISAS)
def test_size_rule(rng, monkeypatch, size, kernel, channels, group, act_quant, taken, lanes_isa):
    """Without the override the size rule (tconv_pixel_lanes_applies) picks the path."""
    if lanes_isa not in native.available_isas():
        pytest.skip(f"the path needs {lanes_isa}")
    monkeypatch.delenv("ONNXBIT_CONV_PATH", raising=False)
    codes = rng.integers(-1, 2, size=(16, channels // group, kernel, kernel)).astype(np.int8)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    attrs = {"pads": [kernel // 2] * 4, "group": group}
    op = ternary_conv_model(codes, np.ones(1, np.float32), None, act_quant=act_quant, conv_attrs=attrs)
    with native.forced_isa(lanes_isa):
        before = _runs()
        y = _session(op.model, 2).run(None, op.feeds(x))[0]
        assert (_runs() > before) == dict(zip(("avx512", "avx2"), taken))[lanes_isa]
    np.testing.assert_array_equal(y, _reference(x, codes, np.ones(1, np.float32), None, attrs, act_quant))


@pytest.mark.parametrize("size, channels, act_quant, taken", [
    (32, 32, 1, True),    # 16x16 outputs: the phase planes from 256 outputs on
    (30, 32, 1, False),   # 15x15: the channels-last path
    (30, 4, 1, True),     # no channels-last layout (C < 8): its alternative, the generic im2col, is slower
    (32, 32, 3, False),   # act_quant 3 keeps its per-tap matmuls at stride 2
])
@pytest.mark.parametrize("lanes_isa", LANES_ISAS)
def test_stride2_size_rule(rng, monkeypatch, size, channels, act_quant, taken, lanes_isa):
    if lanes_isa not in native.available_isas():
        pytest.skip(f"the path needs {lanes_isa}")
    monkeypatch.delenv("ONNXBIT_CONV_PATH", raising=False)
    codes = rng.integers(-1, 2, size=(16, channels, 3, 3)).astype(np.int8)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
    op = ternary_conv_model(codes, np.ones(1, np.float32), None, act_quant=act_quant, conv_attrs=attrs)
    with native.forced_isa(lanes_isa):
        before = _runs()
        y = _session(op.model, 2).run(None, op.feeds(x))[0]
        assert (_runs() > before) == taken
    np.testing.assert_array_equal(y, _reference(x, codes, np.ones(1, np.float32), None, attrs, act_quant))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc")
                    or "avx2" not in native.available_isas(), reason="needs an x86 CPU with AVX2 and gcc")
@pytest.mark.parametrize("kernel", ["avx512", "avxvnni"])
def test_kernels_on_emulated_intrinsics(tmp_path, kernel):
    """Where the CPU lacks AVX-512 (or AVX-VNNI) the tests above never run that kernel.
    Compiled on stand-ins for its intrinsics (tests/native/emulated_x86_intrinsics.h)
    and linked with the compute core under a platform table that holds it (the harness
    replaces csrc/isa/platform.c), it must give the channels-last / im2col path's
    outputs bit for bit on random 1x1 and 3x3 convs
    (tests/native/check_emulated_pixel_lanes.c)."""
    native_tests = REPO / "tests" / "native"
    core = sorted(p for p in (REPO / "csrc").rglob("*.c")
                  if not re.search(r"_(avx2|avx512|avxvnni|neon|neon_dotprod)\.c$", p.name)
                  and p.name != "platform.c")
    exe = tmp_path / "check_emulated_pixel_lanes"
    # -O1 -fno-inline: inlining the stand-ins into the kernel's 24 register-block
    # variants, gcc took 53 s on the kernel's file at -O2 and 14 s at -O1; not
    # inlining them, 4.6 s (the whole build ~8 s).
    build = subprocess.run(["gcc", "-std=gnu11", "-O1", "-fno-inline", "-ffp-contract=off", "-pthread",
                            "-mavx2", "-DONNXBIT_X86=1", f"-I{REPO / 'csrc' / 'include'}", f"-I{REPO / 'csrc'}",
                            f"-I{native_tests}", str(native_tests / "check_emulated_pixel_lanes.c"),
                            str(native_tests / "emulated_avx512_pixel_lanes.c"),
                            str(native_tests / "emulated_avxvnni_pixel_lanes.c"), *map(str, core),
                            "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), kernel], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 mismatches" in run.stdout, run.stdout


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc")
                    or "avx512" not in native.available_isas(), reason="needs an AVX-512 VNNI CPU and gcc")
def test_stand_ins_equal_the_avx512_instructions(tmp_path):
    """The stand-ins the test above runs the kernel on, each against its instruction on
    random and edge values, bit for bit: what never reaches a conv output (the
    saturating packs of a NaN lane's indefinite integer, say) is checked here."""
    native_tests = REPO / "tests" / "native"
    exe = tmp_path / "check_stand_ins_against_avx512"
    build = subprocess.run(["gcc", "-std=gnu11", "-O1", "-ffp-contract=off", "-mavx512f", "-mavx512bw",
                            "-mavx512vl", "-mavx512vnni", "-mavx2", f"-I{native_tests}",
                            str(native_tests / "check_stand_ins_against_avx512.c"), "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 mismatches" in run.stdout, run.stdout


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_stride2_geometries(rng, monkeypatch, seed):
    """The phase planes on random stride-2 geometries (kernels 1-5 high and wide, pads 0-3 each side,
    odd and even sizes, groups, batches), forced, on every ISA with the kernel: the reference's
    bits with act_quant 1 and 2."""
    rng = np.random.default_rng(seed)
    monkeypatch.setenv("ONNXBIT_CONV_PATH", "pixel_lanes")
    made = 0
    while made < 8:
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        group = int(rng.choice([1, 1, 2]))
        c, m = group * int(rng.integers(2 if group > 1 else 1, 12)), group * int(rng.integers(1, 10))  # no depthwise
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 40))
        pads = [int(rng.integers(0, 4)) for _ in range(4)]
        if h + pads[0] + pads[2] < kh or w + pads[1] + pads[3] < kw:
            continue
        made += 1
        attrs = {"strides": [2, 2], "pads": pads, "group": group}
        codes = rng.integers(-1, 2, size=(m, c // group, kh, kw)).astype(np.int8)
        scales = random_scales(rng, "channel", c // group * kh * kw, m, 0)
        x = rng.standard_normal((int(rng.integers(1, 3)), c, h, w)).astype(np.float32)
        x[..., ::3] *= 20
        for act_quant in (1, 2):
            op = ternary_conv_model(codes, scales, None, act_quant=act_quant, conv_attrs=attrs,
                                    act_scale=STATIC_SCALE if act_quant == 2 else None)
            expected = _reference(x, codes, scales, None, attrs, act_quant)
            for isa in [i for i in LANES_ISAS if i in native.available_isas()]:
                with native.forced_isa(isa):
                    before = _runs()
                    y = _session(op.model, 2).run(None, op.feeds(x))[0]
                    assert _runs() > before, (isa, attrs, codes.shape)
                np.testing.assert_array_equal(y, expected, err_msg=f"{isa} {attrs} {codes.shape} {x.shape}")
