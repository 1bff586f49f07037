/* Internal helpers shared by all of csrc/ and ops/ (not part of the public API). */
#ifndef ONNXBIT_COMMON_H
#define ONNXBIT_COMMON_H

/* Symbols of the public API; everything else stays hidden (-fvisibility=hidden). */
#define OBX_API __attribute__((visibility("default")))

#define OBX_MIN(a, b) ((a) < (b) ? (a) : (b))
#define OBX_MAX(a, b) ((a) > (b) ? (a) : (b))
#define OBX_DIV_UP(a, b) (((a) + (b)-1) / (b))

#endif
