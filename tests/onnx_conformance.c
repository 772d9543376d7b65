/*
 * onnx_conformance.c - runs ONNX's own backend tests (Debian libonnx-testdata) through kiln's
 * importer and compiled graphs, and compares with ONNX's expected outputs by ONNX's rule:
 * |actual - expected| <= 1e-7 + 1e-3 * |expected|, NaN equals NaN, dtype and shape exact.
 *
 * Every test directory of the categories node, pytorch-converted, pytorch-operator and simple is
 * run: model.onnx imported with the data set's inputs as examples, compiled (frozen), run, each
 * output compared. A load error, an unsupported op or a wrong value is a failure, never a skip.
 *
 *   onnx_conformance [--data DIR] [--filter SUBSTR] [--doc FILE] [--floor FILE] [-v]
 *
 * Prints a table per category and per tier (the CNN and transformer op families of
 * tools/onnx_subset.py: every op of the test in the tier, float inputs/outputs, not a training
 * test). --doc writes that table and every failure with its reason (docs/onnx-conformance.md).
 * --floor FILE holds "category passes" lines: the run fails when a count drops below one (CI).
 * Exit status: 0 when every floor holds, 1 otherwise, 2 when the data is missing.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln/kiln.h"
#include "onnx/onnx_model.h"

static const char *const categories[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
#define NCAT 4

/* tiers: the op families of tools/onnx_subset.py */
static const char *const tier_cnn =
    " Conv Gemm MatMul Relu LeakyRelu Sigmoid Tanh Softmax LogSoftmax BatchNormalization MaxPool "
    "AveragePool GlobalAveragePool GlobalMaxPool Add Sub Mul Div Sum Reshape Flatten Transpose "
    "Concat Identity Dropout Clip Constant ";
static const char *const tier_tf =
    " LayerNormalization Erf Pow Sqrt Exp Log Neg Abs Reciprocal ReduceMean ReduceSum ReduceMax "
    "Gather Slice Split Squeeze Unsqueeze Shape Where Expand Cast ConstantOfShape Equal Range Max "
    "Min Elu Selu PRelu HardSigmoid HardSwish Softplus ConvTranspose Pad Size ";

typedef struct result {
    char name[128];
    int cat;
    int tier; /* 0 none, 1 cnn, 2 transformer (cnn included) */
    bool pass;
    char why[240];
} result;

static bool in_list(const char *list, const char *op, size_t n) {
    char buf[80];
    if (n + 3 > sizeof buf) return false;
    buf[0] = ' ';
    memcpy(buf + 1, op, n);
    buf[n + 1] = ' ';
    buf[n + 2] = 0;
    return strstr(list, buf) != NULL;
}

static int graph_tier(const kn_onnx_graph *g) {
    int t = 1;
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kn_onnx_node *nd = &g->nodes[i];
        if (nd->domain.n && !(nd->domain.n == 7 && !memcmp(nd->domain.p, "ai.onnx", 7))) return 0;
        if (in_list(tier_cnn, nd->op_type.p, nd->op_type.n)) continue;
        if (!in_list(tier_tf, nd->op_type.p, nd->op_type.n)) return 0;
        t = 2;
        for (size_t a = 0; a < nd->n_attrs; a++)
            if (nd->attrs[a].g) {
                int s = graph_tier(nd->attrs[a].g);
                if (!s) return 0;
                if (s > t) t = s;
            }
    }
    return t;
}

static bool is_init(const kn_onnx_graph *g, kn_onnx_str name) {
    for (size_t i = 0; i < g->n_initializers; i++)
        if (g->initializers[i].name.n == name.n &&
            !memcmp(g->initializers[i].name.p, name.p, name.n))
            return true;
    return false;
}

/* the tier of a test (tools/onnx_subset.py's rule), 0 when in none; the names of the model's
 * inputs (input_k.pb is the k-th input that is not an initializer) into names[] */
static int test_tier(const char *name, const void *buf, size_t n, char (*names)[128], int *nnames) {
    kn_onnx_model *m = kn__onnx_model_parse(buf, n);
    if (!m) return 0;
    *nnames = 0;
    for (size_t i = 0; i < m->graph.n_inputs && *nnames < 64; i++) {
        kn_onnx_str s = m->graph.inputs[i].name;
        if (is_init(&m->graph, s)) continue;
        snprintf(names[(*nnames)++], 128, "%.*s", (int)s.n, s.p);
    }
    if (strstr(name, "training")) {
        kn__onnx_model_free(m);
        return 0;
    }
    int t = graph_tier(&m->graph);
    bool any_float = false;
    const kn_onnx_value_info *vis[2] = {m->graph.inputs, m->graph.outputs};
    size_t nv[2] = {m->graph.n_inputs, m->graph.n_outputs};
    for (int k = 0; k < 2 && t; k++)
        for (size_t i = 0; i < nv[k]; i++) {
            int e = vis[k][i].elem_type;
            if (!vis[k][i].has_tensor_type || (e != 1 && e != 6 && e != 7 && e != 9)) t = 0;
            any_float |= e == 1;
        }
    kn__onnx_model_free(m);
    return any_float ? t : 0;
}

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) free(b), b = NULL;
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sorted subdirectory names (caller frees each and the array) */
static int list_dir(const char *dir, const char *prefix, char ***out) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0, cap = 64;
    char **v = malloc(sizeof *v * (size_t)cap);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix))) continue;
        if (n == cap) v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ONNX's rule; returns false with a reason */
static bool compare(const kn_tensor *a, const kn_tensor *e, int k, char *why, size_t wn) {
    if (kn_tensor_dtype(a) != kn_tensor_dtype(e)) {
        snprintf(why, wn, "output %d: dtype %s, expected %s", k, kn_dtype_name(kn_tensor_dtype(a)),
                 kn_dtype_name(kn_tensor_dtype(e)));
        return false;
    }
    int r = kn_tensor_ndim(a);
    if (r != kn_tensor_ndim(e) ||
        memcmp(kn_tensor_shape(a), kn_tensor_shape(e), sizeof(int64_t) * (size_t)r)) {
        char sa[64] = "", se[64] = "";
        for (int i = 0; i < r; i++)
            snprintf(sa + strlen(sa), sizeof sa - strlen(sa), "%s%lld", i ? "," : "",
                     (long long)kn_tensor_shape(a)[i]);
        for (int i = 0; i < kn_tensor_ndim(e); i++)
            snprintf(se + strlen(se), sizeof se - strlen(se), "%s%lld", i ? "," : "",
                     (long long)kn_tensor_shape(e)[i]);
        snprintf(why, wn, "output %d: shape (%s), expected (%s)", k, sa, se);
        return false;
    }
    int64_t n = kn_tensor_numel(a);
    double *va = malloc(sizeof(double) * (size_t)(n ? n : 1));
    double *ve = malloc(sizeof(double) * (size_t)(n ? n : 1));
    bool ok = va && ve && !kn_tensor_read(a, KN_F64, va, sizeof(double) * (size_t)n) &&
              !kn_tensor_read(e, KN_F64, ve, sizeof(double) * (size_t)n);
    if (!ok) snprintf(why, wn, "output %d: cannot read values", k);
    bool exact = !kn_dtype_is_float(kn_tensor_dtype(e));
    for (int64_t i = 0; ok && i < n; i++) {
        double x = va[i], y = ve[i];
        if (isnan(x) && isnan(y)) continue;
        if (x == y) continue;
        if (!exact && fabs(x - y) <= 1e-7 + 1e-3 * fabs(y)) continue;
        snprintf(why, wn, "output %d: element %lld is %.9g, expected %.9g", k, (long long)i, x, y);
        ok = false;
    }
    free(va);
    free(ve);
    return ok;
}

/* one test directory; false with a reason */
static bool run_test(const char *dir, char *why, size_t wn, int *tier, const char *name) {
    char path[2600];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    size_t mn = 0;
    void *model = slurp(path, &mn);
    if (!model) {
        snprintf(why, wn, "no model.onnx");
        return false;
    }
    char names[64][128];
    int nnames = 0;
    *tier = test_tier(name, model, mn, names, &nnames);
    char **sets;
    int nsets = list_dir(dir, "test_data_set_", &sets);
    bool ok = nsets > 0;
    if (!ok) snprintf(why, wn, "no test data sets");
    for (int s = 0; ok && s < nsets; s++) {
        kn_tensor *in[64] = {0}, *exp[64] = {0}, *out[64] = {0};
        int nin = 0, nexp = 0, nout = 0;
        kn_graph *g = NULL;
        for (; nin < 64; nin++) {
            snprintf(path, sizeof path, "%s/%s/input_%d.pb", dir, sets[s], nin);
            struct stat st;
            if (stat(path, &st)) break;
            if (!(in[nin] = kn_onnx_read_tensor(path))) {
                snprintf(why, wn, "input %d: %s", nin, kn_last_error());
                ok = false;
                break;
            }
        }
        for (; ok && nexp < 64; nexp++) {
            snprintf(path, sizeof path, "%s/%s/output_%d.pb", dir, sets[s], nexp);
            struct stat st;
            if (stat(path, &st)) break;
            if (!(exp[nexp] = kn_onnx_read_tensor(path))) {
                snprintf(why, wn, "expected output %d: %s", nexp, kn_last_error());
                ok = false;
            }
        }
        if (ok) {
            kn_onnx_opts o = {.example = in, .nexample = nin, .static_batch = true};
            g = kn_onnx_import_mem(model, mn, dir, &o);
            if (!g) snprintf(why, wn, "%s", kn_last_error()), ok = false;
        }
        if (ok && nnames != nin) {
            snprintf(why, wn, "the model has %d inputs, the data set %d", nnames, nin);
            ok = false;
        }
        /* inputs used as shapes were frozen into the graph: pass the others, by name */
        kn_tensor *gin[64];
        int ngin = ok ? kn_graph_num_inputs(g) : 0;
        for (int i = 0; ok && i < ngin; i++) {
            kn_graph_sig sig;
            kn_graph_input(g, i, &sig);
            int k = 0;
            while (k < nnames && strcmp(names[k], sig.name))
                k++;
            if (k == nnames) {
                snprintf(why, wn, "graph input '%s' is not a model input", sig.name);
                ok = false;
            } else {
                gin[i] = in[k];
            }
        }
        kn_compile_opts co = {.freeze = true};
        if (ok && kn_graph_compile(g, &co))
            snprintf(why, wn, "compile: %s", kn_last_error()), ok = false;
        if (ok) {
            nout = kn_graph_run(g, gin, ngin, out, 64);
            if (nout < 0) snprintf(why, wn, "run: %s", kn_last_error()), ok = false;
        }
        if (ok && nout != nexp) {
            snprintf(why, wn, "%d outputs, expected %d", nout, nexp);
            ok = false;
        }
        for (int k = 0; ok && k < nout; k++)
            ok = compare(out[k], exp[k], k, why, wn);
        for (int i = 0; i < 64; i++) {
            kn_tensor_free(in[i]);
            kn_tensor_free(exp[i]);
            if (i < nout) kn_tensor_free(out[i]);
        }
        kn_graph_free(g);
        kn_clear_error();
    }
    free_list(sets, nsets > 0 ? nsets : 0);
    free(model);
    return ok;
}

static void quiet(int level, const char *msg, void *user) {
    (void)level, (void)msg, (void)user;
}

int main(int argc, char **argv) {
    const char *data = "/usr/share/libonnx-testdata/data", *filter = NULL, *doc = NULL;
    const char *floor_file = NULL;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc)
            data = argv[++i];
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
            filter = argv[++i];
        else if (!strcmp(argv[i], "--doc") && i + 1 < argc)
            doc = argv[++i];
        else if (!strcmp(argv[i], "--floor") && i + 1 < argc)
            floor_file = argv[++i];
        else if (!strcmp(argv[i], "-v"))
            verbose = true;
        else {
            fprintf(stderr, "usage: onnx_conformance [--data DIR] [--filter S] [--doc FILE] "
                            "[--floor FILE] [-v]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    kn_set_log(quiet, NULL);
    kn_set_num_threads(1);
    int cap = 2048, nres = 0;
    result *res = calloc((size_t)cap, sizeof *res);
    int pass[NCAT] = {0}, total[NCAT] = {0}, tpass[3] = {0}, ttotal[3] = {0};
    for (int c = 0; c < NCAT; c++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", data, categories[c]);
        char **tests;
        int nt = list_dir(dir, "test_", &tests);
        if (nt < 0) {
            fprintf(stderr, "onnx_conformance: %s is missing (install libonnx-testdata)\n", dir);
            return 2;
        }
        for (int t = 0; t < nt; t++) {
            if (filter && !strstr(tests[t], filter)) continue;
            if (nres == cap) res = realloc(res, sizeof *res * (size_t)(cap *= 2));
            result *r = &res[nres++];
            memset(r, 0, sizeof *r);
            snprintf(r->name, sizeof r->name, "%s", tests[t]);
            r->cat = c;
            char tdir[1200];
            snprintf(tdir, sizeof tdir, "%s/%s", dir, tests[t]);
            if (getenv("KILN_CONFORMANCE_TRACE")) fprintf(stderr, "RUN %s\n", tests[t]);
            r->pass = run_test(tdir, r->why, sizeof r->why, &r->tier, tests[t]);
            total[c]++;
            pass[c] += r->pass;
            if (r->tier) {
                for (int k = r->tier; k <= 2; k++)
                    ttotal[k]++, tpass[k] += r->pass;
            }
            if (verbose && !r->pass) printf("FAIL %s/%s: %s\n", categories[c], r->name, r->why);
        }
        free_list(tests, nt);
    }
    int models_pass = pass[1] + pass[2] + pass[3], models_total = total[1] + total[2] + total[3];
    printf("%-20s %6s %6s %7s\n", "category", "pass", "total", "rate");
    for (int c = 0; c < NCAT; c++)
        printf("%-20s %6d %6d %6.1f%%\n", categories[c], pass[c], total[c],
               total[c] ? 100.0 * pass[c] / total[c] : 0);
    printf("%-20s %6d %6d %6.1f%%\n", "models (non-node)", models_pass, models_total,
           models_total ? 100.0 * models_pass / models_total : 0);
    printf("%-20s %6d %6d\n", "tier cnn", tpass[1], ttotal[1]);
    printf("%-20s %6d %6d\n", "tier transformer", tpass[2], ttotal[2]);
    if (doc) {
        FILE *f = fopen(doc, "w");
        if (!f) {
            fprintf(stderr, "onnx_conformance: cannot write %s\n", doc);
            return 1;
        }
        fprintf(f, "# ONNX conformance\n\n"
                   "Generated by `make onnx-conformance` (`build/onnx_conformance --doc "
                   "docs/onnx-conformance.md`): ONNX's backend test data from Debian's "
                   "`libonnx-testdata` (ONNX 1.12, opsets up to 17), each test imported with its "
                   "inputs, compiled and run by kiln, every output compared by ONNX's rule "
                   "(|a - e| <= 1e-7 + 1e-3 |e|, NaN = NaN, dtype and shape exact). A load error "
                   "or an unsupported op is a failure. `make test` runs the same and fails when a "
                   "count drops below `tests/onnx_conformance_floor.txt`.\n\n");
        fprintf(f, "| category | pass | total | rate |\n| --- | ---: | ---: | ---: |\n");
        for (int c = 0; c < NCAT; c++)
            fprintf(f, "| %s | %d | %d | %.1f%% |\n", categories[c], pass[c], total[c],
                    total[c] ? 100.0 * pass[c] / total[c] : 0);
        fprintf(f, "| models (the three non-node categories) | %d | %d | %.1f%% |\n", models_pass,
                models_total, models_total ? 100.0 * models_pass / models_total : 0);
        fprintf(f, "| tier: CNN ops (all categories) | %d | %d | %.1f%% |\n", tpass[1], ttotal[1],
                ttotal[1] ? 100.0 * tpass[1] / ttotal[1] : 0);
        fprintf(f, "| tier: transformer ops (CNN included) | %d | %d | %.1f%% |\n", tpass[2],
                ttotal[2], ttotal[2] ? 100.0 * tpass[2] / ttotal[2] : 0);
        fprintf(f, "\nTiers follow `tools/onnx_subset.py`: every op of the test in the family, "
                   "inputs and outputs float/int32/int64/bool with at least one float, not a "
                   "training test.\n\n## Failures\n\n| test | tier | reason |\n| --- | --- | --- "
                   "|\n");
        for (int i = 0; i < nres; i++) {
            if (res[i].pass) continue;
            for (char *p = res[i].why; *p; p++)
                if (*p == '|' || *p == '\n') *p = ' ';
            fprintf(f, "| %s/%s | %s | %s |\n", categories[res[i].cat], res[i].name,
                    res[i].tier == 1   ? "cnn"
                    : res[i].tier == 2 ? "transformer"
                                       : "-",
                    res[i].why);
        }
        fclose(f);
    }
    int rc = 0;
    if (floor_file) {
        FILE *f = fopen(floor_file, "r");
        if (!f) {
            fprintf(stderr, "onnx_conformance: cannot read %s\n", floor_file);
            return 1;
        }
        char key[64];
        int want;
        while (fscanf(f, "%63s %d", key, &want) == 2) {
            int got = -1;
            for (int c = 0; c < NCAT; c++)
                if (!strcmp(key, categories[c])) got = pass[c];
            if (!strcmp(key, "models")) got = models_pass;
            if (!strcmp(key, "tier-cnn")) got = tpass[1];
            if (!strcmp(key, "tier-transformer")) got = tpass[2];
            if (got < 0) {
                fprintf(stderr, "onnx_conformance: unknown floor '%s'\n", key);
                rc = 1;
            } else if (got < want) {
                fprintf(stderr, "onnx_conformance: %s passes %d, below the recorded %d\n", key, got,
                        want);
                rc = 1;
            }
        }
        fclose(f);
    }
    free(res);
    return rc;
}
