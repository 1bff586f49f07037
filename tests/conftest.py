import os

import pytest

from onnxbit import native


def pytest_report_header(config):
    return f"onnxbit library: {native.library_path()}  active ISA: {native.isa()}  available: {native.available_isas()}"


@pytest.fixture(params=native.available_isas())
def isa(request):
    """Run the test once per ISA path this machine supports (scalar always)."""
    with native.forced_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return __import__("numpy").random.default_rng(1234)


@pytest.fixture
def aarch64_tools():
    """For the NEON checks that cross-compile and run under qemu-user: skips where
    aarch64-linux-gnu-gcc (with its sysroot) or qemu-aarch64 is missing, but fails
    when ONNXBIT_REQUIRE_QEMU=1 (.ci/run installs them, so there a skip would leave
    the NEON kernels untested unnoticed)."""
    import platform
    import shutil
    from pathlib import Path

    if (platform.machine() in ("x86_64", "AMD64") and shutil.which("aarch64-linux-gnu-gcc")
            and shutil.which("qemu-aarch64") and Path("/usr/aarch64-linux-gnu").is_dir()):
        return
    message = "needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt: gcc-aarch64-linux-gnu qemu-user)"
    if os.environ.get("ONNXBIT_REQUIRE_QEMU") == "1":
        pytest.fail(message + ", and ONNXBIT_REQUIRE_QEMU=1")
    pytest.skip(message)
