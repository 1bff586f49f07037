/* The custom ops this library registers in the com.onnxbit domain: one
 * ObxOpDefinition per op file, listed in register.c. */
#ifndef ONNXBIT_CUSTOM_OPS_H
#define ONNXBIT_CUSTOM_OPS_H

#include "op_kernel.h"

#define OBX_OP_DOMAIN "com.onnxbit"

extern const ObxOpDefinition obx_ternary_matmul_definition; /* ternary_matmul_op.c */
extern const ObxOpDefinition obx_ternary_conv_definition;   /* ternary_conv_op.c */
extern const ObxOpDefinition obx_bf16_matmul_definition;    /* bf16_matmul_op.c */

#endif
