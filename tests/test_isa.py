"""ISA selection: what the library reports, and the ONNXBIT_ISA override."""

import os
import subprocess
import sys

import pytest

from onnxbit import native

ALL_ISAS = ("scalar", "avx2", "avx512", "neon")


def run_with_isa(value, code):
    env = dict(os.environ, ONNXBIT_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_available_isas_start_with_scalar_and_include_the_active_one():
    available = native.available_isas()
    assert available[0] == "scalar"
    assert set(available) <= set(ALL_ISAS)
    if "ONNXBIT_ISA" not in os.environ:
        assert native.isa() == available[-1]  # the best supported path by default
    assert native.isa() in available


def test_forced_isa_switches_and_restores(isa):
    assert native.isa() == isa


@pytest.mark.parametrize("name", native.available_isas())
def test_environment_variable_selects_a_supported_isa(name):
    code = ("import numpy as np; from onnxbit import native, codecs\n"
            "print(native.isa())\n"
            "print(codecs.unpack_ternary(codecs.pack_ternary(np.array([1, 0, -1], np.int8)), 3).tolist())")
    result = run_with_isa(name, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [name, "[1, 0, -1]"]


@pytest.mark.parametrize("value", ["avx9000", "AVX2", "sse"])
def test_unknown_isa_name_is_a_clear_error(value):
    code = ("from onnxbit import native\n"
            "try:\n    native.isa()\nexcept native.NativeLibraryError as err:\n    print('error:', err)")
    result = run_with_isa(value, code)
    assert result.returncode == 0, result.stderr
    assert f"ONNXBIT_ISA={value} is not an ISA name" in result.stdout


@pytest.mark.parametrize("name", [n for n in ALL_ISAS if n not in native.available_isas()])
def test_unsupported_isa_is_refused_before_any_kernel_runs(name):
    code = ("import numpy as np\nfrom onnxbit import native, codecs\n"
            "try:\n    codecs.pack_ternary(np.zeros(8, np.int8))\n"
            "except native.NativeLibraryError as err:\n    print('error:', err)")
    result = run_with_isa(name, code)
    assert result.returncode == 0, result.stderr
    assert f"error: ONNXBIT_ISA={name} is not supported by this CPU or build" in result.stdout


@pytest.mark.parametrize("name, level, cpu_has", [("avxvnni", "avx2", "obx_cpu_has_avxvnni"),
                                                  ("neon_dotprod", "neon", "obx_cpu_has_neon_dotprod")])
def test_refinement_names_select_their_level_or_are_refused(name, level, cpu_has):
    """ONNXBIT_ISA=avxvnni / neon_dotprod select the level with its refinement, and are
    refused (not silently downgraded) where the CPU lacks the refinement."""
    code = ("from onnxbit import native\n"
            "try:\n    print(native.isa())\n"
            "except native.NativeLibraryError as err:\n    print('error:', err)")
    result = run_with_isa(name, code)
    assert result.returncode == 0, result.stderr
    if level in native.available_isas() and getattr(native.lib(), cpu_has)():
        assert result.stdout.strip() == level
    else:
        assert result.stdout.strip() == f"error: ONNXBIT_ISA={name} is not supported by this CPU or build"


def _cpuinfo_flags():
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    for line in text.splitlines():
        key = line.split(":")[0].strip()
        if key in ("flags", "Features"):
            return set(line.split(":", 1)[1].split())
    return None


@pytest.mark.skipif(_cpuinfo_flags() is None, reason="no /proc/cpuinfo flags (not Linux)")
def test_every_simd_path_the_cpu_reports_is_available():
    """What the kernel says this CPU has must be what the library detects, so the `isa`
    fixture (which runs every available path) never skips a path this CPU could test."""
    flags, lib = _cpuinfo_flags(), native.lib()
    if {"avx2", "fma", "bmi2"} <= flags:
        assert "avx2" in native.available_isas()
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx2", "fma", "bmi2"} <= flags:
        assert "avx512" in native.available_isas()
    if {"avx_vnni", "avx2", "fma", "bmi2"} <= flags:
        assert lib.obx_cpu_has_avxvnni() == 1
    if "asimd" in flags:
        assert "neon" in native.available_isas()
        assert lib.obx_cpu_has_neon_dotprod() == ("asimddp" in flags)
