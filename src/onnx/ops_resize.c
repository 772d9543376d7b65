/*
 * ops_resize.c - ONNX resize ops onto kiln's (being written).
 */
#include "onnx/onnx_impl.h"

const kn_ox_op kn__ox_ops_resize[] = {
    {NULL, NULL, 0, 0, false},
};
