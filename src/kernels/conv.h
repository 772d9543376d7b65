/*
 * conv.h - convolution and pooling kernels (NCHW, contiguous operands), used by src/ops/conv.c.
 *
 * Convolution runs as im2col + GEMM (kernels/gemm.h); this header gives the column transforms
 * and the direct reference loops (the forward_ref of every conv op, and ground truth in tests).
 * Pooling kernels work on `planes` = N*C independent H x W planes, in parallel over planes.
 *
 * Does not: check shapes (the ops validate them), allocate, or handle strides (callers pass
 * contiguous buffers). Invariants: every output element is written by one thread in a fixed
 * order, so results do not depend on the thread count; col2im and the pooling backward kernels
 * ACCUMULATE into their output (callers zero it first).
 */
#ifndef KN_KERNELS_CONV_H
#define KN_KERNELS_CONV_H

#include <stdbool.h>
#include <stdint.h>

/* One 2-D convolution: x (N, C, H, W), w (O, C/G, KH, KW), y (N, O, OH, OW). The bottom/right
 * padding only shapes OH/OW, so it is not stored. */
typedef struct kn_conv_geom {
    int64_t N, C, H, W;
    int64_t O, KH, KW;
    int64_t OH, OW;
    int64_t sh, sw; /* stride */
    int64_t pt, pl; /* top/left padding */
    int64_t dh, dw; /* dilation */
    int64_t G;      /* groups */
    bool relu;      /* forward only: relu applied to the output (a graph compiler fusion) */
} kn_conv_geom;

/* One 2-D pooling window geometry (PyTorch semantics, symmetric padding). */
typedef struct kn_pool_geom {
    int64_t H, W, OH, OW;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool count_include_pad; /* avg pool */
    bool relu_mask;         /* max pool backward: also relu's backward, x being relu's output */
} kn_pool_geom;

#define KN_CONV_KERNELS(T, S)                                                                      \
    /* col (Cg*KH*KW, (oh1-oh0)*OW) = patches of x (Cg, H, W) for output rows [oh0, oh1) */        \
    void kn__im2col_##S(const T *x, const kn_conv_geom *g, int64_t Cg, int64_t oh0, int64_t oh1,   \
                        T *col);                                                                   \
    /* gx (Cg, H, W) += scatter of col (Cg*KH*KW, (oh1-oh0)*OW) */                                 \
    void kn__col2im_##S(const T *col, const kn_conv_geom *g, int64_t Cg, int64_t oh0, int64_t oh1, \
                        T *gx);                                                                    \
    /* direct loops: y = conv(x, w) + b (b may be NULL) */                                         \
    void kn__conv2d_direct_##S(const T *x, const T *w, const T *b, T *y, const kn_conv_geom *g);   \
    /* gx (N, C, H, W) = d/dx of sum(gy * conv(x, w)) */                                           \
    void kn__conv2d_bwd_input_direct_##S(const T *gy, const T *w, T *gx, const kn_conv_geom *g);   \
    /* gw (O, C/G, KH, KW) = d/dw of sum(gy * conv(x, w)) */                                       \
    void kn__conv2d_bwd_weight_direct_##S(const T *x, const T *gy, T *gw, const kn_conv_geom *g);  \
    /* C/G == 1 (depthwise and single-input-channel convs): direct loops, no GEMM. gx is           \
     * accumulated into (zero or bias it first); scratch holds threads * KH*KW*OW elements */      \
    void kn__dwconv2d_##S(const T *x, const T *w, const T *b, T *y, const kn_conv_geom *g);        \
    void kn__dwconv2d_bwd_input_##S(const T *gy, const T *w, T *gx, const kn_conv_geom *g);        \
    void kn__dwconv2d_bwd_weight_##S(const T *x, const T *gy, T *gw, const kn_conv_geom *g,        \
                                     T *scratch);                                                  \
    /* y (planes, OH, OW) = max pool; idx (may be NULL) = flat index into each H*W plane */        \
    void kn__maxpool2d_ref_##S(const T *x, T *y, int64_t *idx, const kn_pool_geom *p,              \
                               int64_t planes);                                                    \
    void kn__maxpool2d_##S(const T *x, T *y, int64_t *idx, const kn_pool_geom *p, int64_t planes); \
    /* gx (planes, H, W) = gy routed to each window's max (gx is overwritten) */                   \
    void kn__maxpool2d_bwd_##S(const T *gy, const T *x, T *gx, const kn_pool_geom *p,              \
                               int64_t planes);                                                    \
    void kn__avgpool2d_##S(const T *x, T *y, const kn_pool_geom *p, int64_t planes);               \
    /* gx (planes, H, W) = adjoint of avg pool applied to gy (gx is overwritten) */                \
    void kn__avgpool2d_bwd_##S(const T *gy, T *gx, const kn_pool_geom *p, int64_t planes);         \
    /* adaptive average pool (PyTorch windows floor(i*H/OH) .. ceil((i+1)*H/OH)) */                \
    void kn__adaptive_avgpool2d_##S(const T *x, T *y, int64_t H, int64_t W, int64_t OH,            \
                                    int64_t OW, int64_t planes);                                   \
    void kn__adaptive_avgpool2d_bwd_##S(const T *gy, T *gx, int64_t H, int64_t W, int64_t OH,      \
                                        int64_t OW, int64_t planes);                               \
    /* y (planes) = mean of each plane of hw elements */                                           \
    void kn__global_avgpool2d_##S(const T *x, T *y, int64_t hw, int64_t planes);

KN_CONV_KERNELS(float, f32)
KN_CONV_KERNELS(double, f64)
#undef KN_CONV_KERNELS

/* Stride-1, dilation-1 convolutions as KH*KW shifted GEMMs on a zero-padded input (conv_shift.c):
 * y = conv(x, w) + b; gx = conv^T(gy; w) + b (b may be NULL). f32/f64, all
 * contiguous, g->OH/OW the actual gy size. Return false, doing nothing, when not applicable or
 * out of scratch memory (the caller falls back to im2col). */
#include "kiln/core.h"
bool kn__conv_shift_fwd(kn_dtype dt, const void *x, const void *w, const void *b, void *y,
                        const kn_conv_geom *g);
bool kn__conv_shift_bwd_data(kn_dtype dt, const void *gy, const void *w, const void *b, void *gx,
                             const kn_conv_geom *g);
/* Direct AVX-512 stride-1 ungrouped f32 convolution and its input gradient
 * (x86/conv_avx512.c); same contract (false: not applicable, nothing done). */
/* 2x2 / stride-2 max pool of nrows row pairs of width W (even, <= 32; rows of consecutive planes
 * of height 2*OH stacked), values into y (nrows x W/2) and, if idx, indices within each plane.
 * Bit-identical to the reference scan. false: not applicable (no AVX-512, W out of range). */
bool kn__maxpool2x2_rows_avx512(const float *x, float *y, int64_t *idx, int64_t nrows, int64_t OH,
                                int64_t W);
/* Backward of that pool: gx (nrows x 2 x W) from x and gy, every element written (no zeroing
 * needed); bit-identical to the reference scatter. false: not applicable. */
bool kn__maxpool2x2_bwd_rows_avx512(const float *x, const float *gy, float *gx, int64_t nrows,
                                    int64_t W, bool relu_mask);
/* Interior output columns [lo, hi) of every row of a stride-2 max pool without indices (the
 * windows of those columns lie inside each row; rows are clipped as the reference does);
 * bit-identical to the reference. false: not applicable (no AVX-512, sw != 2, dw != 1). */
bool kn__maxpool_s2_interior_avx512(const float *x, float *y, const kn_pool_geom *p, int64_t lo,
                                    int64_t hi);
bool kn__conv_direct_avx512_fwd(const float *x, const float *w, const float *b, float *y,
                                const kn_conv_geom *g);
bool kn__conv_direct_avx512_bwd_data(const float *gy, const float *w, const float *b, float *gx,
                                     const kn_conv_geom *g);
/* its weight gradient for small images (<= 1024 output positions); gw (O, C, KH, KW) */
bool kn__conv_direct_avx512_bwd_weight(const float *x, const float *gy, float *gw,
                                       const kn_conv_geom *g);
/* Batch-in-lanes variants for batches (>= 16) of small images (x86/conv_b16_avx512.c): same
 * contracts (fwd applies g->relu; false: not applicable, nothing done). */
bool kn__conv_b16_fwd(const float *x, const float *w, const float *b, float *y,
                      const kn_conv_geom *g);
bool kn__conv_b16_bwd_data(const float *gy, const float *w, const float *b, float *gx,
                           const kn_conv_geom *g);
bool kn__conv_b16_bwd_weight(const float *x, const float *gy, float *gw, const kn_conv_geom *g);
/* Convolution with weights packed ahead of time, output channels in vector lanes
 * (x86/conv_packed_avx512.c), for frozen graphs: groups 1, any stride up to 2 horizontally,
 * dilation and padding. kn__conv_pack_w packs w (O, C, KH, KW) into kn__conv_packed_size floats;
 * kn__conv_packed_fwd: y = conv(x, w) + b + res (b, res may be NULL; res has y's shape), then
 * g->relu applied; false: not applicable
 * (no AVX-512, geometry) or out of scratch memory, nothing done. */
int64_t kn__conv_packed_size(int64_t O, int64_t C, int64_t KH, int64_t KW);
void kn__conv_pack_w(const float *w, int64_t O, int64_t C, int64_t KH, int64_t KW, float *wp);
bool kn__conv_packed_supported(const kn_conv_geom *g);
/* output size in bytes above which kn__conv_packed_fwd streams its stores past the caches
 * (tests lower it; not thread-safe to change while convolutions run) */
extern double kn__conv_stream_bytes;
bool kn__conv_packed_fwd(const float *x, const float *wp, const float *b, const float *res,
                         float *y, const kn_conv_geom *g);

#endif
