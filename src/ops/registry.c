/*
 * registry.c - the list of op families. Adding a family = one line here and one table in its
 * file. Lookup by name is linear over ~150 entries (only kn_op_call and graph loading use it;
 * the public wrappers hold direct pointers).
 */
#include "ops/op_impl.h"

static const kn_opdef *const *const families[] = {
    kn__ops_elementwise, kn__ops_shape, kn__ops_reduce, kn__ops_stats, kn__ops_linalg,
    kn__ops_conv,        kn__ops_norm,  kn__ops_loss,   kn__ops_index,
};
enum { NFAM = sizeof families / sizeof *families };

const kn_opdef *kn__op_find(const char *name) {
    for (int f = 0; f < NFAM; f++)
        for (const kn_opdef *const *p = families[f]; *p; p++)
            if (strcmp((*p)->name, name) == 0) return *p;
    return NULL;
}

int kn_op_count(void) {
    int n = 0;
    for (int f = 0; f < NFAM; f++)
        for (const kn_opdef *const *p = families[f]; *p; p++)
            n++;
    return n;
}

const char *kn_op_name(int i) {
    if (i < 0) return NULL;
    for (int f = 0; f < NFAM; f++)
        for (const kn_opdef *const *p = families[f]; *p; p++)
            if (i-- == 0) return (*p)->name;
    return NULL;
}
