/*
 * main.c - the `kiln` command line. For now: --version, --help, `kiln ops` (the op registry,
 * docs/ops.md is generated from it) and `kiln info-cpu`. The CLI is the only
 * place in kiln that calls exit().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln <command> [options]\n"
            "\n"
            "commands:\n"
            "  ops                list the registered ops (dtypes, backward, kernels, ONNX name)\n"
            "  cpu                show detected CPU features, threads and BLAS\n"
            "  --version          print the version\n"
            "  --help             this text\n");
}

static int cmd_ops(int argc, char **argv) {
    if (argc > 2) {
        fprintf(stderr, "kiln ops: unexpected argument '%s'\n", argv[2]);
        return 2;
    }
    /* one line per op: name | dtypes | backward | kernels | ONNX | doc (docs/ops.md reads it) */
    for (int i = 0; i < kn_op_count(); i++) {
        char buf[512];
        if (kn_op_describe(kn_op_name(i), buf, sizeof buf) == KN_OK) printf("%s\n", buf);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("kiln %s\n", KN_VERSION_STRING);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "ops")) return cmd_ops(argc, argv);
    if (!strcmp(cmd, "cpu")) {
        printf("cpu features: %s\nthreads: %d\nblas: %s\n", kn_cpu_features(),
               kn_get_num_threads(), kn_have_blas() ? "OpenBLAS" : "reference kernel");
        return 0;
    }
    fprintf(stderr, "kiln: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
