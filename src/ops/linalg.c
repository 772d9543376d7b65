/*
 * linalg.c - the linear-algebra op family: matmul (torch.matmul) and linear (x W^T + b).
 *
 * Both ops are thin drivers over the one GEMM entry (kernels/gemm.h): operands that BLAS can
 * read in place (a row-major matrix, or the transpose of one, with a valid leading dimension)
 * are passed as pointers plus trans flags, never copied; anything else is made contiguous once.
 * matmul folds the batch of `a` into GEMM rows when `b` has no batch; otherwise it loops over
 * the broadcast batch, in parallel over batch entries when each product is small (BLAS is then
 * single-threaded inside the parallel region, so the pools never oversubscribe).
 * forward_ref runs the same drivers with the portable blocked GEMM instead of BLAS.
 *
 * Does not: support integer dtypes, or anything beyond f32/f64.
 * Invariants: every output element is produced by one GEMM walking K in order, so results do
 * not depend on the thread count. Backward rules are written with ops (matmul, transpose,
 * reshape, sum, kn__sum_to), so gradients of gradients work.
 */
#include <omp.h>

#include <math.h>

#include "kernels/gemm.h"
#include "ops/op_impl.h"

/* ---- layout of a logical (R x Cc) matrix with element strides (rs, cs) ---- */

/* Whether GEMM can read the matrix in place: either row-major (trans = false, ld = row
 * stride) or the transpose of a row-major (Cc x R) matrix (trans = true, ld = column stride). */
static bool mat_layout(int64_t R, int64_t Cc, int64_t rs, int64_t cs, bool *trans, int64_t *ld) {
    int64_t cmin = Cc > 1 ? Cc : 1, rmin = R > 1 ? R : 1;
    if ((cs == 1 || Cc <= 1) && (R <= 1 || rs >= cmin)) {
        *trans = false;
        *ld = R <= 1 ? cmin : rs;
        return true;
    }
    if ((rs == 1 || R <= 1) && (Cc <= 1 || cs >= rmin)) {
        *trans = true;
        *ld = Cc <= 1 ? rmin : cs;
        return true;
    }
    return false;
}

static int64_t imax(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/* ============================== matmul ============================== */

typedef struct {
    int64_t M, K, N;
    int nbd;                     /* broadcast batch dims */
    int64_t bshape[KN_MAX_DIMS]; /* broadcast batch shape */
} mm_shape;

static kn_status mm_shapes(const char *op, const kn_tensor *a, const kn_tensor *b, mm_shape *s) {
    char s1[128], s2[128];
    int na = a->ndim, nb = b->ndim;
    if (na < 1 || nb < 1)
        return kn__err(KN_ESHAPE, "%s: both arguments need at least 1 dimension, got %s and %s", op,
                       kn__shape_str(s1, sizeof s1, na, a->shape),
                       kn__shape_str(s2, sizeof s2, nb, b->shape));
    s->M = na >= 2 ? a->shape[na - 2] : 1;
    s->K = a->shape[na - 1];
    int64_t Kb = nb >= 2 ? b->shape[nb - 2] : b->shape[0];
    s->N = nb >= 2 ? b->shape[nb - 1] : 1;
    if (s->K != Kb)
        return kn__err(KN_ESHAPE, "%s: shapes %s and %s cannot be multiplied (%lld != %lld)", op,
                       kn__shape_str(s1, sizeof s1, na, a->shape),
                       kn__shape_str(s2, sizeof s2, nb, b->shape), (long long)s->K, (long long)Kb);
    int nba = na > 2 ? na - 2 : 0, nbb = nb > 2 ? nb - 2 : 0;
    kn_status st = kn__broadcast_shape(op, nba, a->shape, nbb, b->shape, &s->nbd, s->bshape);
    if (st != KN_OK) {
        kn_clear_error();
        return kn__err(KN_ESHAPE, "%s: batch dims of %s and %s cannot be broadcast", op,
                       kn__shape_str(s1, sizeof s1, na, a->shape),
                       kn__shape_str(s2, sizeof s2, nb, b->shape));
    }
    return KN_OK;
}

static kn_status matmul_infer(kn_opctx *c) {
    kn_status st = kn__same_dtype(c, 0, 1);
    if (st != KN_OK) return st;
    const kn_tensor *a = c->in[0], *b = c->in[1];
    mm_shape s;
    if ((st = mm_shapes("matmul", a, b, &s)) != KN_OK) return st;
    int n = s.nbd;
    int64_t *o = c->out_shape[0];
    memcpy(o, s.bshape, sizeof(int64_t) * (size_t)n);
    if (a->ndim >= 2) o[n++] = s.M;
    if (b->ndim >= 2) o[n++] = s.N;
    c->out_ndim[0] = n;
    c->out_dtype[0] = a->dtype;
    return kn__check_shape("matmul", n, o, a->dtype);
}

/* One operand as a batch of matrices: base pointer, batch strides over the broadcast batch
 * shape, and the GEMM layout of each matrix. */
typedef struct {
    kn_tensor *t; /* owned ref (possibly a contiguous copy) */
    bool trans;
    int64_t ld;
    int64_t bstr[KN_MAX_DIMS];
} mm_operand;

/* R x Cc matrix dims of operand t (vector operands: a row vector for a, a column for b). */
static kn_status mm_operand_init(mm_operand *op, kn_tensor *t, bool is_a, const mm_shape *s) {
    int nd = t->ndim;
    int64_t R = is_a ? s->M : s->K, Cc = is_a ? s->K : s->N;
    for (int pass = 0; pass < 2; pass++) {
        int64_t rs, cs;
        if (nd >= 2) {
            rs = t->strides[nd - 2];
            cs = t->strides[nd - 1];
        } else if (is_a) { /* (K) as (1, K) */
            rs = 0;
            cs = t->strides[0];
        } else { /* (K) as (K, 1) */
            rs = t->strides[0];
            cs = 0;
        }
        if (mat_layout(R, Cc, rs, cs, &op->trans, &op->ld)) {
            op->t = pass == 0 ? kn_tensor_retain(t) : t;
            int nbt = nd > 2 ? nd - 2 : 0, off = s->nbd - nbt;
            for (int i = 0; i < s->nbd; i++) {
                int j = i - off;
                op->bstr[i] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j];
            }
            return KN_OK;
        }
        if (pass == 1) break;
        t = kn__contig(t);
        if (!t) return kn_last_status();
    }
    kn_tensor_free(t);
    return kn__err(KN_EINTERNAL, "matmul: no GEMM layout for a contiguous operand");
}

/* True when a's batch walks its rows at a uniform stride (so the batch folds into M). */
static bool mm_batch_folds(const mm_operand *a, const mm_operand *b, const mm_shape *s) {
    if (a->trans) return false;
    for (int i = 0; i < s->nbd; i++)
        if (b->bstr[i] != 0 && s->bshape[i] != 1) return false;
    int64_t expect = s->M * a->ld;
    for (int i = s->nbd - 1; i >= 0; i--) {
        if (s->bshape[i] == 1) continue;
        if (a->bstr[i] != expect) return false;
        expect *= s->bshape[i];
    }
    return true;
}

static kn_status matmul_run(kn_opctx *c, bool ref) {
    kn_tensor *out = c->out[0];
    kn_dtype dt = out->dtype;
    size_t es = kn_dtype_size(dt);
    mm_shape s;
    kn_status st = mm_shapes("matmul", c->in[0], c->in[1], &s);
    if (st != KN_OK) return st;
    int64_t B = kn__numel(s.nbd, s.bshape);
    if (B == 0 || s.M == 0 || s.N == 0) return KN_OK;
    if (s.K == 0) { /* empty sum: zeros (and no layout questions about empty operands) */
        memset(kn__ptr(out), 0, (size_t)(B * s.M * s.N) * es);
        return KN_OK;
    }
    mm_operand oa = {0}, ob = {0};
    if ((st = mm_operand_init(&oa, c->in[0], true, &s)) != KN_OK) return st;
    if ((st = mm_operand_init(&ob, c->in[1], false, &s)) != KN_OK) {
        kn_tensor_free(oa.t);
        return st;
    }
    const char *pa = kn__ptr(oa.t), *pb = kn__ptr(ob.t);
    char *pc = kn__ptr(out);
    int64_t M = s.M, N = s.N, K = s.K;
    if (B == 1 || mm_batch_folds(&oa, &ob, &s)) {
        kn__gemm(dt, ref, oa.trans, ob.trans, M * B, N, K, 1.0, pa, oa.ld, pb, ob.ld, 0.0, pc, N);
    } else {
        int nth = kn__threads();
        double work = (double)M * (double)N * (double)K;
        bool par = nth > 1 && B >= 2 && work <= 4194304.0;
        KN_PAR_FOR(
            par, nth, bi, B, int64_t rem = bi, offa = 0, offb = 0;
            for (int d = s.nbd - 1; d >= 0; d--) {
                int64_t idx = rem % s.bshape[d];
                rem /= s.bshape[d];
                offa += idx * oa.bstr[d];
                offb += idx * ob.bstr[d];
            } kn__gemm(dt, ref, oa.trans, ob.trans, M, N, K, 1.0, pa + offa * (int64_t)es, oa.ld,
                       pb + offb * (int64_t)es, ob.ld, 0.0, pc + bi * M * N * (int64_t)es, N););
    }
    kn_tensor_free(oa.t);
    kn_tensor_free(ob.t);
    return KN_OK;
}

static kn_status matmul_forward(kn_opctx *c) {
    return matmul_run(c, false);
}
static kn_status matmul_forward_ref(kn_opctx *c) {
    return matmul_run(c, true);
}

static kn_status matmul_backward(kn_bwctx *c) {
    kn_tensor *a = c->in[0], *b = c->in[1], *g = c->gout[0];
    int na = a->ndim, nb = b->ndim;
    /* promote vectors to matrices the way the forward did: a (K) -> (1, K), b (K) -> (K, 1) */
    kn_tensor *a2 = na == 1 ? kn_unsqueeze(a, 0) : a;
    kn_tensor *b2 = nb == 1 ? kn_unsqueeze(b, 1) : b;
    kn_tensor *g2 = g;
    if (nb == 1) g2 = kn_unsqueeze(g2, g2->ndim);
    if (g2 && na == 1) g2 = kn_unsqueeze(g2, g2->ndim - 1);
    if (!a2 || !b2 || !g2) return kn_last_status();
    int64_t K = a2->shape[a2->ndim - 1], N = b2->shape[b2->ndim - 1];
    if (c->needs[0]) {
        /* ga = g b^T, summed over the batch dims that a was broadcast along */
        kn_tensor *ga = kn_matmul(g2, kn_transpose(b2, -1, -2));
        ga = kn__sum_to(ga, a2->ndim, a2->shape);
        if (ga && na == 1) ga = kn_reshape(ga, 1, a->shape);
        if (!ga) return kn_last_status();
        c->gin[0] = ga;
    }
    if (c->needs[1]) {
        kn_tensor *gb;
        if (b2->ndim == 2 && a2->ndim >= 3) {
            /* b shared by the whole batch: one GEMM over the folded batch, (R,K)^T (R,N) */
            int64_t R = kn__numel(a2->ndim - 1, a2->shape);
            int64_t sa[2] = {R, K}, sg[2] = {R, N};
            kn_tensor *af = kn_reshape(a2, 2, sa), *gf = kn_reshape(g2, 2, sg);
            gb = kn_matmul(kn_transpose(af, 0, 1), gf);
        } else {
            gb = kn_matmul(kn_transpose(a2, -1, -2), g2);
            gb = kn__sum_to(gb, b2->ndim, b2->shape);
        }
        if (gb && nb == 1) gb = kn_reshape(gb, 1, b->shape);
        if (!gb) return kn_last_status();
        c->gin[1] = gb;
    }
    return KN_OK;
}

static const kn_opdef op_matmul = {
    .name = "matmul",
    .min_in = 2,
    .max_in = 2,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = matmul_infer,
    .forward = matmul_forward,
    .forward_ref = matmul_forward_ref,
    .backward = matmul_backward,
    .onnx = "MatMul",
    .doc = "torch.matmul: 1-D and N-D operands, broadcast batch dims",
};

/* ============================== linear ============================== */

static kn_status linear_infer(kn_opctx *c) {
    kn_status st = kn__same_dtype(c, 0, c->nin - 1);
    if (st != KN_OK) return st;
    const kn_tensor *x = c->in[0], *w = c->in[1];
    char s1[128], s2[128];
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return kn__err(KN_ESHAPE,
                       "linear: input %s and weight %s do not fit (need x (*, in), W (out, in))",
                       kn__shape_str(s1, sizeof s1, x->ndim, x->shape),
                       kn__shape_str(s2, sizeof s2, w->ndim, w->shape));
    if (c->nin == 3) {
        const kn_tensor *b = c->in[2];
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return kn__err(KN_ESHAPE, "linear: bias %s does not fit weight %s (need (%lld,))",
                           kn__shape_str(s1, sizeof s1, b->ndim, b->shape),
                           kn__shape_str(s2, sizeof s2, w->ndim, w->shape), (long long)w->shape[0]);
    }
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][x->ndim - 1] = w->shape[0];
    return KN_OK;
}

/* x (*, in) viewed as an (R, in) matrix: whether the leading dims are evenly spaced rows. */
static bool rows_uniform(const kn_tensor *x, int64_t *rs) {
    int nd = x->ndim;
    if (nd == 1) {
        *rs = 0;
        return true;
    }
    int64_t expect = -1;
    for (int i = nd - 2; i >= 0; i--) {
        if (x->shape[i] == 1) continue;
        if (expect < 0) {
            expect = x->strides[i];
            *rs = expect;
        } else if (x->strides[i] != expect) {
            return false;
        }
        expect *= x->shape[i];
    }
    if (expect < 0) *rs = 0; /* a single row */
    return true;
}

static kn_status linear_run(kn_opctx *c, bool ref) {
    kn_tensor *x = c->in[0], *w = c->in[1], *out = c->out[0];
    kn_dtype dt = out->dtype;
    int64_t in = w->shape[1], nout = w->shape[0];
    int64_t R = kn__numel(x->ndim - 1, x->shape);
    if (R == 0 || nout == 0) return KN_OK;
    kn_tensor *xc = NULL, *wc = NULL;
    bool ta = false, tb = false;
    int64_t lda = 0, ldb = 0, rs = 0;
    if (!(rows_uniform(x, &rs) && mat_layout(R, in, rs, x->strides[x->ndim - 1], &ta, &lda))) {
        if (!(xc = kn__contig(x))) return kn_last_status();
        ta = false;
        lda = imax(in, 1);
    }
    /* B = W^T (in x out) has element strides (w.stride[1], w.stride[0]) */
    if (!mat_layout(in, nout, w->strides[1], w->strides[0], &tb, &ldb)) {
        if (!(wc = kn__contig(w))) {
            kn_tensor_free(xc);
            return kn_last_status();
        }
        tb = true;
        ldb = imax(in, 1);
    }
    char *po = kn__ptr(out);
    double beta = 0.0;
    if (c->nin == 3) {
        /* the bias is the GEMM's initial C (beta = 1): no separate pass over the output */
        const kn_tensor *b = c->in[2];
        const char *pb = kn__ptr(b);
        int64_t bs = b->strides[0];
        int nth = kn__threads();
#pragma omp parallel for num_threads(nth) if (R * nout > 65536) schedule(static)
        for (int64_t r = 0; r < R; r++) {
            if (dt == KN_F32) {
                float *o = (float *)po + r * nout;
                const float *bb = (const float *)pb;
                for (int64_t j = 0; j < nout; j++)
                    o[j] = bb[j * bs];
            } else {
                double *o = (double *)po + r * nout;
                const double *bb = (const double *)pb;
                for (int64_t j = 0; j < nout; j++)
                    o[j] = bb[j * bs];
            }
        }
        beta = 1.0;
    }
    kn__gemm(dt, ref, ta, tb, R, nout, in, 1.0, kn__ptr(xc ? xc : x), lda, kn__ptr(wc ? wc : w),
             ldb, beta, po, nout);
    kn_tensor_free(xc);
    kn_tensor_free(wc);
    return KN_OK;
}

static kn_status linear_forward(kn_opctx *c) {
    return linear_run(c, false);
}
static kn_status linear_forward_ref(kn_opctx *c) {
    return linear_run(c, true);
}

static kn_status linear_backward(kn_bwctx *c) {
    kn_tensor *x = c->in[0], *w = c->in[1], *g = c->gout[0];
    int64_t in = w->shape[1], nout = w->shape[0];
    int64_t R = kn__numel(x->ndim - 1, x->shape);
    if (c->needs[0]) {
        /* gx = g W : (*, out) @ (out, in); the batch folds into one GEMM */
        kn_tensor *gx = kn_matmul(g, w);
        if (!gx) return kn_last_status();
        c->gin[0] = gx;
    }
    if (c->needs[1] || (c->nin == 3 && c->needs[2])) {
        int64_t sg[2] = {R, nout}, sx[2] = {R, in};
        kn_tensor *g2 = kn_reshape(g, 2, sg);
        if (c->needs[1]) {
            /* gW = g2^T x2 : (out, R) @ (R, in), one GEMM with a transposed view */
            kn_tensor *gw = kn_matmul(kn_transpose(g2, 0, 1), kn_reshape(x, 2, sx));
            if (!gw) return kn_last_status();
            c->gin[1] = gw;
        }
        if (c->nin == 3 && c->needs[2]) {
            int ax = 0;
            kn_tensor *gb = kn_sum(g2, &ax, 1, false);
            if (!gb) return kn_last_status();
            c->gin[2] = gb;
        }
    }
    return KN_OK;
}

static const kn_opdef op_linear = {
    .name = "linear",
    .min_in = 2,
    .max_in = 3,
    .nout = 1,
    .dtypes = KN_DT_FLOAT,
    .infer = linear_infer,
    .forward = linear_forward,
    .forward_ref = linear_forward_ref,
    .backward = linear_backward,
    .onnx = "Gemm",
    .doc = "y = x W^T + b; x (*, in), W (out, in), b (out) optional",
};

/* ============================== linear_packed ==============================
 * linear with its weight packed ahead of time (kernels/gemm.h, kn__sgemm_pack_wt): what the
 * graph compiler's prepack pass turns a frozen graph's f32 linear into. Inputs x (*, in), wp (the
 * packed W, 1-D), b (out) optional; attrs "out", "in". Inference only (no backward). */
static kn_status linear_packed_infer(kn_opctx *c) {
    kn_status st = kn__same_dtype(c, 0, c->nin - 1);
    if (st != KN_OK) return st;
    const kn_tensor *x = c->in[0], *wp = c->in[1];
    int64_t N = kn__attr_int(c->attrs, "out", -1), K = kn__attr_int(c->attrs, "in", -1);
    char s1[128];
    if (N < 1 || K < 1 || wp->ndim != 1 || wp->shape[0] != kn__sgemm_packed_size(N, K))
        return kn__err(KN_ESHAPE, "linear_packed: packed weight %s does not hold (%lld, %lld)",
                       kn__shape_str(s1, sizeof s1, wp->ndim, wp->shape), (long long)N,
                       (long long)K);
    if (x->ndim < 1 || x->shape[x->ndim - 1] != K)
        return kn__err(KN_ESHAPE, "linear_packed: input %s does not end in %lld",
                       kn__shape_str(s1, sizeof s1, x->ndim, x->shape), (long long)K);
    if (c->nin == 3 && (c->in[2]->ndim != 1 || c->in[2]->shape[0] != N))
        return kn__err(KN_ESHAPE, "linear_packed: bias does not have %lld values", (long long)N);
    kn__out_like(c, 0, x, x->dtype);
    c->out_shape[0][x->ndim - 1] = N;
    return KN_OK;
}

static kn_status linear_packed_run(kn_opctx *c, bool ref) {
    int64_t N = kn__attr_int(c->attrs, "out", 1), K = kn__attr_int(c->attrs, "in", 1);
    kn_tensor *x = kn__contig(c->in[0]), *b = c->nin == 3 ? kn__contig(c->in[2]) : NULL;
    kn_status st = x && (c->nin < 3 || b) ? KN_OK : kn_last_status();
    int64_t M = x ? kn_tensor_numel(x) / K : 0;
    const float *px = x ? (const float *)kn__ptr(x) : NULL, *wp = (const float *)kn__ptr(c->in[1]);
    const float *pb = b ? (const float *)kn__ptr(b) : NULL;
    float *y = (float *)kn__ptr(c->out[0]);
    if (st == KN_OK && (ref || !kn__sgemm_packed(M, N, K, px, K, wp, pb, y, N))) {
        /* reference: the same order per output (bias, then k ascending), plain loops */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                const float *col = wp + (n / 32) * K * 32 + n % 32;
                float acc = pb ? pb[n] : 0.0f;
                for (int64_t k = 0; k < K; k++)
                    acc = fmaf(px[m * K + k], col[k * 32], acc);
                y[m * N + n] = acc;
            }
    }
    kn_tensor_free(x);
    kn_tensor_free(b);
    return st;
}

static kn_status linear_packed_forward(kn_opctx *c) {
    return linear_packed_run(c, false);
}
static kn_status linear_packed_forward_ref(kn_opctx *c) {
    return linear_packed_run(c, true);
}

const kn_opdef kn__op_linear_packed = {
    .name = "linear_packed",
    .min_in = 2,
    .max_in = 3,
    .nout = 1,
    .dtypes = KN_DT(KN_F32),
    .flags = KN_OPF_INTERNAL,
    .infer = linear_packed_infer,
    .forward = linear_packed_forward,
    .forward_ref = linear_packed_forward_ref,
    .doc = "linear with a weight packed by the prepack pass (frozen graphs); attrs out, in",
};

const kn_opdef *const kn__ops_linalg[] = {&op_matmul, &op_linear, &kn__op_linear_packed, NULL};

kn_tensor *kn_matmul(kn_tensor *a, kn_tensor *b) {
    kn_tensor *in[2] = {a, b};
    return kn__op1(&op_matmul, in, 2, NULL);
}

kn_tensor *kn_linear(kn_tensor *x, kn_tensor *w, kn_tensor *b) {
    kn_tensor *in[3] = {x, w, b};
    return kn__op1(&op_linear, in, b ? 3 : 2, NULL);
}
