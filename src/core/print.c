/*
 * print.c - PyTorch-style tensor printing: tensor([[1., 2.], [3., 4.]], requires_grad=True).
 * Floats: integer-valued data prints as "1.", otherwise fixed with 4 decimals, or scientific when
 * the magnitudes span more than 1e3 or exceed 1e8 (PyTorch's rule). Tensors over 1000 elements
 * are summarised with the first and last 3 entries of each dim.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

#include "core/core_impl.h"
#include "kiln/autograd.h"

typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) KN_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *ns = kn__realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

enum { EDGE = 3, SUMMARY_THRESHOLD = 1000 };

typedef struct {
    const kn_tensor *t;
    bool summarise, sci, intlike;
    int width;
} pctx;

static double val(const kn_tensor *t, const int64_t *idx) {
    int64_t off = t->offset;
    for (int k = 0; k < t->ndim; k++)
        off += idx[k] * t->strides[k];
    return kn__load_f64(t->dtype,
                        (const char *)t->storage->data + off * (int64_t)kn_dtype_size(t->dtype));
}

static int fmt_val(const pctx *p, double v, char *out, size_t len) {
    kn_dtype dt = p->t->dtype;
    if (dt == KN_BOOL) return snprintf(out, len, "%s", v != 0 ? "True" : "False");
    if (!kn_dtype_is_float(dt)) return snprintf(out, len, "%lld", (long long)v);
    if (isnan(v)) return snprintf(out, len, "nan");
    if (isinf(v)) return snprintf(out, len, v > 0 ? "inf" : "-inf");
    if (p->sci) return snprintf(out, len, "%.4e", v);
    if (p->intlike) return snprintf(out, len, "%.0f.", v);
    return snprintf(out, len, "%.4f", v);
}

/* Visits every printed element (honouring summarisation) to size the column width. */
static void scan(pctx *p, int dim, int64_t *idx, double *mx, double *mn, bool *intlike, int pass) {
    const kn_tensor *t = p->t;
    if (dim == t->ndim) {
        double v = val(t, idx);
        if (pass == 0) {
            if (isfinite(v)) {
                double a = fabs(v);
                if (a > *mx) *mx = a;
                if (a != 0 && a < *mn) *mn = a;
                if (v != floor(v)) *intlike = false;
            }
        } else {
            char b[64];
            int w = fmt_val(p, v, b, sizeof b);
            if (w > p->width) p->width = w;
        }
        return;
    }
    int64_t n = t->shape[dim];
    for (int64_t i = 0; i < n; i++) {
        if (p->summarise && n > 2 * EDGE && i == EDGE) i = n - EDGE;
        idx[dim] = i;
        scan(p, dim + 1, idx, mx, mn, intlike, pass);
    }
}

static void emit(pctx *p, sbuf *b, int dim, int64_t *idx, int indent) {
    const kn_tensor *t = p->t;
    if (dim == t->ndim) {
        char v[64];
        fmt_val(p, val(t, idx), v, sizeof v);
        sb_add(b, "%*s", p->width, v);
        return;
    }
    int64_t n = t->shape[dim];
    int col = 0;
    sb_add(b, "[");
    for (int64_t i = 0; i < n; i++) {
        if (p->summarise && n > 2 * EDGE && i == EDGE) {
            if (dim == t->ndim - 1) {
                sb_add(b, "  ...,");
            } else {
                sb_add(b, "...,");
                for (int k = dim; k < t->ndim - 1; k++)
                    sb_add(b, "\n");
                sb_add(b, "%*s", indent + 1, "");
            }
            i = n - EDGE;
        }
        idx[dim] = i;
        if (i > 0 && dim == t->ndim - 1) {
            /* wrap like PyTorch's linewidth=80: as many "value, " cells as fit */
            int per_line = (80 - indent) / (p->width + 2);
            if (per_line < 1) per_line = 1;
            if (++col >= per_line) {
                sb_add(b, "\n%*s", indent + 1, "");
                col = 0;
            } else {
                sb_add(b, " ");
            }
        }
        emit(p, b, dim + 1, idx, indent + 1);
        if (i < n - 1) {
            sb_add(b, ",");
            if (dim < t->ndim - 1) {
                for (int k = dim; k < t->ndim - 1; k++)
                    sb_add(b, "\n");
                sb_add(b, "%*s", indent + 1, "");
            }
        }
    }
    sb_add(b, "]");
}

char *kn_tensor_to_string(const kn_tensor *t) {
    sbuf b = {0};
    if (!t) return NULL;
    pctx p = {.t = t, .summarise = kn_tensor_numel(t) > SUMMARY_THRESHOLD, .intlike = true};
    int64_t idx[KN_MAX_DIMS] = {0};
    double mx = 0, mn = INFINITY;
    scan(&p, 0, idx, &mx, &mn, &p.intlike, 0);
    if (kn_dtype_is_float(t->dtype) && !p.intlike)
        p.sci = mx >= 1e8 || (mn != INFINITY && mx / mn > 1000.0 && mn < 1e-4);
    if (kn_dtype_is_float(t->dtype) && p.intlike && mx >= 1e8) p.sci = true, p.intlike = false;
    scan(&p, 0, idx, &mx, &mn, &p.intlike, 1);
    sb_add(&b, "tensor(");
    if (kn_tensor_numel(t) == 0) {
        sb_add(&b, "[]");
    } else {
        emit(&p, &b, 0, idx, 7);
    }
    bool default_dt = t->dtype == KN_F32 || t->dtype == KN_I64 || t->dtype == KN_BOOL;
    if (kn_tensor_numel(t) == 0 && t->ndim != 1) {
        char sh[128];
        sb_add(&b, ", size=%s", kn__shape_str(sh, sizeof sh, t->ndim, t->shape));
    }
    if (!default_dt) sb_add(&b, ", dtype=%s", kn_dtype_name(t->dtype));
    const char *fn = kn_tensor_grad_fn_name(t);
    if (fn)
        sb_add(&b, ", grad_fn=<%s>", fn);
    else if (t->requires_grad)
        sb_add(&b, ", requires_grad=True");
    sb_add(&b, ")");
    if (b.oom) {
        kn__free(b.s);
        return kn__errp(KN_ENOMEM, "tensor_to_string: out of memory");
    }
    return b.s;
}

void kn_string_free(char *s) {
    kn__free(s);
}

kn_status kn_tensor_print(const kn_tensor *t, FILE *f) {
    if (!t || !f) return kn__err(KN_EINVAL, "tensor_print: NULL argument");
    char *s = kn_tensor_to_string(t);
    if (!s) return kn_last_status();
    int ok = fprintf(f, "%s\n", s) >= 0;
    kn_string_free(s);
    return ok ? KN_OK : kn__err(KN_EIO, "tensor_print: write failed");
}
