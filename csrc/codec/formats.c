/* The table behind formats.h. */
#include "onnxbit/formats.h"

#include <string.h>

#include "obx_common.h"

static const struct {
    const char *name;
    int codes_per_byte;
} formats[OBX_FMT_COUNT] = {
    [OBX_FMT_2BIT] = {"2bit", 4},
    [OBX_FMT_BASE3] = {"base3", 5},
};

OBX_API int obx_format_known(int fmt) { return fmt >= 0 && fmt < OBX_FMT_COUNT; }

OBX_API const char *obx_format_name(int fmt) {
    return obx_format_known(fmt) ? formats[fmt].name : NULL;
}

OBX_API int obx_format_from_name(const char *name, size_t len) {
    if (name == NULL) return -1;
    for (int fmt = 0; fmt < OBX_FMT_COUNT; fmt++)
        if (strlen(formats[fmt].name) == len && memcmp(name, formats[fmt].name, len) == 0)
            return fmt;
    return -1;
}

OBX_API int obx_format_codes_per_byte(int fmt) {
    return obx_format_known(fmt) ? formats[fmt].codes_per_byte : 0;
}

OBX_API double obx_format_bits_per_weight(int fmt) {
    return obx_format_known(fmt) ? 8.0 / formats[fmt].codes_per_byte : 0.0;
}

OBX_API size_t obx_packed_row_bytes(int fmt, size_t k) {
    if (!obx_format_known(fmt)) return 0;
    size_t per = (size_t)formats[fmt].codes_per_byte;
    return k / per + (k % per != 0);
}
