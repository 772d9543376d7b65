/*
 * checkpoint.c - module weights and training checkpoints as .kiln files (safetensors.c).
 *
 * Weights (kn_module_save): the module's state_dict under its PyTorch names ("0.weight",
 * "bn.running_mean"), metadata {"format": "kiln", "kiln_version", "kind": "weights"}.
 * Checkpoints add the optimizer's state tensors under "optimizer.<name>" (names from
 * kn_optimizer_state, e.g. "optimizer.state.0.momentum_buffer") and metadata, all strings:
 * "kind": "checkpoint", "step", "epoch", "rng_seed", "rng_counter" (decimal), "optimizer" (its
 * name), "optimizer_lr", "scheduler_last_epoch", "scheduler_base_lr" (%.17g, exact round trip),
 * "extra" (the caller's JSON text).
 *
 * Loading validates everything before changing anything: every name present with the right
 * shape (and dtype for checkpoints; kn_module_load casts like PyTorch's load_state_dict), the
 * metadata fields parsed; only then are the scheduler, optimizer (rolled back if its
 * kn_optimizer_load_state refuses), model and global RNG state written. The copy into the
 * model cannot fail, so an invalid file leaves the model untouched.
 *
 * Not here: the container format and its validation (safetensors.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/io_impl.h"

#define OPT_PREFIX "optimizer."
#define OPT_PREFIX_LEN 10

/* ---- metadata building ---- */
static bool meta_add(json_object *o, const char *key, const char *fmt, ...) KN_PRINTF(3, 4);
static bool meta_add(json_object *o, const char *key, const char *fmt, ...) {
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    json_object *s = json_object_new_string(buf);
    if (!s) return false;
    if (json_object_object_add(o, key, s)) {
        json_object_put(s);
        return false;
    }
    return true;
}

static json_object *meta_base(const char *kind) {
    json_object *o = json_object_new_object();
    if (o && meta_add(o, "format", "kiln") &&
        meta_add(o, "kiln_version", "%s", KN_VERSION_STRING) && meta_add(o, "kind", "%s", kind))
        return o;
    json_object_put(o);
    kn__err(KN_ENOMEM, "out of memory building metadata");
    return NULL;
}

static const char *meta_text(json_object *o) {
    return json_object_to_json_string_ext(o,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* The module's state dict in a fresh array (count in *n). */
static kn_named_tensor *state_dict(const char *who, kn_module *m, int *n) {
    int k = kn_module_state_dict(m, NULL, 0);
    if (k < 0) return NULL;
    kn_named_tensor *sd = kn__malloc(sizeof *sd * (size_t)(k ? k : 1));
    if (!sd) return NULL;
    int k2 = kn_module_state_dict(m, sd, k);
    if (k2 != k) {
        kn__free(sd);
        if (k2 >= 0) kn__err(KN_EINTERNAL, "%s: state_dict changed size", who);
        return NULL;
    }
    *n = k;
    return sd;
}

kn_status kn_module_save(kn_module *m, const char *path) {
    if (!m || !path) return kn__err(KN_EINVAL, "module_save: %s is NULL", m ? "path" : "module");
    int n = 0;
    kn_named_tensor *sd = state_dict("module_save", m, &n);
    if (!sd) return kn_last_status();
    json_object *meta = meta_base("weights");
    const char *txt = meta ? meta_text(meta) : NULL;
    kn_status st = txt ? kn_save_tensors(path, sd, n, txt) : kn__err(KN_ENOMEM, "module_save");
    json_object_put(meta);
    kn__free(sd);
    return st;
}

/* ---- loading a state dict: plan (validate) first, then copy ---- */
typedef struct load_item {
    kn_tensor *dst; /* the module's tensor */
    kn_tensor *src; /* contiguous, dst's dtype (scope-owned) */
} load_item;

/* A list of names for an error message, cut to fit. */
typedef struct name_list {
    char buf[200];
    size_t len;
    int count, shown;
} name_list;

static void list_add(name_list *l, const char *name) {
    l->count++;
    size_t need = strlen(name) + 4;
    if (l->len + need + 16 >= sizeof l->buf) return;
    l->len += (size_t)snprintf(l->buf + l->len, sizeof l->buf - l->len, "%s\"%s\"",
                               l->shown ? ", " : "", name);
    l->shown++;
}
static const char *list_str(name_list *l) {
    if (l->count > l->shown)
        snprintf(l->buf + l->len, sizeof l->buf - l->len, "%s... (%d more)", l->shown ? ", " : "",
                 l->count - l->shown);
    return l->buf;
}

/* Matches m's state dict against f. exact: dtypes must be equal (else cast). ckpt: entries under
 * "optimizer." are not the model's. Fills items (count *nitems, caller frees). Tensors it makes
 * belong to the caller's open scope. */
static kn_status plan_module(kn_file *f, kn_module *m, bool strict, bool exact, bool ckpt,
                             load_item **items_out, int *nitems) {
    const char *path = kn__file_path(f);
    int nsd = 0, nf = kn_file_count(f), ni = 0;
    kn_status st = KN_OK;
    kn_named_tensor *sd = state_dict(path, m, &nsd);
    if (!sd) return kn_last_status();
    load_item *items = kn__malloc(sizeof *items * (size_t)(nsd ? nsd : 1));
    unsigned char *used = kn__calloc(nf ? (size_t)nf : 1, 1);
    name_list missing = {0}, unexpected = {0};
    if (!items || !used) {
        st = KN_ENOMEM;
        goto done;
    }
    for (int j = 0; j < nsd; j++) {
        const char *name = sd[j].name;
        kn_tensor *dst = sd[j].tensor;
        int i = kn__file_find(f, name);
        if (i < 0) {
            list_add(&missing, name);
            continue;
        }
        used[i] = 1;
        kn_dtype fdt;
        int fnd;
        const int64_t *fsh;
        kn__file_entry(f, i, &fdt, &fnd, &fsh);
        if (fnd != dst->ndim || (fnd && memcmp(fsh, dst->shape, sizeof(int64_t) * fnd))) {
            char a[96], b[96];
            st = kn__err(KN_ESHAPE,
                         "%s: size mismatch for '%s': shape %s in the file, %s in the "
                         "model",
                         path, name, kn__shape_str(a, sizeof a, fnd, fsh),
                         kn__shape_str(b, sizeof b, dst->ndim, dst->shape));
            goto done;
        }
        if (exact && fdt != dst->dtype) {
            st = kn__err(KN_EDTYPE, "%s: dtype mismatch for '%s': %s in the file, %s in the model",
                         path, name, fdt < KN_NDTYPES ? kn_dtype_name(fdt) : "(unsupported)",
                         kn_dtype_name(dst->dtype));
            goto done;
        }
        kn_tensor *src = kn_file_get(f, name);
        if (!src) {
            st = kn_last_status();
            goto done;
        }
        if (src->dtype != dst->dtype) {
            kn_tensor *conv = kn_empty(dst->dtype, dst->ndim, dst->shape);
            if (!conv) {
                st = kn_last_status();
                goto done;
            }
            size_t nb = (size_t)kn__numel(dst->ndim, dst->shape) * kn_dtype_size(dst->dtype);
            if ((st = kn_tensor_read(src, dst->dtype, kn__ptr(conv), nb))) goto done;
            src = conv;
        }
        items[ni++] = (load_item){dst, src};
    }
    for (int i = 0; i < nf; i++) {
        const char *name = kn_file_name(f, i);
        if (!used[i] && !(ckpt && strncmp(name, OPT_PREFIX, OPT_PREFIX_LEN) == 0))
            list_add(&unexpected, name);
    }
    if (strict && (missing.count || unexpected.count)) {
        st = kn__err(KN_EFORMAT, "%s: error(s) loading state into %s%s%s%s%s", path,
                     kn_module_type(m), missing.count ? "; missing key(s): " : "",
                     missing.count ? list_str(&missing) : "",
                     unexpected.count ? "; unexpected key(s): " : "",
                     unexpected.count ? list_str(&unexpected) : "");
        goto done;
    }
done:
    kn__free(sd);
    kn__free(used);
    if (st) {
        kn__free(items);
        return st;
    }
    *items_out = items;
    *nitems = ni;
    return KN_OK;
}

/* Copies contiguous src bytes into dst (any strides, same dtype and shape). Cannot fail. */
static void copy_item(const load_item *it) {
    kn_tensor *dst = it->dst;
    size_t es = kn_dtype_size(dst->dtype);
    int64_t n = kn__numel(dst->ndim, dst->shape);
    const char *s = kn__ptr(it->src);
    char *d = kn__ptr(dst);
    if (n == 0 || s == d) return;
    if (kn__is_contiguous(dst)) {
        memmove(d, s, (size_t)n * es);
        return;
    }
    int64_t idx[KN_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int k = 0; k < dst->ndim; k++)
            off += idx[k] * dst->strides[k];
        memcpy(d + off * (int64_t)es, s + i * (int64_t)es, es);
        for (int k = dst->ndim - 1; k >= 0; k--) {
            if (++idx[k] < dst->shape[k]) break;
            idx[k] = 0;
        }
    }
}

static bool is_checkpoint(const kn_file *f) {
    const char *k = kn_file_meta(f, "kind");
    return k && strcmp(k, "checkpoint") == 0;
}

kn_status kn_module_load(kn_module *m, const char *path, bool strict) {
    if (!m || !path) return kn__err(KN_EINVAL, "module_load: %s is NULL", m ? "path" : "module");
    kn_scope sc = kn_scope_begin();
    load_item *items = NULL;
    int ni = 0;
    kn_status st;
    kn_file *f = kn_file_open(path);
    if (!f) {
        st = kn_last_status();
        goto done;
    }
    if ((st = plan_module(f, m, strict, false, is_checkpoint(f), &items, &ni))) goto done;
    for (int i = 0; i < ni; i++)
        copy_item(&items[i]);
done:
    kn__free(items);
    kn_file_close(f);
    kn_scope_end(sc);
    return st;
}

/* ---- checkpoints ---- */
kn_status kn_checkpoint_save(const char *path, const kn_checkpoint *c) {
    if (!path || !c || !c->model)
        return kn__err(KN_EINVAL, "checkpoint_save: %s is NULL",
                       !path ? "path"
                       : !c  ? "checkpoint"
                             : "model");
    kn_status st = KN_OK;
    int nsd = 0, nos = 0;
    kn_named_tensor *all = NULL;
    char **names = NULL;
    json_object *meta = NULL, *extra = NULL;
    if (c->extra_json) {
        extra = json_tokener_parse(c->extra_json);
        if (!extra && strcmp(c->extra_json, "null") != 0)
            return kn__err(KN_EINVAL, "checkpoint_save: extra_json is not valid JSON");
        json_object_put(extra);
    }
    kn_named_tensor *sd = state_dict("checkpoint_save", c->model, &nsd);
    if (!sd) return kn_last_status();
    if (c->optimizer) {
        nos = kn_optimizer_state(c->optimizer, NULL, 0);
        if (nos < 0) {
            st = kn_last_status();
            goto done;
        }
    }
    all = kn__malloc(sizeof *all * (size_t)(nsd + nos ? nsd + nos : 1));
    names = kn__calloc(nos ? (size_t)nos : 1, sizeof *names);
    if (!all || !names) goto nomem;
    memcpy(all, sd, sizeof *sd * (size_t)nsd);
    if (nos) {
        int k = kn_optimizer_state(c->optimizer, all + nsd, nos);
        if (k != nos) {
            st = k < 0 ? kn_last_status()
                       : kn__err(KN_EINTERNAL, "checkpoint_save: optimizer state changed size");
            goto done;
        }
        for (int i = 0; i < nos; i++) {
            size_t l = strlen(all[nsd + i].name);
            names[i] = kn__malloc(OPT_PREFIX_LEN + l + 1);
            if (!names[i]) goto nomem;
            memcpy(names[i], OPT_PREFIX, OPT_PREFIX_LEN);
            memcpy(names[i] + OPT_PREFIX_LEN, all[nsd + i].name, l + 1);
            all[nsd + i].name = names[i];
        }
    }
    kn_rng_state rng = kn_rng_get_state();
    meta = meta_base("checkpoint");
    if (!meta) goto nomem;
    bool ok = meta_add(meta, "step", "%" PRId64, c->step) &&
              meta_add(meta, "epoch", "%" PRId64, c->epoch) &&
              meta_add(meta, "rng_seed", "%" PRIu64, rng.seed) &&
              meta_add(meta, "rng_counter", "%" PRIu64, rng.counter);
    if (ok && c->optimizer)
        ok = meta_add(meta, "optimizer", "%s", kn_optimizer_name(c->optimizer)) &&
             meta_add(meta, "optimizer_lr", "%.17g", kn_optimizer_lr(c->optimizer));
    if (ok && c->scheduler) {
        int64_t le;
        double blr;
        if ((st = kn_scheduler_get_state(c->scheduler, &le, &blr))) goto done;
        ok = meta_add(meta, "scheduler_last_epoch", "%" PRId64, le) &&
             meta_add(meta, "scheduler_base_lr", "%.17g", blr);
    }
    if (ok && c->extra_json) {
        json_object *s = json_object_new_string(c->extra_json);
        ok = s && !json_object_object_add(meta, "extra", s);
        if (!ok) json_object_put(s);
    }
    const char *txt = ok ? meta_text(meta) : NULL;
    if (!txt) goto nomem;
    st = kn_save_tensors(path, all, nsd + nos, txt);
    goto done;
nomem:
    st = kn_last_status() == KN_ENOMEM ? KN_ENOMEM
                                       : kn__err(KN_ENOMEM, "checkpoint_save: out of memory");
done:
    for (int i = 0; names && i < nos; i++)
        kn__free(names[i]);
    kn__free(names);
    kn__free(all);
    kn__free(sd);
    json_object_put(meta);
    return st;
}

static kn_status need_meta(kn_file *f, const char *key, const char **out) {
    *out = kn_file_meta(f, key);
    if (!*out)
        return kn__err(KN_EFORMAT, "%s: checkpoint metadata lacks \"%s\"", kn__file_path(f), key);
    return KN_OK;
}
static kn_status bad_meta(kn_file *f, const char *key, const char *s, const char *what) {
    return kn__err(KN_EFORMAT, "%s: metadata \"%s\" = \"%.40s\" is not %s", kn__file_path(f), key,
                   s, what);
}
static kn_status meta_i64(kn_file *f, const char *key, int64_t *out) {
    const char *s;
    kn_status st = need_meta(f, key, &s);
    if (st) return st;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return bad_meta(f, key, s, "an integer");
    *out = v;
    return KN_OK;
}
static kn_status meta_u64(kn_file *f, const char *key, uint64_t *out) {
    const char *s;
    kn_status st = need_meta(f, key, &s);
    if (st) return st;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] < '0' || s[0] > '9')
        return bad_meta(f, key, s, "an unsigned integer");
    *out = v;
    return KN_OK;
}
static kn_status meta_f64(kn_file *f, const char *key, double *out) {
    const char *s;
    kn_status st = need_meta(f, key, &s);
    if (st) return st;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v)) return bad_meta(f, key, s, "a finite number");
    *out = v;
    return KN_OK;
}

kn_status kn_checkpoint_load(const char *path, kn_checkpoint *c) {
    if (!path || !c || !c->model)
        return kn__err(KN_EINVAL, "checkpoint_load: %s is NULL",
                       !path ? "path"
                       : !c  ? "checkpoint"
                             : "model");
    kn_scope sc = kn_scope_begin();
    kn_status st;
    load_item *items = NULL;
    kn_named_tensor *ost = NULL;
    int ni = 0, nos = 0;
    kn_file *f = kn_file_open(path);
    if (!f) {
        st = kn_last_status();
        goto done;
    }
    /* ---- validate ---- */
    const char *fmt = kn_file_meta(f, "format"), *kind = kn_file_meta(f, "kind");
    if (!fmt || strcmp(fmt, "kiln") != 0 || !kind || strcmp(kind, "checkpoint") != 0) {
        st = kn__err(KN_EFORMAT, "%s: not a kiln checkpoint (format \"%s\", kind \"%s\")", path,
                     fmt ? fmt : "", kind ? kind : "");
        goto done;
    }
    int64_t step, epoch, last_epoch = 0;
    uint64_t seed, counter;
    double lr = NAN, base_lr = 0;
    if ((st = meta_i64(f, "step", &step)) || (st = meta_i64(f, "epoch", &epoch)) ||
        (st = meta_u64(f, "rng_seed", &seed)) || (st = meta_u64(f, "rng_counter", &counter)))
        goto done;
    if (c->optimizer) {
        const char *name;
        if ((st = need_meta(f, "optimizer", &name))) goto done;
        if (strcmp(name, kn_optimizer_name(c->optimizer)) != 0) {
            st = kn__err(KN_EFORMAT, "%s: checkpoint holds %.40s state, the optimizer is %s", path,
                         name, kn_optimizer_name(c->optimizer));
            goto done;
        }
        if (kn_file_meta(f, "optimizer_lr") && (st = meta_f64(f, "optimizer_lr", &lr))) goto done;
        int nf = kn_file_count(f);
        ost = kn__malloc(sizeof *ost * (size_t)(nf ? nf : 1));
        if (!ost) {
            st = KN_ENOMEM;
            goto done;
        }
        for (int i = 0; i < nf; i++) {
            const char *n = kn_file_name(f, i);
            if (strncmp(n, OPT_PREFIX, OPT_PREFIX_LEN) != 0) continue;
            kn_tensor *t = kn_file_get(f, n);
            if (!t) {
                st = kn_last_status();
                goto done;
            }
            ost[nos++] = (kn_named_tensor){n + OPT_PREFIX_LEN, t};
        }
    }
    if (c->scheduler && ((st = meta_i64(f, "scheduler_last_epoch", &last_epoch)) ||
                         (st = meta_f64(f, "scheduler_base_lr", &base_lr))))
        goto done;
    if ((st = plan_module(f, c->model, true, true, true, &items, &ni))) goto done;

    /* ---- apply: scheduler and optimizer (undone if either refuses), then what cannot fail ---- */
    int64_t old_le = 0;
    double old_blr = 0, old_lr = c->optimizer ? kn_optimizer_lr(c->optimizer) : 0;
    if (c->scheduler) {
        if ((st = kn_scheduler_get_state(c->scheduler, &old_le, &old_blr))) goto done;
        if ((st = kn_scheduler_set_state(c->scheduler, last_epoch, base_lr))) goto done;
    }
    if (c->optimizer) {
        if ((!isnan(lr) && (st = kn_optimizer_set_lr(c->optimizer, lr))) ||
            (st = kn_optimizer_load_state(c->optimizer, ost, nos))) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", kn_last_error());
            if (c->scheduler) kn_scheduler_set_state(c->scheduler, old_le, old_blr);
            kn_optimizer_set_lr(c->optimizer, old_lr);
            kn__err(st, "%s", msg);
            goto done;
        }
    }
    for (int i = 0; i < ni; i++)
        copy_item(&items[i]);
    kn_rng_set_state((kn_rng_state){.seed = seed, .counter = counter});
    c->step = step;
    c->epoch = epoch;
done:
    kn__free(items);
    kn__free(ost);
    kn_file_close(f);
    kn_scope_end(sc);
    return st;
}
