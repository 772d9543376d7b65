/*
 * main.c - the `kiln` command line: --version, --help, `kiln ops` (the op registry,
 * docs/ops.md is generated from it), `kiln cpu`, and the graph file commands `kiln info`
 * (a graph file's signatures, weights, ops and plan, or a checkpoint's tensors), `kiln run`
 * (a graph on .npy inputs, outputs to .npy files) and `kiln bench` (latency and throughput),
 * which also take .onnx models, and the ONNX commands `kiln check` (unsupported ops, before
 * anything runs) and `kiln import` (.onnx -> .kiln).
 * The CLI is the only place in kiln that calls exit(). Exit status: 0 ok, 1 the command failed
 * (message on stderr), 2 bad usage.
 */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kiln/kiln.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln <command> [options]\n"
            "\n"
            "commands:\n"
            "  ops                list the registered ops (dtypes, backward, kernels, ONNX name)\n"
            "  cpu                show detected CPU features, threads and BLAS\n"
            "  info FILE [--plan] [--batch N]\n"
            "                     a graph file: signatures, parameters, op histogram, arena\n"
            "                     (--plan: passes and schedule for batch N); a checkpoint or\n"
            "                     weights file: its tensors and metadata keys\n"
            "  check MODEL.onnx   list every op, opset and dtype of an ONNX model kiln does\n"
            "                     not support (with counts), then try the import; exit 1 if any\n"
            "  import MODEL.onnx -o FILE.kiln\n"
            "                     import an ONNX model into a kiln graph file (dim 0 stays\n"
            "                     symbolic when the model's is)\n"
            "  export FILE.kiln -o MODEL.onnx [--opset N]\n"
            "                     write a graph file as an ONNX model (opset 13..17, default 13)\n"
            "  run FILE -i x.npy [-i name=file.npy ...] -o OUTDIR\n"
            "                     run a graph file or .onnx model on .npy inputs (positional in\n"
            "                     input order, or by name); writes OUTDIR/<output name>.npy\n"
            "  bench FILE [--batch N] [--iters N] [--warmup N] [--threads N] [--profile]\n"
            "                     time a graph file or .onnx model on random inputs (defaults: "
            "batch 1, 100\n"
            "                     iters, 10 warmup): latency percentiles, samples/s, arena;\n"
            "                     --profile: then as many runs timed node by node, slowest first\n"
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

/* ---- graph files ---- */
static int failed(const char *cmd) {
    fprintf(stderr, "kiln %s: %s\n", cmd, *kn_last_error() ? kn_last_error() : "failed");
    return 1;
}

static int usage_err(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "kiln %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see kiln --help)\n");
    return 2;
}

/* A whole decimal integer in [lo, hi]. */
static bool parse_ll(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* The value of option argv[*i] (which takes one), advancing *i; NULL when missing. */
static const char *opt_arg(int argc, char **argv, int *i) {
    return *i + 1 < argc ? argv[++*i] : NULL;
}

static void print_shape(FILE *f, const kn_graph_sig *s) {
    fprintf(f, "%s (", kn_dtype_name(s->dtype));
    for (int d = 0; d < s->ndim; d++) {
        if (s->shape[d] < 0)
            fprintf(f, "%sbatch", d ? ", " : "");
        else
            fprintf(f, "%s%lld", d ? ", " : "", (long long)s->shape[d]);
    }
    fprintf(f, ")");
}

/* A checkpoint / weights file: its tensors, totals and metadata keys. */
static int info_tensors(kn_file *f, const char *path) {
    kn_scope sc = kn_scope_begin();
    int n = kn_file_count(f);
    long long params = 0, bytes = 0;
    printf("%s: %d tensors\n", path, n);
    for (int i = 0; i < n; i++) {
        const char *name = kn_file_name(f, i);
        kn_tensor *t = kn_file_get(f, name);
        if (!t) {
            printf("  %-32s (cannot read: %s)\n", name, kn_last_error());
            continue;
        }
        printf("  %-32s %-8s (", name, kn_dtype_name(kn_tensor_dtype(t)));
        for (int d = 0; d < kn_tensor_ndim(t); d++)
            printf("%s%lld", d ? ", " : "", (long long)kn_tensor_shape(t)[d]);
        printf(")\n");
        params += kn_tensor_numel(t);
        bytes += kn_tensor_numel(t) * (long long)kn_dtype_size(kn_tensor_dtype(t));
    }
    kn_scope_end(sc);
    printf("total: %lld parameters, %lld bytes\n", params, bytes);
    json_object *m = json_tokener_parse(kn_file_metadata(f));
    printf("metadata keys:%s\n", m && json_object_object_length(m) ? "" : " (none)");
    if (m && json_object_is_type(m, json_type_object)) {
        json_object_object_foreach(m, k, v) {
            const char *s = json_object_get_string(v);
            size_t len = strlen(s);
            printf("  %-24s %.*s%s\n", k, len > 60 ? 60 : (int)len, s, len > 60 ? "..." : "");
        }
    }
    json_object_put(m);
    return 0;
}

static bool is_onnx(const char *path) {
    size_t n = strlen(path);
    return n > 5 && !strcmp(path + n - 5, ".onnx");
}

/* A model file's graph (a .kiln graph file, or a .onnx model imported; ex: example inputs for
 * an ONNX model whose shapes are not all known), compiled for inference: its weights are
 * constants (folding and conv+batchnorm folding apply, like torch.jit.freeze). */
static kn_graph *load_frozen_ex(const char *path, kn_tensor *const *ex, int nex) {
    kn_onnx_opts o = {.example = ex, .nexample = nex};
    kn_graph *g = is_onnx(path) ? kn_onnx_import(path, ex ? &o : NULL) : kn_graph_load(path);
    if (g && kn_graph_compile(g, &(kn_compile_opts){.freeze = true}) != KN_OK) {
        kn_graph_free(g);
        return NULL;
    }
    return g;
}

static kn_graph *load_frozen(const char *path) {
    return load_frozen_ex(path, NULL, 0);
}

static int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    bool plan = false;
    long long batch = 1;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--plan")) {
            plan = true;
        } else if (!strcmp(argv[i], "--batch")) {
            const char *v = opt_arg(argc, argv, &i);
            if (!parse_ll(v, 1, (long long)1 << 31, &batch))
                return usage_err("info", "--batch needs a positive integer, got '%s'", v ? v : "");
        } else if (argv[i][0] == '-' || path) {
            return usage_err("info", "unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) return usage_err("info", "%s", "no FILE given");
    kn_file *f = kn_file_open(path);
    if (!f) return failed("info");
    const char *fmt = kn_file_meta(f, "kiln.format");
    if (!fmt || strcmp(fmt, "graph") != 0) {
        int rc = info_tensors(f, path);
        kn_file_close(f);
        return rc;
    }
    printf("graph file %s\n", path);
    json_object *prov = json_tokener_parse(
        kn_file_meta(f, "kiln.provenance") ? kn_file_meta(f, "kiln.provenance") : "");
    json_object *ver, *when, *host;
    if (prov && json_object_object_get_ex(prov, "kiln_version", &ver) &&
        json_object_object_get_ex(prov, "saved_utc", &when) &&
        json_object_object_get_ex(prov, "host", &host))
        printf("saved by kiln %s at %s on %s\n", json_object_get_string(ver),
               json_object_get_string(when), json_object_get_string(host));
    json_object_put(prov);
    kn_file_close(f);
    kn_graph *g = load_frozen(path);
    if (!g) return failed("info");
    kn_status st = kn_graph_print(g, stdout, plan, batch);
    kn_graph_free(g);
    return st ? failed("info") : 0;
}

/* An output name as a file name: [A-Za-z0-9._-] kept, anything else '_', no leading dot. */
static void file_name_of(const char *name, char *out, size_t len) {
    size_t k = 0;
    if (name[0] == '.' || !name[0]) out[k++] = '_';
    for (size_t i = 0; name[i] && k + 1 < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        out[k++] = ok ? c : '_';
    }
    out[k] = 0;
}

/* mkdir -p */
static int make_dirs(const char *dir) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return -1;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) return -1;
            *s = c;
            if (!c) break;
        }
    }
    struct stat sb;
    return stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -1;
}

#define CLI_MAX_IO 64

static int cmd_run(int argc, char **argv) {
    const char *path = NULL, *outdir = NULL, *args[CLI_MAX_IO];
    int nargs = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-i") || !strcmp(argv[i], "-o")) {
            const char *v = opt_arg(argc, argv, &i);
            if (!v) return usage_err("run", "%s needs an argument", argv[i]);
            if (argv[i - 1][1] == 'o') {
                outdir = v;
            } else {
                if (nargs == CLI_MAX_IO) return usage_err("run", "%s", "too many -i");
                args[nargs++] = v;
            }
        } else if (argv[i][0] == '-' || path) {
            return usage_err("run", "unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) return usage_err("run", "%s", "no FILE given");
    if (!outdir) return usage_err("run", "%s", "no output directory given (-o OUTDIR)");
    kn_graph *g = NULL;
    if (is_onnx(path) && nargs > 0) {
        /* an ONNX model is imported at the shapes of the inputs given (positional ones) */
        kn_tensor *ex[CLI_MAX_IO] = {0};
        int nex = 0;
        while (nex < nargs && !strchr(args[nex], '=')) {
            if (!(ex[nex] = kn_npy_load(args[nex]))) {
                fprintf(stderr, "kiln run: input %d: %s\n", nex, kn_last_error());
                for (int i = 0; i < nex; i++)
                    kn_tensor_free(ex[i]);
                return 1;
            }
            nex++;
        }
        g = load_frozen_ex(path, nex ? ex : NULL, nex);
        for (int i = 0; i < nex; i++)
            kn_tensor_free(ex[i]);
    } else {
        g = load_frozen(path);
    }
    if (!g) return failed("run");
    int rc = 1, nin = kn_graph_num_inputs(g), nout = kn_graph_num_outputs(g);
    const char *given[CLI_MAX_IO] = {0};
    kn_tensor *in[CLI_MAX_IO] = {0}, *out[CLI_MAX_IO] = {0};
    kn_scope sc = kn_scope_begin();
    if (nin > CLI_MAX_IO || nout > CLI_MAX_IO) {
        fprintf(stderr, "kiln run: %s: more than %d inputs or outputs\n", path, CLI_MAX_IO);
        goto done;
    }
    /* name=file first, then positional files fill the remaining inputs in order */
    bool named[CLI_MAX_IO] = {0};
    for (int a = 0; a < nargs; a++) {
        const char *eq = strchr(args[a], '=');
        for (int k = 0; eq && k < nin; k++) {
            kn_graph_sig s;
            kn_graph_input(g, k, &s);
            if (strlen(s.name) == (size_t)(eq - args[a]) &&
                !strncmp(s.name, args[a], eq - args[a])) {
                if (given[k]) {
                    fprintf(stderr, "kiln run: input '%s' given twice\n", s.name);
                    goto done;
                }
                given[k] = eq + 1;
                named[a] = true;
                break;
            }
        }
    }
    for (int a = 0, k = 0; a < nargs; a++) {
        if (named[a]) continue;
        while (k < nin && given[k])
            k++;
        if (k == nin) {
            fprintf(stderr, "kiln run: extra input '%s': the graph takes %d input%s\n", args[a],
                    nin, nin == 1 ? "" : "s");
            goto done;
        }
        given[k] = args[a];
    }
    for (int k = 0; k < nin; k++) {
        kn_graph_sig s;
        kn_graph_input(g, k, &s);
        if (!given[k]) {
            fprintf(stderr, "kiln run: input '%s' (", s.name);
            print_shape(stderr, &s);
            fprintf(stderr, ") not given: add -i FILE.npy or -i %s=FILE.npy\n", s.name);
            goto done;
        }
        if (!(in[k] = kn_npy_load(given[k]))) {
            fprintf(stderr, "kiln run: input '%s': %s\n", s.name, kn_last_error());
            goto done;
        }
    }
    int n = kn_graph_run(g, in, nin, out, CLI_MAX_IO);
    if (n < 0) {
        failed("run");
        goto done;
    }
    if (make_dirs(outdir) != 0) {
        fprintf(stderr, "kiln run: cannot create directory '%s': %s\n", outdir, strerror(errno));
        goto done;
    }
    char names[CLI_MAX_IO][128];
    for (int i = 0; i < n; i++) {
        kn_graph_sig s;
        kn_graph_output(g, i, &s);
        file_name_of(s.name, names[i], sizeof names[i] - 16);
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j])) {
                size_t len = strlen(names[i]);
                snprintf(names[i] + len, sizeof names[i] - len, "_%d", i);
                break;
            }
        char file[4352];
        snprintf(file, sizeof file, "%s/%s.npy", outdir, names[i]);
        if (kn_npy_save(file, out[i]) != KN_OK) {
            failed("run");
            goto done;
        }
        printf("%s: %s (", file, kn_dtype_name(kn_tensor_dtype(out[i])));
        for (int d = 0; d < kn_tensor_ndim(out[i]); d++)
            printf("%s%lld", d ? ", " : "", (long long)kn_tensor_shape(out[i])[d]);
        printf(")\n");
    }
    rc = 0;
done:
    kn_scope_end(sc);
    kn_graph_free(g);
    return rc;
}

static int cmd_check(int argc, char **argv) {
    if (argc != 3 || argv[2][0] == '-')
        return usage_err("check", "%s", "usage: kiln check MODEL.onnx");
    int n = kn_onnx_check(argv[2], stdout);
    if (n < 0) return failed("check");
    if (n > 0) return 1;
    kn_graph *g = kn_onnx_import(argv[2], NULL);
    if (!g) {
        printf("import: %s\n", kn_last_error());
        return 1;
    }
    kn_graph_stats gs;
    kn_graph_stats_get(g, &gs);
    printf("import: ok, %d kiln ops, %d weights (%lld parameters), %d input%s, %d output%s\n",
           gs.traced_nodes, gs.weights, (long long)gs.weight_params, kn_graph_num_inputs(g),
           kn_graph_num_inputs(g) == 1 ? "" : "s", kn_graph_num_outputs(g),
           kn_graph_num_outputs(g) == 1 ? "" : "s");
    kn_graph_free(g);
    return 0;
}

static int cmd_import(int argc, char **argv) {
    const char *path = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-o")) {
            if (!(out = opt_arg(argc, argv, &i)))
                return usage_err("import", "%s", "-o needs a file");
        } else if (argv[i][0] == '-' || path) {
            return usage_err("import", "unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path || !out)
        return usage_err("import", "%s", "usage: kiln import MODEL.onnx -o FILE.kiln");
    kn_graph *g = kn_onnx_import(path, NULL);
    if (!g) return failed("import");
    kn_status st = kn_graph_save(g, out);
    if (st == KN_OK) {
        kn_graph_sig s;
        printf("%s: ", out);
        for (int i = 0; i < kn_graph_num_inputs(g); i++) {
            kn_graph_input(g, i, &s);
            printf("%s%s (", i ? ", " : "", s.name);
            print_shape(stdout, &s);
            printf(")");
        }
        printf(" -> %d output%s\n", kn_graph_num_outputs(g),
               kn_graph_num_outputs(g) == 1 ? "" : "s");
    }
    kn_graph_free(g);
    return st == KN_OK ? 0 : failed("import");
}

static int cmd_export(int argc, char **argv) {
    const char *path = NULL, *out = NULL;
    long long opset = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-o")) {
            if (!(out = opt_arg(argc, argv, &i)))
                return usage_err("export", "%s", "-o needs a file");
        } else if (!strcmp(argv[i], "--opset")) {
            const char *v = opt_arg(argc, argv, &i);
            if (!parse_ll(v, 13, 17, &opset))
                return usage_err("export", "--opset needs 13..17, got '%s'", v ? v : "");
        } else if (argv[i][0] == '-' || path) {
            return usage_err("export", "unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path || !out)
        return usage_err("export", "%s", "usage: kiln export FILE.kiln -o MODEL.onnx [--opset N]");
    kn_graph *g = kn_graph_load(path);
    if (!g) return failed("export");
    kn_status st = kn_onnx_export(g, out, (int)opset);
    if (st == KN_OK) printf("%s: opset %lld\n", out, opset ? opset : 13);
    kn_graph_free(g);
    return st == KN_OK ? 0 : failed("export");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile of sorted t[0..n) */
static double pct(const double *t, int n, double p) {
    int k = (int)ceil(p / 100.0 * n) - 1;
    return t[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmd_bench(int argc, char **argv) {
    const char *path = NULL;
    long long batch = 1, iters = 100, warmup = 10, threads = 0;
    bool profile = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--profile")) {
            profile = true;
            continue;
        }
        long long *dst = !strcmp(argv[i], "--batch")     ? &batch
                         : !strcmp(argv[i], "--iters")   ? &iters
                         : !strcmp(argv[i], "--warmup")  ? &warmup
                         : !strcmp(argv[i], "--threads") ? &threads
                                                         : NULL;
        if (dst) {
            const char *opt = argv[i], *v = opt_arg(argc, argv, &i);
            long long lo = dst == &warmup ? 0 : 1;
            long long hi = dst == &batch ? (long long)1 << 31 : dst == &threads ? 4096 : 100000000;
            if (!parse_ll(v, lo, hi, dst)) {
                fprintf(stderr, "kiln bench: %s needs an integer in [%lld, %lld], got '%s'\n", opt,
                        lo, hi, v ? v : "");
                return 2;
            }
        } else if (argv[i][0] == '-' || path) {
            return usage_err("bench", "unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) return usage_err("bench", "%s", "no FILE given");
    if (threads && kn_set_num_threads((int)threads) != KN_OK) return failed("bench");
    kn_graph *g = load_frozen(path);
    if (!g) return failed("bench");
    int rc = 1, nin = kn_graph_num_inputs(g), nout = kn_graph_num_outputs(g);
    kn_tensor *in[CLI_MAX_IO] = {0}, *out[CLI_MAX_IO] = {0};
    double *t = NULL;
    kn_scope sc = kn_scope_begin();
    if (nin > CLI_MAX_IO || nout > CLI_MAX_IO) {
        fprintf(stderr, "kiln bench: %s: more than %d inputs or outputs\n", path, CLI_MAX_IO);
        goto done;
    }
    kn_manual_seed(0);
    for (int k = 0; k < nin; k++) {
        kn_graph_sig s;
        kn_graph_input(g, k, &s);
        int64_t shape[8];
        for (int d = 0; d < s.ndim; d++)
            shape[d] = s.shape[d] < 0 ? batch : s.shape[d];
        bool fl = kn_dtype_is_float(s.dtype);
        in[k] = fl ? kn_randn(KN_F32, s.ndim, shape) : kn_zeros(s.dtype, s.ndim, shape);
        if (in[k] && fl && s.dtype != KN_F32) in[k] = kn_cast(in[k], s.dtype);
        if (!in[k]) {
            failed("bench");
            goto done;
        }
    }
    /* the first run builds the plan for this batch and gives correctly shaped outputs */
    if (kn_graph_run(g, in, nin, out, CLI_MAX_IO) < 0) {
        failed("bench");
        goto done;
    }
    for (long long w = 1; w < warmup; w++)
        if (kn_graph_run_into(g, in, nin, out, nout) != KN_OK) {
            failed("bench");
            goto done;
        }
    if (!(t = malloc(sizeof(double) * (size_t)iters))) {
        fprintf(stderr, "kiln bench: out of memory\n");
        goto done;
    }
    double total = 0;
    for (long long r = 0; r < iters; r++) {
        double t0 = now_ms();
        kn_status st = kn_graph_run_into(g, in, nin, out, nout);
        t[r] = now_ms() - t0;
        if (st != KN_OK) {
            failed("bench");
            goto done;
        }
        total += t[r];
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    int n = (int)iters;
    double sps = total > 0 ? (double)batch * (double)iters / (total / 1e3) : 0;
    kn_graph_stats gs;
    if (kn_graph_stats_get(g, &gs) != KN_OK) {
        failed("bench");
        goto done;
    }
    printf("graph %s: batch %lld, %d threads, %lld warmup, %lld iters\n", path, batch,
           kn_get_num_threads(), warmup, iters);
    printf("latency ms: min %.3f  p50 %.3f  p90 %.3f  p99 %.3f\n", t[0], pct(t, n, 50),
           pct(t, n, 90), pct(t, n, 99));
    printf("throughput: %.1f samples/s\n", sps);
    printf("arena: %lld bytes\n", (long long)gs.arena_bytes);
    printf("bench=graph batch=%lld threads=%d p50_ms=%.3f samples_per_s=%.1f arena_bytes=%lld\n",
           batch, kn_get_num_threads(), pct(t, n, 50), sps, (long long)gs.arena_bytes);
    if (profile) { /* as many runs again, timed node by node (apart from the runs above) */
        kn_status st = kn_graph_profile(g, true);
        for (long long r = 0; r < iters && !st; r++)
            st = kn_graph_run_into(g, in, nin, out, nout);
        if (!st) st = kn_graph_profile_print(g, stdout, batch, 40);
        if (st) {
            failed("bench");
            goto done;
        }
    }
    rc = 0;
done:
    free(t);
    kn_scope_end(sc);
    kn_graph_free(g);
    return rc;
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
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
    if (!strcmp(cmd, "check")) return cmd_check(argc, argv);
    if (!strcmp(cmd, "import")) return cmd_import(argc, argv);
    if (!strcmp(cmd, "export")) return cmd_export(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "cpu")) {
        printf("cpu features: %s\nthreads: %d\nblas: %s\n", kn_cpu_features(), kn_get_num_threads(),
               kn_have_blas() ? "OpenBLAS" : "reference kernel");
        return 0;
    }
    fprintf(stderr, "kiln: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
