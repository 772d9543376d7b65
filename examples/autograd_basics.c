/*
 * autograd_basics.c - the classic first autograd example, in C:
 *
 *     lin = torch.nn.Linear(10, 2); x = torch.randn(1, 10)
 *     out = lin(x); out.sum().backward(); print(lin.weight.grad)
 *
 * The weights and input are the ones PyTorch draws with torch.manual_seed(0) (exported by
 * tools/gen_ref.py into tests/golden/autograd_basics.h), so the printed gradient can be compared
 * with PyTorch's, and the program checks that it matches (exit status 1 if not).
 */
#include <math.h>
#include <stdio.h>

#include "../tests/golden/autograd_basics.h"
#include "kiln/kiln.h"

int main(void) {
    kn_scope scope = kn_scope_begin();
    kn_tensor *w = kn_from_data(KN_F32, 2, (int64_t[]){2, 10}, autograd_basics_weight);
    kn_tensor *b = kn_from_data(KN_F32, 1, (int64_t[]){2}, autograd_basics_bias);
    kn_tensor *x = kn_from_data(KN_F32, 2, (int64_t[]){1, 10}, autograd_basics_x);
    kn_tensor_set_requires_grad(w, true);
    kn_tensor_set_requires_grad(b, true);

    kn_tensor *out = kn_linear(x, w, b);                  /* (1, 2) */
    kn_tensor *loss = kn_sum(out, NULL, 0, false);         /* scalar */
    if (!loss || kn_backward(loss, NULL) != KN_OK) {
        fprintf(stderr, "autograd_basics: %s\n", kn_last_error());
        return 1;
    }
    printf("x = ");
    kn_tensor_print(x, stdout);
    printf("out = ");
    kn_tensor_print(out, stdout);
    printf("weight.grad = ");
    kn_tensor_print(kn_tensor_grad(w), stdout);
    printf("bias.grad = ");
    kn_tensor_print(kn_tensor_grad(b), stdout);

    float wg[20], bg[2], o[2];
    kn_tensor_read(kn_tensor_grad(w), KN_F32, wg, sizeof wg);
    kn_tensor_read(kn_tensor_grad(b), KN_F32, bg, sizeof bg);
    kn_tensor_read(out, KN_F32, o, sizeof o);
    double maxd = 0;
    for (int i = 0; i < 20; i++) maxd = fmax(maxd, fabs(wg[i] - autograd_basics_weight_grad[i]));
    for (int i = 0; i < 2; i++) maxd = fmax(maxd, fabs(bg[i] - autograd_basics_bias_grad[i]));
    for (int i = 0; i < 2; i++) maxd = fmax(maxd, fabs(o[i] - autograd_basics_out[i]));
    printf("max |kiln - PyTorch| over out and grads: %.3g (%s)\n", maxd,
           maxd <= 1e-6 ? "match" : "MISMATCH");
    kn_scope_end(scope);
    return maxd <= 1e-6 ? 0 : 1;
}
