"""obx_weight_alloc: the memory TernaryMatMul and BFloat16MatMul repack their
weights into (csrc/memory/weight_memory.c): zeroed, 64-byte aligned, every
mapping returned when its allocations are freed, and on 2 MiB pages where
the system's transparent huge pages allow it."""

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from onnxbit import native

SIZES = [1, 63, 64, 65, 4096, 1 << 20, (2 << 20) - 129, (2 << 20) - 128, 2 << 20, (5 << 20) + 17]


def _alloc(size):
    p = native.lib().obx_weight_alloc(size)
    assert p != native.ffi().NULL
    return p


def _view(p, size):
    return np.frombuffer(native.ffi().buffer(p, size), dtype=np.uint8)


def _mapped():
    return native.lib().obx_weight_memory_mapped()


def test_every_size_is_zeroed_aligned_writable_and_given_back():
    before = _mapped()
    pointers = []
    for size in SIZES:
        p = _alloc(size)
        assert int(native.ffi().cast("uintptr_t", p)) % 64 == 0
        view = _view(p, size)
        assert not view.any()
        view[:] = 0xA5  # the whole of it is ours: neighbours keep their bytes
        pointers.append((p, size))
    for p, size in pointers:
        assert (_view(p, size) == 0xA5).all()
    ranges = sorted((int(native.ffi().cast("uintptr_t", p)), size) for p, size in pointers)
    assert all(a + n <= b for (a, n), (b, _) in zip(ranges, ranges[1:]))
    for p, _ in pointers:
        native.lib().obx_weight_free(p)
    assert _mapped() == before
    native.lib().obx_weight_free(native.ffi().NULL)


def test_chunks_are_unmapped_once_their_last_allocation_is_freed():
    before = _mapped()
    rng = np.random.default_rng(0)
    # 600 KiB each: about 55 to a 32 MiB chunk, so 200 of them span four chunks.
    pointers = [_alloc(600 << 10) for _ in range(200)]
    if before == 0 and _mapped() == 0:
        pytest.skip("a sanitizer build: weights use the C allocator")
    assert _mapped() - before >= 200 * (600 << 10)
    for i in rng.permutation(len(pointers)):
        native.lib().obx_weight_free(pointers[i])
    assert _mapped() == before


def test_threads_allocating_and_freeing_at_once_leave_nothing_mapped():
    before = _mapped()
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        live = []
        try:
            for _ in range(400):
                if live and rng.random() < 0.5:
                    p, size, value = live.pop(int(rng.integers(len(live))))
                    if not (_view(p, size) == value).all():
                        errors.append("another thread wrote into this allocation")
                    native.lib().obx_weight_free(p)
                else:
                    size = int(rng.integers(1, 3 << 20))
                    p = _alloc(size)
                    value = int(rng.integers(1, 256))
                    _view(p, size)[:] = value
                    live.append((p, size, value))
            for p, _, _ in live:
                native.lib().obx_weight_free(p)
        except Exception as exc:  # surfaced below, in the test's thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _mapped() == before


def _thp_mode():
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not path.exists():
        return None
    chosen = re.search(r"\[(\w+)\]", path.read_text())
    return chosen.group(1) if chosen else None


def _huge_kib_at(address):
    """AnonHugePages of the /proc/self/smaps mapping holding address."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            inside = int(head.group(1), 16) <= address < int(head.group(2), 16)
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"), reason="transparent huge pages are off here")
def test_large_weights_sit_on_huge_pages():
    size = 16 << 20
    p = _alloc(size)
    try:
        if _mapped() == 0:
            pytest.skip("a sanitizer build: weights use the C allocator")
        _view(p, size)[:] = 1  # pages are backed when first written
        address = int(native.ffi().cast("uintptr_t", p))
        ours = _huge_kib_at(address)
        # At least half of it: under memory pressure the kernel may fall back for some pages.
        if ours < (size >> 10) // 2:
            # numpy asks for huge pages for its large arrays too: if it got none either,
            # the system has none to give right now, which says nothing about this allocator.
            control = np.ones(size // 4, dtype=np.float32)
            # its middle: numpy advises from the first whole page, so the first one is a VMA of its own
            if _huge_kib_at(control.ctypes.data + control.nbytes // 2) == 0:
                pytest.skip("the system grants no huge pages right now (numpy's array got none either)")
        assert ours >= (size >> 10) // 2
    finally:
        native.lib().obx_weight_free(p)
