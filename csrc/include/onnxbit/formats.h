/* The packed ternary storage formats: the one list of their names, ids and
 * sizes. Everything else in C refers to a format through this header, and
 * Python reads the list from the library (obx_format_name over ids
 * 0 .. OBX_FMT_COUNT - 1) instead of restating it.
 *
 * OBX_FMT_2BIT  "2bit":  code = w + 1 in {0,1,2}, four codes a byte, element i
 *               at bits 2*(i%4)..2*(i%4)+1 of byte i/4 (least significant
 *               first). Code 3 is invalid. 2 bits a weight.
 * OBX_FMT_BASE3 "base3": five trits a byte, element i is base-3 digit i%5 of
 *               byte i/5 (byte = sum d_j 3^j, d = w + 1, d_0 least
 *               significant). Bytes 243..255 are invalid. 1.6 bits a weight.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_FORMATS_H
#define ONNXBIT_FORMATS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { OBX_FMT_2BIT = 0, OBX_FMT_BASE3 = 1, OBX_FMT_COUNT = 2 };

/* 1 for a format id this library knows, else 0. */
int obx_format_known(int fmt);
/* "2bit", "base3"; NULL for an unknown id. */
const char *obx_format_name(int fmt);
/* The id whose name is exactly the len bytes at name (no terminator needed,
 * and none may hide inside: "2bit\0junk" with len 9 is unknown), or -1. */
int obx_format_from_name(const char *name, size_t len);
/* Weights one packed byte holds (4, 5); 0 for an unknown id. */
int obx_format_codes_per_byte(int fmt);
/* Bits a weight takes in the format (8 / codes per byte); 0 for an unknown id. */
double obx_format_bits_per_weight(int fmt);
/* Bytes of one packed row of k elements; 0 for an unknown format. */
size_t obx_packed_row_bytes(int fmt, size_t k);

#ifdef __cplusplus
}
#endif
#endif
