/*
 * module.c - the module tree of kiln/nn.h: user-defined modules, named parameters / buffers /
 * children, PyTorch's names and enumeration order, train/eval, freezing, printing like PyTorch's
 * repr(), freeing, and the Sequential container.
 *
 * Not here: the built-in layers (layers.c) and the initialisers (init.c).
 *
 * Invariants:
 *  - A module owns one reference to each of its parameters and buffers and owns its children;
 *    every module has at most one parent, so the tree has no sharing and no cycles.
 *  - Local names are non-empty, contain no '.', and are unique across a module's parameters,
 *    buffers and children (PyTorch's rule for attributes).
 *  - Enumeration is depth first in registration order: a module's own parameters, then (for
 *    state_dict) its own buffers, then each child's subtree with "child." prefixed. This is
 *    PyTorch's named_parameters() / named_buffers() / state_dict() order.
 *  - Name strings handed out by enumeration live in tables kept on the module that was
 *    enumerated; a table is reused while the names are unchanged and freed with the module.
 */
#include <math.h>
#include <stdlib.h>

#include "nn/nn_impl.h"

#define NN_MAX_NAME 256

typedef struct nn_entry {
    char *name;
    kn_tensor *t;
} nn_entry;

typedef struct nn_child {
    char *name;
    kn_module *m;
} nn_child;

typedef struct nn_names { /* one table of enumeration names: count strings, NUL separated */
    struct nn_names *next;
    size_t len;
    int count;
    char data[];
} nn_names;

struct kn_module {
    char *type;
    kn_forward_fn forward;
    void *state;
    void (*free_state)(void *state);
    kn__repr_fn repr;
    kn_module *parent;
    bool training;
    nn_entry *params;
    int nparams, cparams;
    nn_entry *bufs;
    int nbufs, cbufs;
    nn_child *kids;
    int nkids, ckids;
    nn_names *names;
};

/* ---------------------------------------------------------------------------------------- */
/* small growable string                                                                    */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = kn__realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) {
    sb_putn(b, s, strlen(s));
}
static void sb_putc(sbuf *b, char c) {
    sb_putn(b, &c, 1);
}

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = kn__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---------------------------------------------------------------------------------------- */
/* creation, registration, freeing                                                          */

kn_module *kn_module_new(const char *type_name, kn_forward_fn forward, void *state,
                         void (*free_state)(void *state)) {
    kn_module *m = NULL;
    if (!type_name || !type_name[0]) {
        kn__err(KN_EINVAL, "module_new: type_name must be a non-empty string");
        goto fail;
    }
    m = kn__calloc(1, sizeof *m);
    if (!m || !(m->type = str_dup(type_name))) goto fail;
    m->forward = forward;
    m->state = state;
    m->free_state = free_state;
    m->training = true;
    return m;
fail: /* like SQLite's destructors, the state is released on failure too */
    if (m) kn__free(m);
    if (free_state && state) free_state(state);
    return NULL;
}

void *kn_module_state(kn_module *m) {
    return m ? m->state : NULL;
}
const char *kn_module_type(const kn_module *m) {
    return m ? m->type : NULL;
}
void kn__module_set_repr(kn_module *m, kn__repr_fn fn) {
    if (m) m->repr = fn;
}

static bool name_taken(const kn_module *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->params[i].name, name)) return true;
    for (int i = 0; i < m->nbufs; i++)
        if (!strcmp(m->bufs[i].name, name)) return true;
    for (int i = 0; i < m->nkids; i++)
        if (!strcmp(m->kids[i].name, name)) return true;
    return false;
}

static kn_status check_name(const char *who, const kn_module *m, const char *name) {
    if (!m) return kn__err(KN_EINVAL, "%s: NULL module", who);
    if (!name || !name[0]) return kn__err(KN_EINVAL, "%s: name must be a non-empty string", who);
    if (strchr(name, '.'))
        return kn__err(KN_EINVAL, "%s: name '%s' must not contain '.'", who, name);
    if (strlen(name) >= NN_MAX_NAME)
        return kn__err(KN_ELIMIT, "%s: name longer than %d characters", who, NN_MAX_NAME - 1);
    if (name_taken(m, name))
        return kn__err(KN_EINVAL, "%s: %s already has an attribute named '%s'", who, m->type, name);
    return KN_OK;
}

static bool grow(void **v, int *cap, int n, size_t elem) {
    if (n < *cap) return true;
    int nc = *cap ? *cap * 2 : 4;
    void *p = kn__realloc(*v, (size_t)nc * elem);
    if (!p) return false;
    *v = p;
    *cap = nc;
    return true;
}

/* Takes the reference t (freed on failure). */
static kn_status add_entry(const char *who, kn_module *m, const char *name, kn_tensor *t,
                           bool param) {
    if (!t) /* a failed constructor: keep its error */
        return kn_last_status()
                   ? kn_last_status()
                   : kn__err(KN_EINVAL, "%s: NULL tensor for '%s'", who, name ? name : "?");
    kn_status s = check_name(who, m, name);
    if (s) goto fail;
    if (param) {
        if (!kn_dtype_is_float(t->dtype)) {
            s = kn__err(KN_EDTYPE, "%s: parameter '%s' must be a floating tensor, not %s", who,
                        name, kn_dtype_name(t->dtype));
            goto fail;
        }
        if (t->grad_fn) {
            s = kn__err(KN_EMISUSE, "%s: parameter '%s' is not a leaf tensor (kn_detach it)", who,
                        name);
            goto fail;
        }
    }
    nn_entry **v = param ? &m->params : &m->bufs;
    int *n = param ? &m->nparams : &m->nbufs, *cap = param ? &m->cparams : &m->cbufs;
    char *nm = NULL;
    if (!grow((void **)v, cap, *n, sizeof(nn_entry)) || !(nm = str_dup(name))) {
        s = KN_ENOMEM;
        goto fail;
    }
    if (param) t->requires_grad = true;
    (*v)[(*n)++] = (nn_entry){nm, t};
    return KN_OK;
fail:
    kn_tensor_free(t);
    return s;
}

kn_status kn__module_own_param(kn_module *m, const char *name, kn_tensor *t) {
    return add_entry("module_add_param", m, name, t, true);
}
kn_status kn__module_own_buffer(kn_module *m, const char *name, kn_tensor *t) {
    return add_entry("module_add_buffer", m, name, t, false);
}
/* Inside a scope the scope owns t: the module takes a reference of its own. */
kn_status kn_module_add_param(kn_module *m, const char *name, kn_tensor *t) {
    if (t && kn__scope_active()) kn_tensor_retain(t);
    return kn__module_own_param(m, name, t);
}
kn_status kn_module_add_buffer(kn_module *m, const char *name, kn_tensor *t) {
    if (t && kn__scope_active()) kn_tensor_retain(t);
    return kn__module_own_buffer(m, name, t);
}

kn_status kn_module_add_child(kn_module *m, const char *name, kn_module *child) {
    kn_status s;
    if (!child) /* a failed constructor: keep its error */
        return kn_last_status() ? kn_last_status()
                                : kn__err(KN_EINVAL, "module_add_child: NULL child");
    if (child->parent) /* owned elsewhere: not ours to free */
        return kn__err(KN_EMISUSE, "module_add_child: %s is already a child of %s", child->type,
                       child->parent->type);
    for (kn_module *a = m; a; a = a->parent)
        if (a == child)
            return kn__err(KN_EMISUSE,
                           "module_add_child: adding %s would make a "
                           "cycle",
                           child->type);
    if ((s = check_name("module_add_child", m, name))) goto fail;
    char *nm = NULL;
    if (!grow((void **)&m->kids, &m->ckids, m->nkids, sizeof(nn_child)) || !(nm = str_dup(name))) {
        s = KN_ENOMEM;
        goto fail;
    }
    m->kids[m->nkids++] = (nn_child){nm, child};
    child->parent = m;
    return KN_OK;
fail:
    kn_module_free(child);
    return s;
}

static bool is_sequential(const kn_module *m);

static void free_tree(kn_module *m) {
    for (int i = 0; i < m->nkids; i++) {
        free_tree(m->kids[i].m);
        kn__free(m->kids[i].name);
    }
    for (int i = 0; i < m->nparams; i++) {
        kn_tensor_free(m->params[i].t);
        kn__free(m->params[i].name);
    }
    for (int i = 0; i < m->nbufs; i++) {
        kn_tensor_free(m->bufs[i].t);
        kn__free(m->bufs[i].name);
    }
    for (nn_names *t = m->names, *nx; t; t = nx) {
        nx = t->next;
        kn__free(t);
    }
    if (m->free_state && m->state) m->free_state(m->state);
    kn__free(m->kids);
    kn__free(m->params);
    kn__free(m->bufs);
    kn__free(m->type);
    kn__free(m);
}

/* Freeing a module that still has a parent detaches it first (like `del parent.child`). */
void kn_module_free(kn_module *m) {
    if (!m) return;
    kn_module *p = m->parent;
    if (p) {
        for (int i = 0; i < p->nkids; i++) {
            if (p->kids[i].m != m) continue;
            kn__free(p->kids[i].name);
            memmove(&p->kids[i], &p->kids[i + 1], sizeof(nn_child) * (size_t)(p->nkids - i - 1));
            p->nkids--;
            if (is_sequential(p)) /* PyTorch's Sequential.__delitem__ renumbers */
                for (int j = i; j < p->nkids; j++)
                    snprintf(p->kids[j].name, strlen(p->kids[j].name) + 1, "%d", j);
            break;
        }
    }
    free_tree(m);
}

/* ---------------------------------------------------------------------------------------- */
/* lookup                                                                                   */

static kn_module *child_local(kn_module *m, const char *name, size_t len) {
    for (int i = 0; i < m->nkids; i++)
        if (strlen(m->kids[i].name) == len && !memcmp(m->kids[i].name, name, len))
            return m->kids[i].m;
    return NULL;
}

/* Walks a dotted path "features.3"; returns NULL when some part is missing. */
static kn_module *child_path(kn_module *m, const char *path, size_t len) {
    while (m && len) {
        const char *dot = memchr(path, '.', len);
        size_t part = dot ? (size_t)(dot - path) : len;
        m = child_local(m, path, part);
        if (!dot) break;
        len -= part + 1;
        path = dot + 1;
    }
    return m;
}

kn_module *kn_module_child(kn_module *m, const char *name) {
    if (!m || !name) return kn__errp(KN_EINVAL, "module_child: NULL argument");
    kn_module *c = child_path(m, name, strlen(name));
    if (!c) return kn__errp(KN_EINVAL, "module_child: %s has no child '%s'", m->type, name);
    return c;
}

static kn_tensor *find_entry(kn_module *m, const char *name, bool param) {
    const char *who = param ? "module_param" : "module_buffer";
    if (!m || !name) return kn__errp(KN_EINVAL, "%s: NULL argument", who);
    const char *dot = strrchr(name, '.');
    kn_module *owner = dot ? child_path(m, name, (size_t)(dot - name)) : m;
    const char *local = dot ? dot + 1 : name;
    if (owner) {
        nn_entry *v = param ? owner->params : owner->bufs;
        int n = param ? owner->nparams : owner->nbufs;
        for (int i = 0; i < n; i++)
            if (!strcmp(v[i].name, local)) return v[i].t;
    }
    return kn__errp(KN_EINVAL, "%s: %s has no %s '%s'", who, m->type,
                    param ? "parameter" : "buffer", name);
}
kn_tensor *kn_module_param(kn_module *m, const char *name) {
    return find_entry(m, name, true);
}
kn_tensor *kn_module_buffer(kn_module *m, const char *name) {
    return find_entry(m, name, false);
}

/* ---------------------------------------------------------------------------------------- */
/* modes and freezing                                                                       */

void kn_module_train(kn_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int i = 0; i < m->nkids; i++)
        kn_module_train(m->kids[i].m, training);
}
bool kn_module_is_training(const kn_module *m) {
    return m && m->training;
}

kn_status kn_module_freeze(kn_module *m, bool frozen) {
    if (!m) return kn__err(KN_EINVAL, "module_freeze: NULL module");
    for (int i = 0; i < m->nparams; i++)
        m->params[i].t->requires_grad = !frozen;
    for (int i = 0; i < m->nkids; i++)
        kn_module_freeze(m->kids[i].m, frozen);
    return KN_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* enumeration                                                                              */

enum { W_PARAMS = 1, W_BUFS = 2 };

typedef struct walk {
    int what;
    bool dedup;
    kn_tensor **t;
    int n, cap;
    sbuf names;  /* every name followed by its NUL */
    sbuf prefix; /* "features.3." while inside that subtree */
    bool oom;
} walk;

static bool seen(const walk *w, const kn_tensor *t) {
    for (int i = 0; i < w->n; i++)
        if (w->t[i] == t) return true;
    return false;
}

static void visit(walk *w, const nn_entry *e) {
    if (w->dedup && seen(w, e->t)) return;
    if (!grow((void **)&w->t, &w->cap, w->n, sizeof(kn_tensor *))) {
        w->oom = true;
        return;
    }
    w->t[w->n++] = e->t;
    sb_putn(&w->names, w->prefix.p ? w->prefix.p : "", w->prefix.n);
    sb_putn(&w->names, e->name, strlen(e->name) + 1);
}

static void walk_tree(walk *w, const kn_module *m) {
    if (w->what & W_PARAMS)
        for (int i = 0; i < m->nparams; i++)
            visit(w, &m->params[i]);
    if (w->what & W_BUFS)
        for (int i = 0; i < m->nbufs; i++)
            visit(w, &m->bufs[i]);
    for (int i = 0; i < m->nkids; i++) {
        size_t keep = w->prefix.n;
        sb_puts(&w->prefix, m->kids[i].name);
        sb_putc(&w->prefix, '.');
        walk_tree(w, m->kids[i].m);
        w->prefix.n = keep;
        if (w->prefix.p) w->prefix.p[keep] = 0;
    }
}

static int enumerate(const char *who, kn_module *m, int what, bool dedup, kn_named_tensor *out,
                     int max) {
    if (!m) return kn__err(KN_EINVAL, "%s: NULL module", who);
    if (max < 0 || (max > 0 && !out))
        return kn__err(KN_EINVAL, "%s: need an output array for %d entries", who, max);
    walk w = {.what = what, .dedup = dedup};
    walk_tree(&w, m);
    int count = w.n;
    if (w.oom || w.names.oom || w.prefix.oom) {
        count = kn__err(KN_ENOMEM, "%s: out of memory", who);
        goto done;
    }
    if (max == 0) goto done;
    nn_names *tab = m->names;
    for (; tab; tab = tab->next)
        if (tab->count == w.n && tab->len == w.names.n &&
            (w.names.n == 0 || !memcmp(tab->data, w.names.p, w.names.n)))
            break;
    if (!tab) {
        tab = kn__malloc(sizeof *tab + w.names.n + 1);
        if (!tab) {
            count = KN_ENOMEM;
            goto done;
        }
        tab->len = w.names.n;
        tab->count = w.n;
        if (w.names.n) memcpy(tab->data, w.names.p, w.names.n);
        tab->data[w.names.n] = 0;
        tab->next = m->names;
        m->names = tab;
    }
    const char *p = tab->data;
    for (int i = 0; i < w.n && i < max; i++) {
        out[i] = (kn_named_tensor){p, w.t[i]};
        p += strlen(p) + 1;
    }
done:
    kn__free(w.t);
    kn__free(w.names.p);
    kn__free(w.prefix.p);
    return count;
}

int kn_module_parameters(kn_module *m, kn_named_tensor *out, int max) {
    return enumerate("module_parameters", m, W_PARAMS, true, out, max);
}
int kn_module_buffers(kn_module *m, kn_named_tensor *out, int max) {
    return enumerate("module_buffers", m, W_BUFS, true, out, max);
}
int kn_module_state_dict(kn_module *m, kn_named_tensor *out, int max) {
    return enumerate("module_state_dict", m, W_PARAMS | W_BUFS, false, out, max);
}

int64_t kn_module_num_params(kn_module *m, bool trainable_only) {
    if (!m) return kn__err(KN_EINVAL, "module_num_params: NULL module");
    walk w = {.what = W_PARAMS, .dedup = true};
    walk_tree(&w, m);
    int64_t total = 0;
    if (w.oom || w.names.oom || w.prefix.oom)
        total = kn__err(KN_ENOMEM, "module_num_params");
    else
        for (int i = 0; i < w.n; i++)
            if (!trainable_only || w.t[i]->requires_grad) total += kn_tensor_numel(w.t[i]);
    kn__free(w.t);
    kn__free(w.names.p);
    kn__free(w.prefix.p);
    return total;
}

/* ---------------------------------------------------------------------------------------- */
/* forward                                                                                  */

/* On a failure inside a child, the message gains " [module 'path' (Type)]"; each enclosing
 * module that is itself a child prefixes its name, so the root's caller sees the full path. */
static void annotate(kn_module *m) {
    kn_module *p = m->parent;
    if (!p) return;
    const char *name = NULL;
    for (int i = 0; i < p->nkids && !name; i++)
        if (p->kids[i].m == m) name = p->kids[i].name;
    if (!name) return;
    kn_status s = kn_last_status();
    char msg[512], out[1024];
    snprintf(msg, sizeof msg, "%s", kn_last_error());
    const char *mark = strstr(msg, " [module '");
    if (mark) {
        size_t head = (size_t)(mark - msg) + strlen(" [module '");
        snprintf(out, sizeof out, "%.*s%s.%s", (int)head, msg, name, msg + head);
    } else {
        size_t tl = strlen(m->type);
        bool named = !strncmp(msg, m->type, tl) && msg[tl] == ':';
        if (named)
            snprintf(out, sizeof out, "%s [module '%s']", msg, name);
        else
            snprintf(out, sizeof out, "%s [module '%s' (%s)]", msg, name, m->type);
    }
    kn__err(s, "%s", out);
}

kn_tensor *kn_module_forward(kn_module *m, kn_tensor *x) {
    if (!x) {
        if (!m && kn_last_status() == KN_OK)
            return kn__errp(KN_EINVAL, "module_forward: NULL module and input");
        return NULL; /* keeps the earlier error */
    }
    if (!m) return kn__errp(KN_EINVAL, "module_forward: NULL module");
    if (!m->forward) return kn__errp(KN_EMISUSE, "%s: module has no forward function", m->type);
    kn_tensor *y = m->forward(m, x);
    if (!y) {
        if (kn_last_status() == KN_OK)
            kn__err(KN_EINTERNAL, "%s: forward returned NULL without setting an error", m->type);
        annotate(m);
    }
    return y;
}

/* ---------------------------------------------------------------------------------------- */
/* Sequential                                                                               */

static kn_tensor *sequential_forward(kn_module *m, kn_tensor *x) {
    if (m->nkids == 0) return kn__scope_adopt(kn_tensor_retain(x)); /* empty: identity */
    kn_scope sc = kn_scope_begin(); /* intermediates die here, whatever the caller's scope */
    kn_tensor *y = x;
    for (int i = 0; i < m->nkids; i++)
        y = kn_module_forward(m->kids[i].m, y);
    y = kn_keep(y);
    kn_scope_end(sc);
    return y;
}

static bool is_sequential(const kn_module *m) {
    return m && m->forward == sequential_forward && !strcmp(m->type, "Sequential");
}

kn_status kn_nn_sequential_append(kn_module *seq, kn_module *m) {
    if (!is_sequential(seq)) {
        kn_status s = kn__err(KN_EINVAL, "sequential_append: %s is not a Sequential",
                              seq ? seq->type : "NULL");
        if (m && !m->parent) kn_module_free(m);
        return s;
    }
    char name[24];
    snprintf(name, sizeof name, "%d", seq->nkids);
    return kn_module_add_child(seq, name, m);
}

kn_module *kn_nn_sequential(kn_module *const *mods, int n) {
    kn_status s = KN_OK;
    kn_module *seq = NULL;
    int i = 0;
    if (n < 0 || (n > 0 && !mods)) {
        kn__err(KN_EINVAL, "Sequential: bad module list (n = %d)", n);
        goto fail;
    }
    for (int j = 0; j < n; j++)
        if (!mods[j]) {
            if (kn_last_status() == KN_OK) kn__err(KN_EINVAL, "Sequential: module %d is NULL", j);
            goto fail;
        }
    seq = kn_module_new("Sequential", sequential_forward, NULL, NULL);
    if (!seq) goto fail;
    for (; i < n; i++) {
        s = kn_nn_sequential_append(seq, mods[i]);
        if (s) { /* append freed (or did not own) mods[i] */
            i++;
            goto fail;
        }
    }
    return seq;
fail:
    for (; i < n; i++)
        if (mods && mods[i] && !mods[i]->parent) kn_module_free(mods[i]);
    kn_module_free(seq);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* printing                                                                                 */

static void newline(sbuf *b, int indent) {
    sb_putc(b, '\n');
    for (int i = 0; i < indent; i++)
        sb_putc(b, ' ');
}

/* PyTorch's Module.__repr__: "Type(extra)" on one line when there are no children and the
 * extra text is one line, else one line per extra line and per child, children indented. */
static void repr_into(sbuf *b, kn_module *m, int indent) {
    char extra[1024] = "";
    if (m->repr) m->repr(m, extra, sizeof extra);
    sb_puts(b, m->type);
    sb_putc(b, '(');
    bool one_line = !strchr(extra, '\n');
    if (extra[0] && one_line && m->nkids == 0) {
        sb_puts(b, extra);
    } else if (extra[0] || m->nkids) {
        for (const char *line = extra; extra[0] && line;) {
            const char *nl = strchr(line, '\n');
            newline(b, indent + 2);
            sb_putn(b, line, nl ? (size_t)(nl - line) : strlen(line));
            line = nl ? nl + 1 : NULL;
        }
        for (int i = 0; i < m->nkids; i++) {
            newline(b, indent + 2);
            sb_putc(b, '(');
            sb_puts(b, m->kids[i].name);
            sb_puts(b, "): ");
            repr_into(b, m->kids[i].m, indent + 2);
        }
        newline(b, indent);
    }
    sb_putc(b, ')');
}

kn_status kn_module_print(kn_module *m, FILE *f) {
    if (!m || !f) return kn__err(KN_EINVAL, "module_print: NULL %s", m ? "file" : "module");
    sbuf b = {0};
    repr_into(&b, m, 0);
    sb_putc(&b, '\n');
    kn_status s = KN_OK;
    if (b.oom)
        s = kn__err(KN_ENOMEM, "module_print: out of memory");
    else if (fputs(b.p, f) < 0)
        s = kn__err(KN_EIO, "module_print: write failed");
    kn__free(b.p);
    return s;
}

/* Python's float repr: the shortest digits that round-trip, scientific notation when the
 * decimal exponent is < -4 or >= 16, and a ".0" on integral values. */
const char *kn__py_float(char *buf, size_t len, double v) {
    if (isnan(v)) return snprintf(buf, len, "nan"), buf;
    if (isinf(v)) return snprintf(buf, len, v < 0 ? "-inf" : "inf"), buf;
    if (v == 0) return snprintf(buf, len, signbit(v) ? "-0.0" : "0.0"), buf;
    char e[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e = "-d.ddde+XX": split into sign, digits and exponent */
    bool neg = e[0] == '-';
    const char *p = e + neg;
    char digits[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    digits[nd] = 0;
    int exp10 = atoi(p + 1);
    int decpt = exp10 + 1; /* position of the decimal point after the first digit */
    char body[64];
    if (decpt <= -4 || decpt > 16) {
        if (nd == 1)
            snprintf(body, sizeof body, "%ce%c%02d", digits[0], exp10 < 0 ? '-' : '+', abs(exp10));
        else
            snprintf(body, sizeof body, "%c.%se%c%02d", digits[0], digits + 1,
                     exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (decpt <= 0) {
        snprintf(body, sizeof body, "0.%0*d%s", -decpt, 0, digits);
        if (decpt == 0) snprintf(body, sizeof body, "0.%s", digits);
    } else if (decpt >= nd) {
        snprintf(body, sizeof body, "%s%0*d.0", digits, decpt - nd, 0);
        if (decpt == nd) snprintf(body, sizeof body, "%s.0", digits);
    } else {
        snprintf(body, sizeof body, "%.*s.%s", decpt, digits, digits + decpt);
    }
    snprintf(buf, len, "%s%s", neg ? "-" : "", body);
    return buf;
}
