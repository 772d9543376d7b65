/*
 * kiln/nn.h - modules (layers), PyTorch's torch.nn in C: named parameters and buffers with
 * PyTorch's names ("0.weight", "features.3.bias", "bn.running_mean"), train/eval mode, freezing,
 * PyTorch's default initialisation, and user-defined modules.
 *
 * Ownership: a module owns its parameters, buffers and children; kn_module_free(root) frees the
 * tree. kn_module_add_child/add_param take ownership of what they are given (on failure too).
 * Getters return borrowed pointers valid while the module lives. kn_module_forward returns a
 * new tensor under the usual rules (scope-owned inside a scope). Parameters are created outside
 * any scope (they belong to the module even when the constructor is called inside a scope).
 * Thread safety: a module may run forward from one thread at a time (batch_norm updates state).
 */
#ifndef KILN_NN_H
#define KILN_NN_H

#include "kiln/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_module kn_module;
typedef kn_tensor *(*kn_forward_fn)(kn_module *m, kn_tensor *x);

/* ---- user-defined modules ----
 * type_name is shown by kn_module_print ("MyBlock"); forward receives the module (get your
 * parameters with kn_module_param / children with kn_module_child, or keep pointers in state);
 * state is opaque user data freed with free_state (may be NULL) when the module is freed (or
 * when kn_module_new fails). forward returns a new tensor like an op. Example, y = relu(x + fc(x)):
 *   static kn_tensor *block_fwd(kn_module *m, kn_tensor *x) {
 *       kn_scope s = kn_scope_begin();
 *       kn_tensor *h = kn_module_forward(kn_module_child(m, "fc"), x);
 *       kn_tensor *y = kn_keep(kn_relu(kn_add(x, h)));
 *       kn_scope_end(s);
 *       return y;
 *   }
 *   kn_module *b = kn_module_new("Block", block_fwd, NULL, NULL);
 *   kn_module_add_child(b, "fc", kn_nn_linear(64, 64, true));
 * Names: non-empty, no '.', unique among a module's parameters, buffers and children. Inside a
 * scope, add_param/add_buffer take their own reference (the scope keeps owning its one). */
kn_module *kn_module_new(const char *type_name, kn_forward_fn forward, void *state,
                         void (*free_state)(void *state));
void *kn_module_state(kn_module *m);
kn_status kn_module_add_param(kn_module *m, const char *name,
                              kn_tensor *t); /* sets requires_grad */
kn_status kn_module_add_buffer(kn_module *m, const char *name, kn_tensor *t);
kn_status kn_module_add_child(kn_module *m, const char *name, kn_module *child);
void kn_module_free(kn_module *m); /* NULL is a no-op */

/* ---- use ---- */
kn_tensor *kn_module_forward(kn_module *m, kn_tensor *x);
kn_tensor *kn_module_param(kn_module *m, const char *name);  /* own, e.g. "weight"; borrowed */
kn_tensor *kn_module_buffer(kn_module *m, const char *name); /* own, e.g. "running_mean" */
kn_module *kn_module_child(kn_module *m, const char *name);  /* "0", "features" */
const char *kn_module_type(const kn_module *m);              /* "Linear", "Sequential", ... */
void kn_module_train(kn_module *m, bool training);           /* recursive; default training */
bool kn_module_is_training(const kn_module *m);
/* requires_grad off (frozen) or on for every parameter in the subtree */
kn_status kn_module_freeze(kn_module *m, bool frozen);

/* ---- enumeration, PyTorch order and names (depth first, registration order) ---- */
typedef struct kn_named_tensor {
    const char *name; /* "features.3.weight"; valid while the module lives */
    kn_tensor *tensor;
} kn_named_tensor;
/* Write up to max entries, return the total count (call with max 0 to size the array). */
int kn_module_parameters(kn_module *m, kn_named_tensor *out, int max);
int kn_module_buffers(kn_module *m, kn_named_tensor *out, int max);
/* Parameters + buffers, like state_dict() */
int kn_module_state_dict(kn_module *m, kn_named_tensor *out, int max);
int64_t kn_module_num_params(kn_module *m, bool trainable_only); /* scalar count */
/* PyTorch-like summary ("Sequential(\n  (0): Linear(in_features=784, ...)\n)") and a newline
 * to f, like print(model) */
kn_status kn_module_print(kn_module *m, FILE *f);

/* ---- built-in layers (PyTorch names, defaults and initialisation) ---- */
kn_module *kn_nn_linear(int64_t in_features, int64_t out_features, bool bias);
kn_module *kn_nn_conv1d(int64_t in_ch, int64_t out_ch, int64_t kernel, const kn_conv_opts *o,
                        bool bias);
kn_module *kn_nn_conv2d(int64_t in_ch, int64_t out_ch, int64_t kh, int64_t kw,
                        const kn_conv_opts *o, bool bias); /* o may be NULL */
kn_module *kn_nn_conv_transpose2d(int64_t in_ch, int64_t out_ch, int64_t kh, int64_t kw,
                                  const kn_conv_opts *o, const int64_t output_padding[2],
                                  bool bias);
kn_module *kn_nn_batchnorm1d(int64_t features, double eps, double momentum); /* eps 1e-5, 0.1 */
kn_module *kn_nn_batchnorm2d(int64_t features, double eps, double momentum);
kn_module *kn_nn_layernorm(int nnorm, const int64_t *normalized_shape, double eps, bool affine);
kn_module *kn_nn_groupnorm(int64_t groups, int64_t channels, double eps, bool affine);
kn_module *kn_nn_dropout(double p);
kn_module *kn_nn_embedding(int64_t num_embeddings, int64_t dim);
kn_module *kn_nn_maxpool2d(const kn_pool_opts *o);
kn_module *kn_nn_avgpool2d(const kn_pool_opts *o);
kn_module *kn_nn_adaptive_avgpool2d(int64_t out_h, int64_t out_w);
kn_module *kn_nn_flatten(int start_dim, int end_dim); /* PyTorch default (1, -1) */
kn_module *kn_nn_relu(void);
kn_module *kn_nn_relu6(void);
kn_module *kn_nn_leaky_relu(double negative_slope);
kn_module *kn_nn_elu(double alpha);
kn_module *kn_nn_gelu(bool tanh_approx);
kn_module *kn_nn_silu(void);
kn_module *kn_nn_sigmoid(void);
kn_module *kn_nn_tanh(void);
kn_module *kn_nn_softmax(int dim);
kn_module *kn_nn_log_softmax(int dim);
kn_module *kn_nn_identity(void);
/* Sequential: children named "0", "1", ...; takes ownership of the modules (NULL entries make it
 * fail, freeing the others). */
kn_module *kn_nn_sequential(kn_module *const *mods, int n);
kn_status kn_nn_sequential_append(kn_module *seq, kn_module *m);

/* ---- initialisers (in place, no autograd; PyTorch's torch.nn.init semantics) ----
 * fan_in/fan_out follow PyTorch (dim 1 * receptive field / dim 0 * receptive field). All draw
 * from the global generator (kn_manual_seed). */
typedef enum { KN_FAN_IN = 0, KN_FAN_OUT = 1 } kn_fan_mode;
kn_status kn_init_uniform_(kn_tensor *t, double a, double b);
kn_status kn_init_normal_(kn_tensor *t, double mean, double std);
kn_status kn_init_constant_(kn_tensor *t, double v);
kn_status kn_init_zeros_(kn_tensor *t);
kn_status kn_init_ones_(kn_tensor *t);
kn_status kn_init_xavier_uniform_(kn_tensor *t, double gain);
kn_status kn_init_xavier_normal_(kn_tensor *t, double gain);
/* nonlinearity gain: "relu" sqrt(2), "leaky_relu" sqrt(2/(1+a^2)), "linear"/"sigmoid" 1, "tanh" 5/3
 */
kn_status kn_init_kaiming_uniform_(kn_tensor *t, double a, kn_fan_mode mode,
                                   const char *nonlinearity);
kn_status kn_init_kaiming_normal_(kn_tensor *t, double a, kn_fan_mode mode,
                                  const char *nonlinearity);
kn_status kn_init_fans(const kn_tensor *t, int64_t *fan_in, int64_t *fan_out);

#ifdef __cplusplus
}
#endif
#endif
