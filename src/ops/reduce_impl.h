/*
 * reduce_impl.h - shared machinery of reduction ops (sum/mean here, stats.c, norms): axis
 * parsing, output shapes, the (A, R, B) view of a reduction and deterministic row sums.
 *
 * Determinism: a reduction over R elements always sums fixed blocks of KN_RBLOCK elements
 * (each with fixed lane accumulators) and then adds the block partials in order, whichever
 * thread computes which block. So results never depend on the thread count.
 */
#ifndef KILN_REDUCE_IMPL_H
#define KILN_REDUCE_IMPL_H

#include "ops/op_impl.h"

#define KN_RBLOCK 4096

/* Which dims of an ndim-d input attrs "axes" reduces (absent or empty: all). Errors name op. */
kn_status kn__reduce_mask(const char *op, const kn_attrs *a, int ndim, bool *mask);
/* Fills c's output 0 shape (honouring "keepdim") for a reduction of input 0 with dtype dt. */
kn_status kn__reduce_infer(kn_opctx *c, kn_dtype dt);
/* Reshapes g (the reduced output's gradient) to keepdim form and expands it to x's shape. */
kn_tensor *kn__reduce_expand(kn_tensor *g, const kn_tensor *x, const kn_attrs *a);
/* Number of elements reduced into each output element. */
int64_t kn__reduce_count(const kn_tensor *x, const bool *mask);

/* A contiguous view of a reduction as (A, R, B): out[a, b] = reduce_r x[a, r, b].
 * kn__reduce_prepare returns x itself (+1) when the reduced dims are adjacent, else a permuted
 * contiguous copy with the reduced dims last (B = 1). Always kn_tensor_free the result. */
typedef struct {
    int64_t A, R, B;
} kn_rplan;
kn_tensor *kn__reduce_prepare(kn_tensor *x, const bool *mask, kn_rplan *p);

/* Deterministic sum of n f32 / f64 values (fixed blocking as above). */
double kn__sum_f32(const float *x, int64_t n);
double kn__sum_f64(const double *x, int64_t n);

#endif
