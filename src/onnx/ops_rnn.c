/*
 * ops_rnn.c - ONNX rnn ops onto kiln's (being written).
 */
#include "onnx/onnx_impl.h"

const kn_ox_op kn__ox_ops_rnn[] = {
    {NULL, NULL, 0, 0, false},
};
