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
