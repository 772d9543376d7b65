/*
 * nn_impl.h - internals shared by the nn files (module.c: the module tree; layers.c: built-in
 * layers; init.c: initialisers). Not installed.
 *
 * A built-in layer is an ordinary module made with kn_module_new: its configuration lives in the
 * module state, its forward is a kn_forward_fn, and kn__module_set_repr gives it PyTorch's
 * extra_repr() text for kn_module_print.
 */
#ifndef KILN_NN_IMPL_H
#define KILN_NN_IMPL_H

#include "core/core_impl.h"
#include "kiln/nn.h"

/* Writes the text PyTorch's extra_repr() returns ("in_features=4, out_features=2, bias=True")
 * into buf; an empty string shows "Type()". */
typedef void (*kn__repr_fn)(kn_module *m, char *buf, size_t len);
void kn__module_set_repr(kn_module *m, kn__repr_fn fn);

/* Like kn_module_add_param / add_buffer but always takes the given (+1, unscoped) reference,
 * whatever scope is open: for tensors made with kn__tensor_alloc. */
kn_status kn__module_own_param(kn_module *m, const char *name, kn_tensor *t);
kn_status kn__module_own_buffer(kn_module *m, const char *name, kn_tensor *t);

/* Python's repr() of a float ("1e-05", "0.1", "1.0", "inf", "nan") into buf (>= 32 bytes). */
const char *kn__py_float(char *buf, size_t len, double v);

#endif
