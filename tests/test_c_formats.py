"""The packed-format list of the C library (formats.h), as Python reads it."""

import pytest

from onnxbit import native, tmatmul


def test_the_library_lists_its_formats_by_name_and_id():
    assert tmatmul.formats() == {"2bit": 0, "base3": 1}
    lib = native.lib()
    assert [lib.obx_format_codes_per_byte(i) for i in range(lib.OBX_FMT_COUNT)] == [4, 5]
    assert [lib.obx_format_bits_per_weight(i) for i in range(lib.OBX_FMT_COUNT)] == [2.0, 1.6]
    assert native.ffi().NULL == lib.obx_format_name(lib.OBX_FMT_COUNT)
    assert lib.obx_format_codes_per_byte(-1) == 0 and lib.obx_packed_row_bytes(9, 10) == 0


@pytest.mark.parametrize("name", [b"2bit\\0junk", b"2bit\\0", b"2bi", b"2bits", b"", b"BASE3"])
def test_a_name_matches_only_in_full(name):
    assert native.lib().obx_format_from_name(name, len(name)) == -1


def test_names_map_to_ids_and_back():
    lib, ffi = native.lib(), native.ffi()
    for name, fmt in tmatmul.formats().items():
        assert lib.obx_format_from_name(name.encode(), len(name)) == fmt
        assert ffi.string(lib.obx_format_name(fmt)).decode() == name
        assert tmatmul.format_code(name) == fmt
    with pytest.raises(ValueError, match="unknown packed format"):
        tmatmul.format_code("2bit\0")
