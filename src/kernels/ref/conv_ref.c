/*
 * conv_ref.c - convolution column transforms (im2col/col2im), direct reference convolutions and
 * the pooling kernels, for f32 and f64. Contract in kernels/conv.h; the bodies live in
 * conv_ref_tmpl.h, instantiated once per dtype.
 *
 * Does not: call GEMM (src/ops/conv.c drives im2col + GEMM), allocate, or validate shapes.
 * Invariants: results do not depend on the thread count (parallel loops split independent
 * outputs: im2col rows, col2im channels, conv outputs, pool planes). The averaging kernels sum
 * in double. The max-pool fast kernel matches the reference bit for bit, indices included.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/core_impl.h"
#include "kernels/conv.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KN_CONV_CLONES                                                                         \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KN_CONV_CLONES
#endif

#define T float
#define S f32
#define ACC double
#define KN_POOL_F32 1
#include "conv_ref_tmpl.h"
#undef KN_POOL_F32
#undef T
#undef S
#undef ACC

#define T double
#define S f64
#define ACC double
#include "conv_ref_tmpl.h"
#undef T
#undef S
#undef ACC
