/*
 * fuzz_onnx_import.c - libFuzzer target for the whole ONNX import: parse, convert every node
 * (ops_*.c), trace, compile frozen and run on zeros of the signature's shapes (batch 2 for a
 * symbolic dim; inputs over 1M elements are not run). Any crash, sanitizer report or leak is a
 * bug: hostile files must give an error. Seed corpus: the model.onnx files of Debian's
 * libonnx-testdata (see fuzz_onnx_model.c); inputs that once crashed are kept in
 * tests/data/onnx/crashers/ and re-imported by test_onnx_import.
 *   ./build-fuzz/fuzz_onnx_import corpus -max_len=20000 -timeout=10 -max_total_time=240
 */
#include <stdint.h>
#include <stdlib.h>

#include "kiln/kiln.h"

static void quiet(int level, const char *msg, void *user) {
    (void)level, (void)msg, (void)user;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int init;
    if (!init) {
        kn_set_log(quiet, NULL);
        kn_set_num_threads(1);
        init = 1;
    }
    kn_graph *g = kn_onnx_import_mem(data, size, NULL, NULL);
    if (g && kn_graph_compile(g, &(kn_compile_opts){.freeze = true}) == KN_OK) {
        int n = kn_graph_num_inputs(g);
        kn_tensor *in[8] = {0}, *out[16] = {0};
        int ok = n <= 8;
        for (int i = 0; ok && i < n; i++) {
            kn_graph_sig s;
            kn_graph_input(g, i, &s);
            int64_t shape[8], numel = 1;
            for (int d = 0; d < s.ndim; d++)
                shape[d] = s.shape[d] < 0 ? 2 : s.shape[d], numel *= shape[d];
            ok = numel <= (1 << 20) && (in[i] = kn_zeros(s.dtype, s.ndim, shape)) != NULL;
        }
        int k = ok ? kn_graph_run(g, in, n, out, 16) : 0;
        for (int i = 0; i < k; i++)
            kn_tensor_free(out[i]);
        for (int i = 0; i < n && i < 8; i++)
            kn_tensor_free(in[i]);
    }
    kn_graph_free(g);
    kn_clear_error();
    return 0;
}
