"""The compiled library (csrc/ + ops/), loaded once through cffi in ABI mode.

The same shared object is what onnxruntime loads as a custom-op library, so
Python and onnxruntime run the very same kernels. Declarations come from the
public C headers themselves, so the two can never drift apart.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cffi
import numpy as np

_PACKAGE_DIR = Path(__file__).resolve().parent
# In dependency order: cffi parses each on top of the ones before it.
_HEADERS = ("isa.h", "formats.h", "codec.h", "tmatmul.h", "bf16matmul.h", "checksum.h", "rans.h", "zero_runs.h", "sparse.h", "streams.h", "weight_memory.h")
_LIB_NAMES = ("libonnxbit.so", "libonnxbit.dylib", "onnxbit.dll")


class NativeLibraryError(RuntimeError):
    """The compiled library is missing, or refused the requested ISA."""


def _candidate_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("ONNXBIT_LIBRARY")
    if env:
        dirs.append(Path(env).parent)
    dirs.append(_PACKAGE_DIR / "_lib")
    return dirs


def library_path() -> str:
    """Path of the shared library to hand to ``register_custom_ops_library``."""
    env = os.environ.get("ONNXBIT_LIBRARY")
    if env:
        if not Path(env).is_file():
            raise NativeLibraryError(f"ONNXBIT_LIBRARY={env} does not exist")
        return str(Path(env).resolve())
    for name in _LIB_NAMES:
        path = _PACKAGE_DIR / "_lib" / name
        if path.is_file():
            return str(path)
    installed = _installed_library()
    if installed is not None:
        return installed
    raise NativeLibraryError(
        f"the onnxbit native library was not found in {_PACKAGE_DIR / '_lib'}; "
        "install the package with `pip install .` (which compiles csrc/ and ops/), "
        "or point ONNXBIT_LIBRARY at a built libonnxbit.so"
    )


def _installed_library() -> str | None:
    """The library of the installed distribution, for when this module was
    imported from a source checkout (e.g. `python -c` run in the repository,
    which puts the checkout's onnxbit/ first on sys.path)."""
    try:
        dist = importlib.metadata.distribution("onnxbit")
    except importlib.metadata.PackageNotFoundError:
        return None
    for name in _LIB_NAMES:
        path = Path(str(dist.locate_file(f"onnxbit/_lib/{name}")))
        if path.is_file():
            return str(path)
    return None


def _header_dir() -> Path:
    """Headers installed next to the library, else those of the source checkout
    this module lives in (a development build from ONNXBIT_LIBRARY)."""
    for base in (Path(library_path()).parent / "include", _PACKAGE_DIR / "_lib" / "include",
                 _PACKAGE_DIR.parent / "csrc" / "include" / "onnxbit"):
        if all((base / name).is_file() for name in _HEADERS):
            return base
    raise NativeLibraryError("the onnxbit C headers were not found next to the library")


def _cdef_source(text: str) -> str:
    """Strip what cffi's parser does not take: comments, preprocessor lines and
    the extern "C" wrapper (whose closing brace is the only lone "}" line)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    keep = [line for line in text.splitlines()
            if not line.lstrip().startswith("#") and line.strip() not in ('extern "C" {', "}")]
    return "\n".join(keep)


@lru_cache(maxsize=1)
def _load() -> tuple[cffi.FFI, object]:
    ffi = cffi.FFI()
    headers = _header_dir()
    for name in _HEADERS:
        ffi.cdef(_cdef_source((headers / name).read_text()))
    lib = ffi.dlopen(library_path())
    return ffi, lib


def ffi() -> cffi.FFI:
    return _load()[0]


def lib():
    """The cffi handle; check :func:`isa` once before calling kernels."""
    return _load()[1]


def available_isas() -> list[str]:
    """ISAs this CPU and build can run, scalar first."""
    native = lib()
    return [_isa_name(i) for i in range(native.OBX_ISA_COUNT) if native.obx_isa_supported(i)]


def _isa_name(index: int) -> str:
    return ffi().string(lib().obx_isa_name(index)).decode()


def isa() -> str:
    """The active ISA (the best supported one, or ONNXBIT_ISA)."""
    native = lib()
    index = native.obx_isa_active()
    if index < 0:
        raise NativeLibraryError(ffi().string(native.obx_isa_error()).decode())
    return _isa_name(index)


def _isa_index(name: str) -> int:
    index = lib().obx_isa_from_name(name.encode())
    if index < 0:
        raise NativeLibraryError(f"unknown ISA {name!r}; known: scalar, avx2, avx512, neon")
    return index


@contextlib.contextmanager
def forced_isa(name: str, baseline: bool = False) -> Iterator[None]:
    """Run the body with one ISA path (affects onnxruntime sessions in this process too).
    baseline=True leaves out the optional extensions of the ISA's level (AVX-VNNI
    within AVX2), so a CPU that has them can run the plain kernels too."""
    native = lib()
    previous = native.obx_isa_active()
    force = native.obx_isa_force_baseline if baseline else native.obx_isa_force
    if force(_isa_index(name)) != 0:
        raise NativeLibraryError(f"ISA {name!r} is not supported here; available: {available_isas()}")
    try:
        yield
    finally:
        if previous >= 0:
            native.obx_isa_force(previous)


def version() -> str:
    return ffi().string(lib().obx_version()).decode()


def optional_float_vector(values, length: int, name: str):
    """(cffi pointer, the float32 array it points into) for an optional [length] argument
    such as a bias; (NULL, None) for None. Keep the array alive while the pointer is used."""
    if values is None:
        return ffi().NULL, None
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {array.shape}")
    return ffi().from_buffer("float[]", array), array
