"""Each ISA's codec kernel table against the scalar one, from C (no Python in
the loop). The NEON table is built with an AArch64 cross compiler and run
under qemu-aarch64 when both are installed."""

import shutil
import subprocess
from pathlib import Path

import pytest

from onnxbit import native

ROOT = Path(__file__).resolve().parents[1]
CODEC = ROOT / "csrc" / "codec"
FLAGS = ["-O2", "-std=c11", "-ffp-contract=off", "-fno-math-errno", f"-I{ROOT / 'csrc' / 'include'}",
         f"-I{ROOT / 'csrc'}"]
SOURCES = [str(CODEC / "codec_scalar.c"), str(CODEC / "codec_base3_table.c"), str(CODEC / "formats.c"),
           str(ROOT / "tests" / "native" / "codec_kernels_vs_scalar.c")]


def build_and_run(tmp_path, compiler, isa_file, table, flags, runner=()):
    exe = tmp_path / f"check_{table}"
    subprocess.run([compiler, *FLAGS, *flags, f"-DKERNELS={table}", str(CODEC / isa_file), *SOURCES,
                    "-lm", "-o", str(exe)], check=True, capture_output=True, text=True)
    result = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "0 failures"


@pytest.mark.skipif("avx2" not in native.available_isas() or shutil.which("cc") is None,
                    reason="needs an AVX2 CPU and a C compiler")
def test_avx2_kernels_match_scalar(tmp_path):
    build_and_run(tmp_path, "cc", "codec_avx2.c", "obx_codec_kernels_avx2",
                  ["-DONNXBIT_X86=1", "-mavx2", "-mfma", "-mbmi2"])


def test_neon_kernels_match_scalar_under_qemu(tmp_path, aarch64_tools):
    build_and_run(tmp_path, "aarch64-linux-gnu-gcc", "codec_neon.c", "obx_codec_kernels_neon",
                  ["-DONNXBIT_ARM64=1", "-static"], runner=["qemu-aarch64"])
