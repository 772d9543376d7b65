/*
 * ops_rnn.c - ONNX recurrent ops onto kiln's: RNN, GRU and LSTM (all opsets; `layout` 0/1 from
 * opset 14), forward / reverse / bidirectional, optional B, initial_h, initial_c and peepholes P,
 * activations (Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid,
 * Elu, Softsign, Softplus) with activation_alpha / activation_beta consumed in order by the
 * functions that take them, clip, GRU's linear_before_reset and LSTM's input_forget.
 *
 * The time loop is unrolled at import (the sequence length is static). Internally batch-major:
 * the input projection of all steps is one matmul (batch, seq, input) x (input, gates*hidden)
 * plus the biases, then each step adds H(t-1) R^T and applies the gates with elementwise ops;
 * Y / Y_h / Y_c are stacked and permuted to the node's layout at the end. The first step of a
 * direction without initial_h / initial_c skips the recurrent terms (they are zero), so no
 * batch-sized constant is made and, with layout 1 (batch first), the batch dimension can stay
 * symbolic. Gate order: LSTM i, o, f, c (peepholes i, o, f); GRU z, r, h.
 *
 * Not supported (KN_EUNSUPPORTED): sequence_lens with a value other than seq_length (padded
 * batches), an empty sequence. Reading sequence_lens freezes it when it is a graph input.
 */
#include <math.h>
#include <string.h>

#include "onnx/onnx_impl.h"

enum { K_RNN, K_GRU, K_LSTM };

/* ---- activations ---- */

enum {
    A_RELU,
    A_TANH,
    A_SIGMOID,
    A_AFFINE,
    A_LEAKY,
    A_THRESH,
    A_STANH,
    A_HSIG,
    A_ELU,
    A_SOFTSIGN,
    A_SOFTPLUS
};

static const struct {
    const char *name;
    int fn;
    bool alpha, beta;    /* takes activation_alpha / activation_beta */
    double def_a, def_b; /* defaults of the ONNX operators */
} act_table[] = {
    {"Relu", A_RELU, false, false, 0, 0},
    {"Tanh", A_TANH, false, false, 0, 0},
    {"Sigmoid", A_SIGMOID, false, false, 0, 0},
    {"Affine", A_AFFINE, true, true, 1.0, 0.0},
    {"LeakyRelu", A_LEAKY, true, false, 0.01, 0},
    {"ThresholdedRelu", A_THRESH, true, false, 1.0, 0},
    {"ScaledTanh", A_STANH, true, true, 1.0, 1.0},
    {"HardSigmoid", A_HSIG, true, true, 0.2, 0.5},
    {"Elu", A_ELU, true, false, 1.0, 0},
    {"Softsign", A_SOFTSIGN, false, false, 0, 0},
    {"Softplus", A_SOFTPLUS, false, false, 0, 0},
};

typedef struct act {
    int fn;
    double alpha, beta;
} act;

static bool name_is(kn_onnx_str s, const char *name) {
    size_t n = strlen(name);
    if (s.n != n) return false;
    for (size_t i = 0; i < n; i++) {
        char a = s.p[i], b = name[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z') b = (char)(b - 'A' + 'a');
        if (a != b) return false;
    }
    return true;
}

static kn_tensor *act_apply(const act *a, kn_tensor *t) {
    switch (a->fn) {
    case A_RELU: return kn_relu(t);
    case A_TANH: return kn_tanh(t);
    case A_SIGMOID: return kn_sigmoid(t);
    case A_AFFINE: return kn_add_scalar(kn_mul_scalar(t, a->alpha), a->beta);
    case A_LEAKY: return kn_leaky_relu(t, a->alpha);
    case A_THRESH:
        if (!t) return NULL;
        return kn_where(kn_ge(t, kn__ox_scalar_like(t, a->alpha)), t, kn__ox_scalar_like(t, 0));
    case A_STANH: return kn_mul_scalar(kn_tanh(kn_mul_scalar(t, a->beta)), a->alpha);
    case A_HSIG: return kn_clamp(kn_add_scalar(kn_mul_scalar(t, a->alpha), a->beta), 0.0, 1.0);
    case A_ELU: return kn_elu(t, a->alpha);
    case A_SOFTSIGN:
        if (!t) return NULL;
        return kn_div(t, kn_add(kn__ox_scalar_like(t, 1), kn_abs(t)));
    default: /* A_SOFTPLUS: log(1 + e^x) without a linear threshold */
        return kn_add(kn_relu(t), kn_log1p(kn_exp(kn_neg(kn_abs(t)))));
    }
}

/* ---- configuration ---- */

typedef struct cfg {
    int kind;
    int nact;  /* activations per direction: 1, 2, 3 */
    int gates; /* 1, 3, 4 */
    int ndir;
    bool reverse; /* one direction, reversed */
    int64_t hidden;
    act acts[2][3];
    bool has_clip;
    double clip;
    bool lbr;          /* GRU linear_before_reset */
    bool input_forget; /* LSTM */
    int layout;
} cfg;

static kn_status read_acts(const kn_ox *x, cfg *c) {
    static const int defaults[3][3] = {{A_TANH}, {A_SIGMOID, A_TANH}, {A_SIGMOID, A_TANH, A_TANH}};
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < c->nact; k++)
            c->acts[d][k] = (act){defaults[c->kind][k], 0, 0};
    const kn_onnx_attr *a = kn__ox_attr(x, "activations");
    if (!a || a->n_strings == 0) return KN_OK;
    size_t n = a->n_strings;
    if (n != (size_t)c->nact && n != (size_t)(c->nact * c->ndir))
        return kn__err(KN_EINVAL, "activations has %zu names, expected %d (%d per direction)", n,
                       c->nact * c->ndir, c->nact);
    const kn_onnx_attr *al = kn__ox_attr(x, "activation_alpha");
    const kn_onnx_attr *be = kn__ox_attr(x, "activation_beta");
    size_t ia = 0, ib = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0, nt = sizeof act_table / sizeof *act_table;
        while (k < nt && !name_is(a->strings[i], act_table[k].name))
            k++;
        if (k == nt)
            return kn__err(KN_EUNSUPPORTED, "activation '%.*s' is not supported",
                           (int)(a->strings[i].n > 64 ? 64 : a->strings[i].n), a->strings[i].p);
        act v = {act_table[k].fn, act_table[k].def_a, act_table[k].def_b};
        if (act_table[k].alpha && al && ia < al->n_floats) v.alpha = al->floats[ia++];
        if (act_table[k].beta && be && ib < be->n_floats) v.beta = be->floats[ib++];
        /* names for one direction only: the same functions for both */
        for (int d = 0; d < 2; d++)
            if (n == (size_t)(c->nact * c->ndir) ? (int)i / c->nact == d : true)
                c->acts[d][(int)i % c->nact] = v;
    }
    return KN_OK;
}

static kn_status read_cfg(const kn_ox *x, int kind, cfg *c) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->nact = kind == K_RNN ? 1 : kind == K_GRU ? 2 : 3;
    c->gates = kind == K_RNN ? 1 : kind == K_GRU ? 3 : 4;
    char buf[32];
    const char *dir = kn__ox_str(x, "direction", "forward", buf, sizeof buf);
    if (!strcmp(dir, "forward"))
        c->ndir = 1;
    else if (!strcmp(dir, "reverse"))
        c->ndir = 1, c->reverse = true;
    else if (!strcmp(dir, "bidirectional"))
        c->ndir = 2;
    else
        return kn__err(KN_EINVAL, "direction '%s' is not forward, reverse or bidirectional", dir);
    c->hidden = kn__ox_int(x, "hidden_size", -1);
    c->has_clip = kn__ox_attr(x, "clip") != NULL;
    c->clip = kn__ox_float(x, "clip", 0.0);
    if (c->has_clip && !(c->clip > 0))
        return kn__err(KN_EINVAL, "clip must be positive, got %g", c->clip);
    c->lbr = kn__ox_int(x, "linear_before_reset", 0) != 0;
    c->input_forget = kn__ox_int(x, "input_forget", 0) != 0;
    int64_t layout = kn__ox_int(x, "layout", 0);
    if (layout != 0 && layout != 1)
        return kn__err(KN_EINVAL, "layout must be 0 or 1, got %lld", (long long)layout);
    c->layout = (int)layout;
    return read_acts(x, c);
}

/* ---- helpers ---- */

/* t[i] along dim, that dim removed */
static kn_tensor *pick(kn_tensor *t, int dim, int64_t i) {
    return kn_squeeze(kn_slice(t, dim, i, i + 1, 1), dim);
}

/* t[..., lo*h : hi*h] on the last dim */
static kn_tensor *cols(kn_tensor *t, int64_t lo, int64_t hi, int64_t h) {
    return kn_slice(t, kn_tensor_ndim(t) - 1, lo * h, hi * h, 1);
}

static kn_tensor *clip(const cfg *c, kn_tensor *t) {
    return c->has_clip ? kn_clamp(t, -c->clip, c->clip) : t;
}

/* a + b, b may be NULL (a zero term) */
static kn_tensor *add_opt(kn_tensor *a, kn_tensor *b) {
    return b ? kn_add(a, b) : a;
}

/* concatenation of n tensors along dim, in groups (kiln's concat takes at most KN_MAX_INS) */
static kn_tensor *concat_many(kn_tensor **ts, int n, int dim) {
    if (n <= KN_MAX_INS) return kn_concat(ts, n, dim);
    int ng = (n + KN_MAX_INS - 1) / KN_MAX_INS;
    kn_tensor **g = kn__malloc(sizeof *g * (size_t)ng);
    if (!g) return NULL;
    for (int i = 0; i < ng; i++) {
        int k = n - i * KN_MAX_INS < KN_MAX_INS ? n - i * KN_MAX_INS : KN_MAX_INS;
        g[i] = kn_concat(ts + (size_t)i * KN_MAX_INS, k, dim);
    }
    kn_tensor *r = concat_many(g, ng, dim);
    kn__free(g);
    return r;
}

static kn_tensor *stack_many(kn_tensor **ts, int n, int dim) {
    if (n <= KN_MAX_INS) return kn_stack(ts, n, dim);
    for (int i = 0; i < n; i++)
        if (!(ts[i] = kn_unsqueeze(ts[i], dim))) return NULL;
    return concat_many(ts, n, dim);
}

static kn_status check_shape(kn_tensor *t, const char *what, int nd, const int64_t *want,
                             kn_dtype dt) {
    if (kn_tensor_dtype(t) != dt)
        return kn__err(KN_EDTYPE, "%s has dtype %s, X has %s", what,
                       kn_dtype_name(kn_tensor_dtype(t)), kn_dtype_name(dt));
    bool ok = kn_tensor_ndim(t) == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = kn_tensor_shape(t)[i] == want[i];
    if (ok) return KN_OK;
    char got[128] = "", exp[128] = "";
    size_t p = 0, q = 0;
    for (int i = 0; i < kn_tensor_ndim(t) && p < sizeof got; i++)
        p += (size_t)snprintf(got + p, sizeof got - p, "%s%lld", i ? ", " : "",
                              (long long)kn_tensor_shape(t)[i]);
    for (int i = 0; i < nd && q < sizeof exp; i++)
        q += (size_t)snprintf(exp + q, sizeof exp - q, "%s%lld", i ? ", " : "", (long long)want[i]);
    return kn__err(KN_ESHAPE, "%s has shape (%s), expected (%s)", what, got, exp);
}

/* ---- one direction ---- */

typedef struct dir_in {
    kn_tensor *x;       /* (B, S, I) */
    kn_tensor *w, *r;   /* (G*H, I), (G*H, H) */
    kn_tensor *b;       /* (2*G*H) or NULL */
    kn_tensor *p;       /* (3*H) or NULL */
    kn_tensor *h0, *c0; /* (B, H) or NULL */
} dir_in;

/* Runs direction d over all steps: ys[t] (may be NULL) gets H at time t, *hn / *cn the last. */
static kn_status run_dir(const cfg *c, int d, const dir_in *in, kn_tensor **ys, kn_tensor **hn,
                         kn_tensor **cn) {
    const int64_t S = kn_tensor_shape(in->x)[1], H = c->hidden;
    const int G = c->gates;
    const act *f = &c->acts[d][0], *g = &c->acts[d][1], *h_act = &c->acts[d][2];
    bool rev = c->reverse || d == 1;

    /* input projection of all steps plus the biases that sit outside any gate product */
    kn_tensor *xw = kn_matmul(in->x, kn_transpose(in->w, 0, 1)); /* (B, S, G*H) */
    kn_tensor *rbh = NULL;                                       /* GRU linear_before_reset */
    if (in->b) {
        kn_tensor *wb = cols(in->b, 0, G, H), *rb = cols(in->b, G, 2 * G, H);
        kn_tensor *bias;
        if (c->kind == K_GRU && c->lbr) {
            kn_tensor *parts[2] = {kn_add(cols(wb, 0, 2, H), cols(rb, 0, 2, H)), cols(wb, 2, 3, H)};
            bias = kn_concat(parts, 2, 0);
            rbh = cols(rb, 2, 3, H);
        } else {
            bias = kn_add(wb, rb);
        }
        xw = kn_add(xw, bias);
    }
    if (!xw) return kn_last_status();

    /* recurrent weights, transposed: (H, G*H); GRU splits them into zr and h */
    kn_tensor *rt = NULL, *rt_zr = NULL, *rt_h = NULL;
    if (c->kind == K_GRU) {
        rt_zr = kn_transpose(kn_slice(in->r, 0, 0, 2 * H, 1), 0, 1);
        rt_h = kn_transpose(kn_slice(in->r, 0, 2 * H, 3 * H, 1), 0, 1);
    } else {
        rt = kn_transpose(in->r, 0, 1);
    }
    kn_tensor *pi = NULL, *po = NULL, *pf = NULL;
    if (in->p) pi = cols(in->p, 0, 1, H), po = cols(in->p, 1, 2, H), pf = cols(in->p, 2, 3, H);

    kn_tensor *h = in->h0, *cell = in->c0;
    for (int64_t k = 0; k < S; k++) {
        int64_t t = rev ? S - 1 - k : k;
        kn_tensor *xt = pick(xw, 1, t); /* (B, G*H) */
        if (c->kind == K_RNN) {
            h = act_apply(f, clip(c, h ? kn_add(xt, kn_matmul(h, rt)) : xt));
        } else if (c->kind == K_LSTM) {
            kn_tensor *pre = h ? kn_add(xt, kn_matmul(h, rt)) : xt;
            kn_tensor *gt[4];
            int n = kn_chunk(pre, 4, 1, gt, 4);
            if (n < 0) return n;
            kn_tensor *ig = gt[0], *og = gt[1], *fg = gt[2], *cg = gt[3];
            if (cell && pi) ig = kn_add(ig, kn_mul(pi, cell));
            ig = act_apply(f, clip(c, ig));
            kn_tensor *cc = act_apply(g, clip(c, cg));
            kn_tensor *ic = kn_mul(ig, cc);
            if (cell) {
                if (c->input_forget) {
                    fg = kn_sub(kn__ox_scalar_like(in->x, 1), ig);
                } else {
                    if (pf) fg = kn_add(fg, kn_mul(pf, cell));
                    fg = act_apply(f, clip(c, fg));
                }
                cell = kn_add(kn_mul(fg, cell), ic);
            } else {
                cell = ic;
            }
            if (po) og = kn_add(og, kn_mul(po, cell));
            og = act_apply(f, clip(c, og));
            h = kn_mul(og, act_apply(h_act, cell));
        } else { /* GRU: zt, rt, ht; H = (1 - z) h~ + z H(t-1) = h~ + z (H(t-1) - h~) */
            kn_tensor *xz = cols(xt, 0, 1, H), *xr = cols(xt, 1, 2, H), *xh = cols(xt, 2, 3, H);
            if (h) {
                kn_tensor *hr = kn_matmul(h, rt_zr);
                xz = kn_add(xz, cols(hr, 0, 1, H));
                xr = kn_add(xr, cols(hr, 1, 2, H));
            }
            kn_tensor *z = act_apply(f, clip(c, xz));
            kn_tensor *r = act_apply(f, clip(c, xr));
            kn_tensor *rec = NULL; /* the reset-gated recurrent term */
            if (c->lbr) {
                kn_tensor *hh = h ? add_opt(kn_matmul(h, rt_h), rbh) : rbh;
                if (hh) rec = kn_mul(r, hh);
            } else if (h) {
                rec = kn_matmul(kn_mul(r, h), rt_h);
            }
            kn_tensor *cand = act_apply(g, clip(c, add_opt(xh, rec)));
            h = h ? kn_add(cand, kn_mul(z, kn_sub(h, cand))) : kn_sub(cand, kn_mul(z, cand));
        }
        if (!h) return kn_last_status();
        if (ys) ys[t] = h;
    }
    *hn = h;
    if (cn) *cn = cell;
    return KN_OK;
}

/* ---- the converter ---- */

static kn_status recurrent(kn_ox *x, int kind) {
    cfg c;
    kn_status st = read_cfg(x, kind, &c);
    if (st) return st;
    kn_tensor *X = kn__ox_need(x, 0), *W = kn__ox_need(x, 1), *R = kn__ox_need(x, 2);
    if (!X || !W || !R) return kn_last_status();
    kn_tensor *B = kn__ox_in(x, 3), *h0 = kn__ox_in(x, 5);
    kn_tensor *c0 = kind == K_LSTM ? kn__ox_in(x, 6) : NULL;
    kn_tensor *P = kind == K_LSTM ? kn__ox_in(x, 7) : NULL;
    kn_dtype dt = kn_tensor_dtype(X);
    if (dt != KN_F32 && dt != KN_F64)
        return kn__err(KN_EUNSUPPORTED, "X has dtype %s (kiln supports f32 and f64)",
                       kn_dtype_name(dt));
    if (kn_tensor_ndim(X) != 3)
        return kn__err(KN_ESHAPE, "X has rank %d, expected 3", kn_tensor_ndim(X));
    if (kn_tensor_ndim(R) != 3)
        return kn__err(KN_ESHAPE, "R has rank %d, expected 3", kn_tensor_ndim(R));
    if (c.hidden < 0) c.hidden = kn_tensor_shape(R)[2];
    if (c.hidden != kn_tensor_shape(R)[2])
        return kn__err(KN_ESHAPE, "hidden_size %lld does not match R's last dim %lld",
                       (long long)c.hidden, (long long)kn_tensor_shape(R)[2]);
    if (c.hidden < 1) return kn__err(KN_EINVAL, "hidden_size must be positive");
    if (!c.layout) X = kn_transpose(X, 0, 1); /* (B, S, I) */
    const int64_t N = kn_tensor_shape(X)[0], S = kn_tensor_shape(X)[1], I = kn_tensor_shape(X)[2];
    const int64_t H = c.hidden, GH = c.gates * H;
    if (S < 1) return kn__err(KN_EUNSUPPORTED, "an empty sequence (seq_length 0)");
    if (S > INT32_MAX) return kn__err(KN_ELIMIT, "seq_length %lld is too long", (long long)S);
    st = check_shape(W, "W", 3, (int64_t[]){c.ndir, GH, I}, dt);
    if (!st) st = check_shape(R, "R", 3, (int64_t[]){c.ndir, GH, H}, dt);
    if (!st && B) st = check_shape(B, "B", 2, (int64_t[]){c.ndir, 2 * GH}, dt);
    if (!st && P) st = check_shape(P, "P", 2, (int64_t[]){c.ndir, 3 * H}, dt);
    const int64_t st_shape[3] = {c.layout ? N : c.ndir, c.layout ? c.ndir : N, H};
    if (!st && h0) st = check_shape(h0, "initial_h", 3, st_shape, dt);
    if (!st && c0) st = check_shape(c0, "initial_c", 3, st_shape, dt);
    if (st) return st;

    /* sequence_lens: only the trivial "every sequence is full" */
    if (kn__ox_in(x, 4)) {
        if (N > INT32_MAX) return kn__err(KN_ELIMIT, "batch %lld is too large", (long long)N);
        int64_t *lens = kn__malloc(sizeof *lens * (size_t)(N ? N : 1));
        if (!lens) return kn_last_status();
        int n = kn__ox_in_ints(x, 4, lens, (int)N);
        st = n < 0 ? n : KN_OK;
        if (!st && n != N)
            st = kn__err(KN_ESHAPE, "sequence_lens has %d values for batch %lld", n, (long long)N);
        for (int i = 0; !st && i < n; i++)
            if (lens[i] != S)
                st = kn__err(KN_EUNSUPPORTED,
                             "sequence_lens[%d] = %lld: kiln supports only full sequences "
                             "(seq_length %lld)",
                             i, (long long)lens[i], (long long)S);
        kn__free(lens);
        if (st) return st;
    }

    bool want_y = x->nout > 0 && x->want[0];
    kn_tensor **ys = NULL;
    kn_tensor *yd[2] = {0}, *hn[2] = {0}, *cn[2] = {0};
    if (want_y && !(ys = kn__malloc(sizeof *ys * (size_t)S))) return kn_last_status();
    for (int d = 0; d < c.ndir && !st; d++) {
        dir_in in = {.x = X,
                     .w = pick(W, 0, d),
                     .r = pick(R, 0, d),
                     .b = B ? pick(B, 0, d) : NULL,
                     .p = P ? pick(P, 0, d) : NULL,
                     .h0 = h0 ? pick(h0, c.layout, d) : NULL,
                     .c0 = c0 ? pick(c0, c.layout, d) : NULL};
        st = run_dir(&c, d, &in, ys, &hn[d], &cn[d]);
        if (!st && want_y && !(yd[d] = stack_many(ys, (int)S, 1)))
            st = kn_last_status(); /* (B, S, H) */
    }
    kn__free(ys);
    if (st) return st;

    if (want_y) {
        kn_tensor *y = kn_stack(yd, c.ndir, 2);                      /* (B, S, D, H) */
        if (!c.layout) y = kn_permute(y, (const int[]){1, 2, 0, 3}); /* (S, D, B, H) */
        if ((st = kn__ox_set(x, 0, y))) return st;
    }
    for (int o = 1; o <= (kind == K_LSTM ? 2 : 1); o++) {
        if (o >= x->nout || !x->want[o]) continue;
        kn_tensor *s = kn_stack(o == 1 ? hn : cn, c.ndir, 1); /* (B, D, H) */
        if (!c.layout) s = kn_transpose(s, 0, 1);             /* (D, B, H) */
        if ((st = kn__ox_set(x, o, s))) return st;
    }
    return KN_OK;
}

static kn_status rnn(kn_ox *x) {
    return recurrent(x, K_RNN);
}

static kn_status gru(kn_ox *x) {
    return recurrent(x, K_GRU);
}

static kn_status lstm(kn_ox *x) {
    return recurrent(x, K_LSTM);
}

const kn_ox_op kn__ox_ops_rnn[] = {
    {"RNN", rnn, 1, 0, false},
    {"GRU", gru, 1, 0, false},
    {"LSTM", lstm, 1, 0, false},
    {NULL, NULL, 0, 0, false},
};
