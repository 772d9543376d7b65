/*
 * ops_quant.c - ONNX quantization ops onto kiln's (being written).
 */
#include "onnx/onnx_impl.h"

const kn_ox_op kn__ox_ops_quant[] = {
    {NULL, NULL, 0, 0, false},
};
