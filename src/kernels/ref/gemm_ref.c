/*
 * gemm_ref.c - portable GEMM kernels: the blocked reference kernel (kn__?gemm_ref, used when
 * OpenBLAS is absent and as forward_ref of matmul/linear/conv) and the naive triple loop
 * (kn__?gemm_naive, ground truth in tests). Contract in kernels/gemm.h.
 *
 * Does not: call BLAS, allocate more than two packing buffers per call, or depend on the thread
 * count for its results (threads split C into tiles; K is walked in order).
 * The micro-kernel is written with GCC vector extensions and compiled for AVX-512, AVX2+FMA and
 * baseline x86-64 (target_clones picks at load time).
 */
#include "kernels/gemm.h"

#include "core/core_impl.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KN_GEMM_CLONES                                                                         \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KN_GEMM_CLONES
#endif

#define MR 6
#define KN_GEMM_MC 96    /* rows of A per thread tile (multiple of MR) */
#define KN_GEMM_NCH 512  /* columns of C per thread tile (multiple of NR) */
#define KN_GEMM_NC 4096  /* columns of B packed at once (multiple of KN_GEMM_NCH) */
#define KN_GEMM_MB 1536  /* rows of A packed at once (multiple of KN_GEMM_MC) */

/* ---- f32 ---- */
#define T float
#define SFX s
#define NR 16
#define KN_GEMM_KC 256
typedef float kn_vf32 __attribute__((vector_size(64)));
#define VEC kn_vf32
#include "gemm_ref_tmpl.h"
#undef T
#undef SFX
#undef NR
#undef VEC
#undef KN_GEMM_KC

/* ---- f64 ---- */
#define T double
#define SFX d
#define NR 8
#define KN_GEMM_KC 256
typedef double kn_vf64 __attribute__((vector_size(64)));
#define VEC kn_vf64
#include "gemm_ref_tmpl.h"
#undef T
#undef SFX
#undef NR
#undef VEC
#undef KN_GEMM_KC
