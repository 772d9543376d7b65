/*
 * scope.c - autorelease scopes (per thread). A scope owns the tensors created while it is the
 * innermost open scope; kn_scope_end releases them in reverse order. kn_keep moves one tensor to
 * the enclosing scope (or to the caller when none). Ending an outer scope also ends inner ones
 * left open, so an early `goto fail` cannot leak a scope.
 */
#include "core/core_impl.h"

typedef struct {
    kn_tensor **v;
    size_t n, cap;
} tvec;

static _Thread_local tvec tl_items; /* owned tensors, scopes are contiguous ranges */
static _Thread_local tvec tl_kept;  /* kn_keep'd tensors waiting for their scope to end */
static _Thread_local size_t tl_marks[256], tl_kept_marks[256];
static _Thread_local int tl_depth;

static bool push(tvec *v, kn_tensor *t) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        kn_tensor **nv = kn__realloc(v->v, cap * sizeof *nv);
        if (!nv) return false;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = t;
    return true;
}

kn_scope kn_scope_begin(void) {
    kn_scope s = {tl_items.n, tl_depth};
    if (tl_depth < 256) {
        tl_marks[tl_depth] = tl_items.n;
        tl_kept_marks[tl_depth] = tl_kept.n;
    }
    tl_depth++;
    return s;
}

void kn_scope_end(kn_scope s) {
    if (s.depth < 0 || s.depth >= tl_depth) return; /* already ended */
    if (s.depth >= 256) { /* too deep to track: behave like a no-op scope */
        tl_depth = s.depth;
        return;
    }
    size_t kept_mark = tl_kept_marks[s.depth];
    size_t mark = tl_marks[s.depth];
    for (size_t i = tl_items.n; i > mark; i--)
        kn_tensor_free(tl_items.v[i - 1]);
    tl_items.n = mark;
    tl_depth = s.depth;
    /* kept tensors now belong to the enclosing scope, or to the caller at top level */
    for (size_t i = kept_mark; i < tl_kept.n; i++) {
        kn_tensor *t = tl_kept.v[i];
        if (tl_depth > 0) {
            if (!push(&tl_items, t)) kn_tensor_free(t);
        }
    }
    tl_kept.n = kept_mark;
}

kn_tensor *kn__scope_adopt(kn_tensor *t) {
    if (!t || tl_depth == 0) return t;
    if (tl_depth > 256) return t; /* beyond tracking depth the caller owns it */
    if (!push(&tl_items, t)) {
        kn_tensor_free(t);
        return NULL;
    }
    return t;
}

kn_tensor *kn_keep(kn_tensor *t) {
    if (!t || tl_depth == 0 || tl_depth > 256) return t;
    kn_tensor_retain(t);
    if (!push(&tl_kept, t)) {
        kn_tensor_free(t);
        return NULL;
    }
    return t;
}

bool kn__scope_active(void) {
    return tl_depth > 0 && tl_depth <= 256;
}
