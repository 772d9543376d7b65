/* test_conv.c - conv1d/conv2d/conv_transpose2d and the pools: hand-checked values, PyTorch
 * padding semantics ('same' with even kernels, ceil_mode, count_include_pad), fast (im2col +
 * GEMM) vs direct reference kernels over a grid of strides/pads/dilations/groups, thread-count
 * independence, f64 gradient checks (first and second order) and error messages. */
#include "kernels/conv.h"
#include "kn_test.h"
#include "ops/op_impl.h"

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        kn_scope s_ = kn_scope_begin();                                                            \
        KT_RUN(fn);                                                                                \
        kn_scope_end(s_);                                                                          \
    } while (0)

static kn_tensor *from(kn_dtype dt, int nd, const int64_t *shape, const double *v) {
    kn_tensor *t = kn_from_data(KN_F64, nd, shape, v);
    return dt == KN_F64 ? t : kn_cast(t, dt);
}

static kn_tensor *leaf(int nd, const int64_t *shape) {
    kn_tensor *t = kn_randn(KN_F64, nd, shape);
    kn_tensor_set_requires_grad(t, true);
    return t;
}

static kn_tensor *run_op(const char *name, kn_tensor **in, int nin, const kn_attrs *a, bool ref) {
    bool prev = kn__force_ref(ref);
    kn_tensor *out[KN_MAX_OUTS] = {0};
    int n = kn_op_call(name, in, nin, a, out, KN_MAX_OUTS);
    kn__force_ref(prev);
    return n >= 1 ? out[0] : NULL;
}

static double dot(kn_tensor *a, kn_tensor *b) {
    return kn_item(kn_sum(kn_mul(a, b), NULL, 0, false));
}

/* ------------------------------------------------------------------ conv2d values */

static void test_conv2d_values(void) {
    double xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wv[4] = {1, 0, 0, 1};
    for (int d = 0; d < 2; d++) {
        kn_dtype dt = d ? KN_F64 : KN_F32;
        kn_tensor *x = from(dt, 4, (int64_t[]){1, 1, 3, 3}, xv);
        kn_tensor *w = from(dt, 4, (int64_t[]){1, 1, 2, 2}, wv);
        kn_tensor *b = from(dt, 1, (int64_t[]){1}, (double[]){1});
        kn_tensor *y = kn_conv2d(x, w, b, NULL);
        KT_CLOSE(y, from(KN_F64, 4, (int64_t[]){1, 1, 2, 2}, (double[]){7, 9, 13, 15}), 0, 0);
        /* padding 1: corners see one tap */
        kn_conv_opts o = {.padding = {1, 1}};
        kn_tensor *yp = kn_conv2d(x, w, NULL, &o);
        KT_EQ_INT(4, kn_tensor_shape(yp)[2]);
        double ep[16] = {1, 2, 3, 0, 4, 6, 8, 3, 7, 12, 14, 6, 0, 7, 8, 9};
        KT_CLOSE(yp, from(KN_F64, 4, (int64_t[]){1, 1, 4, 4}, ep), 0, 0);
        /* padding='same' with an even kernel pads (0 before, 1 after), like PyTorch */
        kn_conv_opts same = {.same_padding = true};
        kn_tensor *ys = kn_conv2d(x, w, NULL, &same);
        double es[9] = {6, 8, 3, 12, 14, 6, 7, 8, 9};
        KT_CLOSE(ys, from(KN_F64, 4, (int64_t[]){1, 1, 3, 3}, es), 0, 0);
        /* stride 2 with padding 1, and dilation 2 */
        kn_conv_opts s2 = {.stride = {2, 2}, .padding = {1, 1}};
        double e2[4] = {1, 3, 7, 14};
        KT_CLOSE(kn_conv2d(x, w, NULL, &s2), from(KN_F64, 4, (int64_t[]){1, 1, 2, 2}, e2), 0, 0);
        kn_conv_opts dil = {.dilation = {2, 2}};
        KT_CLOSE(kn_conv2d(x, w, NULL, &dil),
                 from(KN_F64, 4, (int64_t[]){1, 1, 1, 1}, (double[]){10}), 0, 0);
        /* groups: two channels, each with its own 1x1 filter */
        double x2[8] = {1, 2, 3, 4, 10, 20, 30, 40};
        kn_tensor *xg = from(dt, 4, (int64_t[]){1, 2, 2, 2}, x2);
        kn_tensor *wg = from(dt, 4, (int64_t[]){2, 1, 1, 1}, (double[]){2, -1});
        kn_conv_opts g2 = {.groups = 2};
        double eg[8] = {2, 4, 6, 8, -10, -20, -30, -40};
        KT_CLOSE(kn_conv2d(xg, wg, NULL, &g2), from(KN_F64, 4, (int64_t[]){1, 2, 2, 2}, eg), 0, 0);
    }
}

static void test_conv1d_values(void) {
    kn_tensor *x = from(KN_F32, 3, (int64_t[]){1, 1, 4}, (double[]){1, 2, 3, 4});
    kn_tensor *w = from(KN_F32, 3, (int64_t[]){1, 1, 2}, (double[]){1, 1});
    kn_tensor *y = kn_conv1d(x, w, NULL, NULL);
    KT_EQ_INT(3, kn_tensor_ndim(y));
    KT_CLOSE(y, from(KN_F64, 3, (int64_t[]){1, 1, 3}, (double[]){3, 5, 7}), 0, 0);
    kn_conv_opts same = {.same_padding = true};
    KT_CLOSE(kn_conv1d(x, w, NULL, &same),
             from(KN_F64, 3, (int64_t[]){1, 1, 4}, (double[]){3, 5, 7, 4}), 0, 0);
    kn_conv_opts o = {.stride = {2}, .padding = {1}, .dilation = {1}};
    kn_tensor *b = from(KN_F32, 1, (int64_t[]){1}, (double[]){0.5});
    KT_CLOSE(kn_conv1d(x, w, b, &o),
             from(KN_F64, 3, (int64_t[]){1, 1, 3}, (double[]){1.5, 5.5, 4.5}), 0, 0);
    /* conv1d is conv2d on a height-1 image */
    kn_tensor *x3 = kn_randn(KN_F64, 3, (int64_t[]){2, 4, 9});
    kn_tensor *w3 = kn_randn(KN_F64, 3, (int64_t[]){6, 2, 3});
    kn_conv_opts og = {.stride = {2}, .padding = {2}, .dilation = {2}, .groups = 2};
    kn_conv_opts og2 = {.stride = {1, 2}, .padding = {0, 2}, .dilation = {1, 2}, .groups = 2};
    kn_tensor *y2 = kn_conv2d(kn_unsqueeze(x3, 2), kn_unsqueeze(w3, 2), NULL, &og2);
    KT_CLOSE(kn_conv1d(x3, w3, NULL, &og), kn_squeeze(y2, 2), 1e-12, 0);
}

/* ------------------------------------------------------------------ fast vs reference grid */

typedef struct {
    int64_t N, C, H, W, O, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, G;
} conv_case;

static const conv_case k_cases[] = {
    /* N  C  H   W   O  KH KW sh sw pt pl pb pr dh dw G */
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},    /* 3x3 pad 1 */
    {3, 4, 9, 8, 6, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 2},    /* 1x1 direct GEMM, groups */
    {2, 4, 9, 9, 5, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1},    /* 1x1 stride 2 */
    {1, 2, 11, 10, 3, 5, 3, 2, 1, 2, 0, 1, 3, 2, 1, 1},  /* asymmetric pads, dilation */
    {4, 6, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6},    /* depthwise */
    {2, 4, 10, 7, 4, 2, 4, 3, 2, 0, 1, 1, 0, 1, 2, 2},   /* even kernels, strides 3/2 */
    {1, 1, 5, 5, 1, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1},    /* kernel = input */
    {3, 64, 12, 40, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1}, /* several im2col tiles */
    {5, 2, 6, 6, 3, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1},    /* odd batch: partial sums */
    {9, 3, 5, 4, 2, 2, 2, 1, 1, 1, 0, 0, 1, 1, 1, 1},    /* 9 images: uneven slots */
    {2, 3, 9, 8, 6, 3, 3, 2, 2, 1, 0, 2, 1, 2, 1, 3},    /* depthwise, multiplier 2 */
    {2, 1, 7, 7, 4, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1},    /* one input channel */
    {3, 8, 12, 11, 8, 3, 3, 1, 2, 1, 1, 1, 1, 1, 1, 8},  /* depthwise, column stride 2 */
    {3, 4, 6, 9, 6, 2, 4, 1, 1, 0, 1, 1, 2, 1, 1, 2},    /* shifted GEMM: groups, even, asym */
    {2, 5, 7, 5, 3, 3, 1, 1, 1, 2, 0, 0, 0, 1, 1, 1},    /* shifted GEMM: 3x1, top pad only */
    /* batches of 16+ small images: the batch-in-lanes kernels (x86/conv_b16_avx512.c) */
    {16, 1, 28, 28, 6, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1},  /* LeNet conv1: one group */
    {20, 6, 12, 12, 16, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1}, /* LeNet conv2: a partial group */
    {33, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},    /* pad 1, O and OW not block sizes */
    {17, 4, 6, 10, 7, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1, 1},   /* 7x7 kernel wider than the image */
    {16, 2, 5, 6, 9, 1, 3, 1, 1, 0, 2, 0, 1, 1, 1, 1},    /* 1x3, asymmetric column pads */
    {48, 8, 4, 4, 8, 2, 6, 1, 1, 2, 1, 0, 4, 1, 1, 1},    /* even kernel, pads past it; 3 groups */
};

static void conv_attrs(kn_attrs *a, const conv_case *c) {
    kn_attrs_set_ints(a, "stride", (int64_t[]){c->sh, c->sw}, 2);
    kn_attrs_set_ints(a, "pads", (int64_t[]){c->pt, c->pl, c->pb, c->pr}, 4);
    kn_attrs_set_ints(a, "dilation", (int64_t[]){c->dh, c->dw}, 2);
    kn_attrs_set_int(a, "groups", c->G);
}

static void test_conv2d_fast_vs_ref(void) {
    for (size_t i = 0; i < sizeof k_cases / sizeof *k_cases; i++) {
        const conv_case *c = &k_cases[i];
        for (int d = 0; d < 2; d++) {
            kn_dtype dt = d ? KN_F64 : KN_F32;
            double tol = d ? 1e-11 : 2e-4;
            kn_attrs a = {0};
            conv_attrs(&a, c);
            kn_tensor *x = kn_randn(dt, 4, (int64_t[]){c->N, c->C, c->H, c->W});
            kn_tensor *w = kn_randn(dt, 4, (int64_t[]){c->O, c->C / c->G, c->KH, c->KW});
            kn_tensor *b = kn_randn(dt, 1, (int64_t[]){c->O});
            kn_tensor *in[3] = {x, w, b};
            kn_tensor *yf = run_op("conv2d", in, 3, &a, false);
            kn_tensor *yr = run_op("conv2d", in, 3, &a, true);
            KT_NOTNULL(yf);
            if (kt_tensor_close("conv2d", yf, yr, tol, tol)) KT_FAIL("conv2d case %zu", i);
            kn_tensor *gy = kn_randn(dt, 4, kn_tensor_shape(yf));
            kn_attrs ai = a, aw = a;
            kn_attrs_set_ints(&ai, "input_size", (int64_t[]){c->H, c->W}, 2);
            kn_attrs_set_ints(&aw, "kernel_size", (int64_t[]){c->KH, c->KW}, 2);
            kn_tensor *bi[2] = {gy, w}, *bw[2] = {x, gy};
            kn_tensor *gif = run_op("conv2d_backward_input", bi, 2, &ai, false);
            kn_tensor *gir = run_op("conv2d_backward_input", bi, 2, &ai, true);
            KT_NOTNULL(gif);
            if (kt_tensor_close("bwd_input", gif, gir, tol, tol)) KT_FAIL("bwd input case %zu", i);
            kn_tensor *gwf = run_op("conv2d_backward_weight", bw, 2, &aw, false);
            kn_tensor *gwr = run_op("conv2d_backward_weight", bw, 2, &aw, true);
            KT_NOTNULL(gwf);
            if (kt_tensor_close("bwd_weight", gwf, gwr, tol * 10, tol))
                KT_FAIL("bwd weight case %zu", i);
            /* adjoint identities: <conv(x), gy> = <x, bwd_input(gy)> = <w, bwd_weight(x, gy)> */
            kn_tensor *y0 = run_op("conv2d", in, 2, &a, true);
            double l0 = dot(y0, gy), l1 = dot(x, gir), l2 = dot(w, gwr);
            KT_NEAR(l0, l1, 1e-3 * (1 + fabs(l0)));
            KT_NEAR(l0, l2, 1e-3 * (1 + fabs(l0)));
        }
    }
}

/* conv2d_packed (the prepack pass's op, x86/conv_packed_avx512.c): the AVX-512 kernel against
 * its reference loops (same order: equal to rounding of padding terms) and against conv2d's
 * reference, with and without bias and relu, on 1 and 2 threads (same bits). Geometries: the
 * 7x7 stride-2 stem, channel counts that are not blocks of 64, row widths that are not
 * multiples of the 7-output tiles, several channel chunks, dilation, asymmetric pads, stride 3
 * vertically. */
static void test_conv2d_packed(void) {
    static const conv_case cases[] = {
        {1, 3, 23, 23, 64, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1},
        {2, 16, 9, 9, 80, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {1, 40, 7, 7, 128, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
        {3, 32, 10, 13, 64, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1},
        {1, 8, 12, 17, 33, 3, 2, 1, 1, 2, 1, 0, 2, 2, 3, 1},
        {1, 200, 5, 5, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {4, 3, 8, 30, 64, 3, 3, 3, 2, 1, 0, 1, 0, 1, 1, 1},
    };
    int prev = kn_get_num_threads();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const conv_case *c = &cases[i];
        kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){c->N, c->C, c->H, c->W});
        kn_tensor *w = kn_randn(KN_F32, 4, (int64_t[]){c->O, c->C, c->KH, c->KW});
        kn_tensor *b = kn_randn(KN_F32, 1, (int64_t[]){c->O});
        int64_t size = kn__conv_packed_size(c->O, c->C, c->KH, c->KW);
        kn_tensor *wp = kn_zeros(KN_F32, 1, &size);
        kn__conv_pack_w(kn_tensor_data(w), c->O, c->C, c->KH, c->KW, kn_tensor_data(wp));
        for (int relu = 0; relu < 2; relu++)
            for (int nin = 2; nin <= 3; nin++) {
                kn_attrs a = {0};
                conv_attrs(&a, c);
                kn_attrs_set_ints(&a, "weight_shape", (int64_t[]){c->O, c->C, c->KH, c->KW}, 4);
                kn_attrs_set_int(&a, "relu", relu);
                kn_tensor *in[4] = {x, wp, b}, *cin[3] = {x, w, b};
                /* with relu: also a residual (added after the bias, before the relu) */
                kn_tensor *res = NULL;
                if (relu) {
                    kn_attrs ca = {0};
                    conv_attrs(&ca, c);
                    kn_tensor *y0 = run_op("conv2d", cin, 2, &ca, true);
                    KT_NOTNULL(y0);
                    res = kn_randn(KN_F32, 4, kn_tensor_shape(y0));
                    in[nin] = res;
                    kn_attrs_set_int(&a, "residual", 1);
                }
                const int nall = nin + (res != NULL);
                kn_set_num_threads(1);
                kn_tensor *y1 = run_op("conv2d_packed", in, nall, &a, false);
                kn_set_num_threads(2);
                kn_tensor *y2 = run_op("conv2d_packed", in, nall, &a, false);
                kn_tensor *yr = run_op("conv2d_packed", in, nall, &a, true);
                /* streamed stores (large outputs) give the same bits */
                double prev_stream = kn__conv_stream_bytes;
                kn__conv_stream_bytes = 0;
                kn_tensor *ys = run_op("conv2d_packed", in, nall, &a, false);
                kn__conv_stream_bytes = prev_stream;
                if (kt_tensor_close("stream", ys, y2, 0, 0)) KT_FAIL("case %zu: streamed", i);
                kn_attrs ca = {0};
                conv_attrs(&ca, c);
                kn_tensor *yc = run_op("conv2d", cin, nin, &ca, true);
                if (res) yc = kn_add(yc, res);
                if (relu) yc = kn_relu(yc);
                KT_NOTNULL(y1);
                KT_NOTNULL(yc);
                if (kt_tensor_close("threads", y2, y1, 0, 0))
                    KT_FAIL("case %zu: 1 vs 2 threads", i);
                if (kt_tensor_close("packed ref", y1, yr, 1e-6, 1e-6)) KT_FAIL("case %zu", i);
                if (kt_tensor_close("conv2d", y1, yc, 2e-4, 2e-4)) KT_FAIL("case %zu vs conv2d", i);
            }
    }
    kn_set_num_threads(prev);
    /* a packed weight of the wrong size, an input with the wrong channel count */
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){1, 4, 5, 5});
    kn_tensor *wp = kn_zeros(KN_F32, 1, (int64_t[]){100});
    kn_attrs a = {0};
    kn_attrs_set_ints(&a, "weight_shape", (int64_t[]){64, 4, 3, 3}, 4);
    kn_tensor *in[2] = {x, wp};
    KT_ERR(KN_ESHAPE, run_op("conv2d_packed", in, 2, &a, false), "does not hold");
    kn_attrs_set_ints(&a, "weight_shape", (int64_t[]){64, 3, 3, 3}, 4);
    KT_ERR(KN_ESHAPE, run_op("conv2d_packed", in, 2, &a, false), "channels");
    /* a residual of the wrong shape */
    int64_t size = kn__conv_packed_size(64, 4, 3, 3);
    kn_tensor *in3[3] = {x, kn_zeros(KN_F32, 1, &size),
                         kn_zeros(KN_F32, 4, (int64_t[]){1, 64, 3, 4})};
    kn_attrs_set_ints(&a, "weight_shape", (int64_t[]){64, 4, 3, 3}, 4);
    kn_attrs_set_int(&a, "residual", 1);
    KT_ERR(KN_ESHAPE, run_op("conv2d_packed", in3, 3, &a, false), "residual");
}

/* non-contiguous inputs give the same results as their contiguous copies */
static void test_conv2d_strided_inputs(void) {
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){2, 3, 6, 5});
    kn_tensor *w = kn_randn(KN_F32, 4, (int64_t[]){4, 3, 3, 3});
    kn_tensor *xt = kn_transpose(kn_contiguous(kn_transpose(x, 2, 3)), 2, 3);
    kn_tensor *wt =
        kn_permute(kn_contiguous(kn_permute(w, (int[]){1, 0, 2, 3})), (int[]){1, 0, 2, 3});
    kn_tensor *b = kn_squeeze(kn_slice(kn_randn(KN_F32, 2, (int64_t[]){4, 2}), 1, 0, 1, 1), 1);
    KT_TRUE(!kn_tensor_is_contiguous(xt) && !kn_tensor_is_contiguous(wt));
    KT_TRUE(!kn_tensor_is_contiguous(b));
    kn_conv_opts o = {.padding = {1, 1}};
    KT_CLOSE(kn_conv2d(xt, wt, b, &o), kn_conv2d(x, w, kn_contiguous(b), &o), 0, 0);
}

/* results do not depend on the thread count (images in parallel vs threaded GEMM, groups of 16
 * images per thread vs shared) */
static void test_conv2d_threads(void) {
    int prev = kn_get_num_threads();
    kn_tensor *x = kn_randn(KN_F32, 4, (int64_t[]){4, 16, 20, 20});
    kn_tensor *w = kn_randn(KN_F32, 4, (int64_t[]){16, 16, 3, 3});
    kn_tensor *x1 = kn_randn(KN_F32, 4, (int64_t[]){1, 16, 20, 20});
    /* batch-in-lanes kernels: 3 groups of 16 (shared out per group) and 4 (a group per thread) */
    kn_tensor *x48 = kn_randn(KN_F32, 4, (int64_t[]){48, 16, 9, 7});
    kn_tensor *x64 = kn_randn(KN_F32, 4, (int64_t[]){64, 16, 6, 6});
    kn_tensor *xs[4] = {x, x1, x48, x64};
    kn_tensor *r[2][12];
    kn_conv_opts o = {.padding = {1, 1}};
    for (int t = 0; t < 2; t++) {
        kn_set_num_threads(t + 1);
        for (int k = 0; k < 4; k++) {
            kn_tensor *xx = xs[k];
            kn_tensor *xl = kn_detach(xx), *wl = kn_detach(w);
            kn_tensor_set_requires_grad(xl, true);
            kn_tensor_set_requires_grad(wl, true);
            kn_tensor *y = kn_conv2d(xl, wl, NULL, &o);
            kn_tensor *g[2] = {0};
            kn_tensor *gy = kn_ones_like(y);
            KT_OK(kn_grad(&y, 1, &gy, (kn_tensor *[]){xl, wl}, 2, false, g));
            r[t][3 * k] = y;
            r[t][3 * k + 1] = g[0];
            r[t][3 * k + 2] = g[1];
        }
    }
    kn_set_num_threads(prev);
    for (int k = 0; k < 12; k++)
        KT_CLOSE(r[1][k], r[0][k], 0, 0);
}

/* ------------------------------------------------------------------ gradient checks */

typedef struct {
    kn_conv_opts o;
    int bias, perm, one_d, transpose;
    int64_t outpad[2];
} conv_gc;

static kn_tensor *f_conv(kn_tensor *const *in, void *u) {
    const conv_gc *c = u;
    kn_tensor *x = in[0];
    if (c->perm) x = kn_transpose(kn_transpose(x, 2, 3), 2, 3); /* a view of a view */
    if (c->perm == 2) x = kn_slice(x, 3, 0, KN_SLICE_END, 1);
    kn_tensor *b = c->bias ? in[2] : NULL;
    if (c->one_d) return kn_conv1d(x, in[1], b, &c->o);
    if (c->transpose) return kn_conv_transpose2d(x, in[1], b, &c->o, c->outpad);
    return kn_conv2d(x, in[1], b, &c->o);
}

static void test_conv2d_gradcheck(void) {
    struct {
        int64_t x[4], w[4];
        conv_gc c;
    } cases[] = {
        {{2, 2, 5, 4}, {3, 2, 3, 3}, {.o = {.padding = {1, 1}}, .bias = 1}},
        {{1, 2, 7, 6}, {2, 2, 3, 2}, {.o = {.stride = {2, 3}, .padding = {1, 0}}, .bias = 1}},
        {{1, 4, 6, 6}, {4, 2, 3, 3}, {.o = {.dilation = {2, 1}, .groups = 2}, .perm = 1}},
        {{2, 3, 5, 5}, {3, 1, 2, 2}, {.o = {.groups = 3, .same_padding = true}, .bias = 1}},
        {{1, 3, 4, 5}, {2, 3, 1, 1}, {.bias = 1, .perm = 2}},
        {{1, 1, 1, 1}, {1, 1, 1, 1}, {.o = {.padding = {1, 1}}, .bias = 1}},
        {{2, 2, 4, 4}, {2, 2, 4, 2}, {.o = {.same_padding = true, .dilation = {1, 2}}}},
    };
    char msg[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kn_tensor *in[3] = {leaf(4, cases[i].x), leaf(4, cases[i].w),
                            leaf(1, (int64_t[]){cases[i].w[0]})};
        kn_status st = kn_gradcheck(f_conv, &cases[i].c, in, cases[i].c.bias ? 3 : 2, 1e-6, 1e-7,
                                    1e-6, msg, sizeof msg);
        if (st != KN_OK) KT_FAIL("case %zu: %s", i, msg);
    }
}

static void test_conv1d_gradcheck(void) {
    struct {
        int64_t x[3], w[3];
        conv_gc c;
    } cases[] = {
        {{2, 3, 8}, {4, 3, 3}, {.o = {.stride = {2}, .padding = {1}}, .bias = 1, .one_d = 1}},
        {{1, 4, 7},
         {2, 2, 4},
         {.o = {.groups = 2, .same_padding = true, .dilation = {2}}, .one_d = 1}},
    };
    char msg[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kn_tensor *in[3] = {leaf(3, cases[i].x), leaf(3, cases[i].w),
                            leaf(1, (int64_t[]){cases[i].w[0]})};
        kn_status st = kn_gradcheck(f_conv, &cases[i].c, in, cases[i].c.bias ? 3 : 2, 1e-6, 1e-7,
                                    1e-6, msg, sizeof msg);
        if (st != KN_OK) KT_FAIL("case %zu: %s", i, msg);
    }
}

/* second order through conv2d_backward_input / conv2d_backward_weight */
static kn_tensor *f_conv_grad(kn_tensor *const *in, void *u) {
    const conv_gc *c = u;
    kn_tensor *y = kn_conv2d(in[0], in[1], NULL, &c->o);
    kn_tensor *l = kn_sum(kn_mul(y, y), NULL, 0, false);
    kn_tensor *g[2] = {0};
    if (kn_grad(&l, 1, NULL, in, 2, true, g) != KN_OK) return NULL;
    return kn_add(kn_sum(kn_mul(g[0], g[0]), NULL, 0, false),
                  kn_sum(kn_mul(g[1], kn_sin(g[1])), NULL, 0, false));
}

static void test_conv2d_double_backward(void) {
    conv_gc cs[2] = {{.o = {.stride = {2, 1}, .padding = {1, 1}, .groups = 2}},
                     {.o = {.stride = {2, 2}}}};
    int64_t ws[2][4] = {{4, 1, 3, 2}, {2, 2, 1, 1}};
    char msg[256];
    for (int i = 0; i < 2; i++) {
        kn_tensor *in[2] = {leaf(4, (int64_t[]){1, 2, 5, 4}), leaf(4, ws[i])};
        kn_status st = kn_gradcheck(f_conv_grad, &cs[i], in, 2, 1e-6, 1e-6, 1e-5, msg, sizeof msg);
        if (st != KN_OK) KT_FAIL("case %d: %s", i, msg);
    }
}

/* ------------------------------------------------------------------ conv_transpose2d */

static void test_conv_transpose2d(void) {
    kn_tensor *x = from(KN_F32, 4, (int64_t[]){1, 1, 2, 2}, (double[]){1, 2, 3, 4});
    kn_tensor *w = kn_ones(KN_F32, 4, (int64_t[]){1, 1, 2, 2});
    kn_tensor *y = kn_conv_transpose2d(x, w, NULL, NULL, NULL);
    double e[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
    KT_CLOSE(y, from(KN_F64, 4, (int64_t[]){1, 1, 3, 3}, e), 0, 0);
    kn_conv_opts s2 = {.stride = {2, 2}};
    kn_tensor *b = from(KN_F32, 1, (int64_t[]){1}, (double[]){0.5});
    kn_tensor *y2 = kn_conv_transpose2d(x, w, b, &s2, (int64_t[]){1, 0});
    KT_EQ_INT(5, kn_tensor_shape(y2)[2]);
    KT_EQ_INT(4, kn_tensor_shape(y2)[3]);
    double e2[20] = {1.5, 1.5, 2.5, 2.5, 1.5, 1.5, 2.5, 2.5, 3.5, 3.5,
                     4.5, 4.5, 3.5, 3.5, 4.5, 4.5, 0.5, 0.5, 0.5, 0.5};
    KT_CLOSE(y2, from(KN_F64, 4, (int64_t[]){1, 1, 5, 4}, e2), 0, 0);
    /* fast vs reference, and the adjoint identity <conv(a; w), x> = <a, conv_T(x; w)> */
    struct {
        int64_t x[4], w[4], s[2], p[4], d[2], g, op[2];
    } cases[] = {
        {{2, 4, 5, 4}, {4, 3, 3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 1, {1, 0}},
        {{1, 4, 3, 6}, {4, 1, 2, 3}, {1, 2}, {0, 1, 0, 1}, {2, 1}, 2, {0, 1}},
        {{3, 2, 4, 4}, {2, 2, 1, 1}, {1, 1}, {0, 0, 0, 0}, {1, 1}, 1, {0, 0}},
        {{1, 2, 3, 3}, {2, 2, 3, 3}, {1, 1}, {1, 1, 1, 1}, {3, 3}, 1, {2, 2}}, /* op < dilation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int d = 0; d < 2; d++) {
            kn_dtype dt = d ? KN_F64 : KN_F32;
            double tol = d ? 1e-11 : 1e-4;
            kn_attrs a = {0};
            kn_attrs_set_ints(&a, "stride", cases[i].s, 2);
            kn_attrs_set_ints(&a, "pads", cases[i].p, 4);
            kn_attrs_set_ints(&a, "dilation", cases[i].d, 2);
            kn_attrs_set_int(&a, "groups", cases[i].g);
            kn_attrs_set_ints(&a, "output_padding", cases[i].op, 2);
            kn_tensor *xx = kn_randn(dt, 4, cases[i].x), *ww = kn_randn(dt, 4, cases[i].w);
            kn_tensor *bb = kn_randn(dt, 1, (int64_t[]){cases[i].w[1] * cases[i].g});
            kn_tensor *in[3] = {xx, ww, bb};
            kn_tensor *yf = run_op("conv_transpose2d", in, 3, &a, false);
            kn_tensor *yr = run_op("conv_transpose2d", in, 3, &a, true);
            KT_NOTNULL(yf);
            KT_CLOSE(yf, yr, tol, tol);
            kn_tensor *y0 = run_op("conv_transpose2d", in, 2, &a, false);
            kn_tensor *q = kn_randn(dt, 4, kn_tensor_shape(y0));
            kn_tensor *cin[2] = {q, ww};
            kn_tensor *cq = run_op("conv2d", cin, 2, &a, true); /* may be larger (op>=stride) */
            cq = kn_slice(kn_slice(cq, 2, 0, cases[i].x[2], 1), 3, 0, cases[i].x[3], 1);
            double l0 = dot(y0, q), l1 = dot(xx, cq);
            KT_NEAR(l0, l1, 1e-3 * (1 + fabs(l0)));
        }
    }
    /* gradient checks */
    struct {
        int64_t x[4], w[4];
        conv_gc c;
    } gc[] = {
        {{1, 2, 3, 3},
         {2, 3, 3, 3},
         {.o = {.stride = {2, 2}, .padding = {1, 1}}, .bias = 1, .transpose = 1, .outpad = {1, 1}}},
        {{2, 4, 3, 2},
         {4, 1, 2, 2},
         {.o = {.groups = 2, .dilation = {1, 2}}, .transpose = 1, .perm = 1}},
        {{1, 1, 2, 2},
         {1, 1, 2, 2},
         {.o = {.dilation = {2, 2}, .padding = {1, 1}},
          .transpose = 1,
          .outpad = {1, 1},
          .bias = 1}},
    };
    char msg[256];
    for (size_t i = 0; i < sizeof gc / sizeof *gc; i++) {
        kn_tensor *in[3] = {leaf(4, gc[i].x), leaf(4, gc[i].w),
                            leaf(1, (int64_t[]){gc[i].w[1] * (gc[i].c.o.groups ? 2 : 1)})};
        kn_status st = kn_gradcheck(f_conv, &gc[i].c, in, gc[i].c.bias ? 3 : 2, 1e-6, 1e-7, 1e-6,
                                    msg, sizeof msg);
        if (st != KN_OK) KT_FAIL("gradcheck case %zu: %s", i, msg);
    }
}

/* ------------------------------------------------------------------ conv errors */

static void test_conv_errors(void) {
    kn_tensor *x = kn_ones(KN_F32, 4, (int64_t[]){1, 3, 5, 5});
    kn_tensor *w = kn_ones(KN_F32, 4, (int64_t[]){2, 2, 3, 3});
    KT_ERR(KN_ESHAPE, kn_conv2d(x, w, NULL, NULL),
           "conv2d: input (1, 3, 5, 5) has 3 channels but weight (2, 2, 3, 3) with groups 1 "
           "expects 2");
    KT_ERR(KN_ESHAPE, kn_conv2d(kn_ones(KN_F32, 3, (int64_t[]){3, 5, 5}), w, NULL, NULL),
           "conv2d: input (3, 5, 5) must be 4-D");
    kn_tensor *w3 = kn_ones(KN_F32, 4, (int64_t[]){2, 3, 7, 7});
    KT_ERR(KN_ESHAPE, kn_conv2d(x, w3, NULL, NULL), "smaller than the dilated kernel (7, 7)");
    kn_conv_opts s2 = {.stride = {2, 2}, .same_padding = true};
    KT_ERR(KN_EINVAL, kn_conv2d(x, kn_ones(KN_F32, 4, (int64_t[]){2, 3, 3, 3}), NULL, &s2),
           "padding='same' is not supported for strided");
    kn_conv_opts g2 = {.groups = 2};
    KT_ERR(KN_ESHAPE,
           kn_conv2d(kn_ones(KN_F32, 4, (int64_t[]){1, 4, 5, 5}),
                     kn_ones(KN_F32, 4, (int64_t[]){3, 2, 3, 3}), NULL, &g2),
           "not divisible by groups 2");
    KT_ERR(KN_ESHAPE,
           kn_conv2d(x, kn_ones(KN_F32, 4, (int64_t[]){2, 3, 3, 3}),
                     kn_ones(KN_F32, 1, (int64_t[]){3}), NULL),
           "conv2d: bias (3,) must be (2,)");
    kn_conv_opts neg = {.padding = {-1, 0}};
    KT_ERR(KN_EINVAL, kn_conv2d(x, kn_ones(KN_F32, 4, (int64_t[]){2, 3, 3, 3}), NULL, &neg),
           "conv2d: pads");
    KT_ERR(KN_EDTYPE, kn_conv2d(x, kn_ones(KN_F64, 4, (int64_t[]){2, 3, 3, 3}), NULL, NULL),
           "conv2d");
    KT_ERR(KN_EDTYPE,
           kn_conv2d(kn_ones(KN_I32, 4, (int64_t[]){1, 3, 5, 5}),
                     kn_ones(KN_I32, 4, (int64_t[]){2, 3, 3, 3}), NULL, NULL),
           "conv2d: dtype int32 is not supported");
    KT_ERR(KN_ESHAPE, kn_conv1d(x, w, NULL, NULL), "conv1d: input (1, 3, 5, 5)");
    KT_ERR(KN_EINVAL,
           kn_conv_transpose2d(x, kn_ones(KN_F32, 4, (int64_t[]){3, 2, 3, 3}), NULL, NULL,
                               (int64_t[]){1, 0}),
           "output_padding (1, 0) must be smaller than either stride");
    KT_ERR(KN_ESHAPE, kn_conv_transpose2d(x, w, NULL, NULL, NULL),
           "conv_transpose2d: input (1, 3, 5, 5) has 3 channels");
    kn_attrs a = {0};
    kn_attrs_set_int(&a, "groups", 0);
    kn_tensor *out[1];
    kn_clear_error();
    KT_TRUE(kn_op_call("conv2d", (kn_tensor *[]){x, w3}, 2, &a, out, 1) == KN_EINVAL);
    KT_TRUE(strstr(kn_last_error(), "conv2d: groups 0") != NULL);
    kn_attrs b = {0};
    KT_TRUE(kn_op_call("conv2d_backward_input", (kn_tensor *[]){x, w}, 2, &b, out, 1) < 0);
    KT_TRUE(strstr(kn_last_error(), "input_size") != NULL);
}

/* ------------------------------------------------------------------ max pool */

static void test_max_pool_values(void) {
    double xv[16] = {1, 5, 2, 0, 3, 4, 8, 7, -1, -2, 6, 6, -3, -4, 6, 9};
    kn_tensor *x = from(KN_F32, 4, (int64_t[]){1, 1, 4, 4}, xv);
    kn_pool_opts o = {.kernel = {2, 2}};
    kn_tensor *idx = NULL;
    kn_tensor *y = kn_max_pool2d(x, &o, &idx);
    KT_CLOSE(y, from(KN_F64, 4, (int64_t[]){1, 1, 2, 2}, (double[]){5, 8, -1, 9}), 0, 0);
    KT_NOTNULL(idx);
    KT_EQ_INT(KN_I64, kn_tensor_dtype(idx));
    KT_CLOSE(idx, from(KN_F64, 4, (int64_t[]){1, 1, 2, 2}, (double[]){1, 6, 8, 15}), 0, 0);
    /* ties: the first maximum in scan order wins (6 at [2][2], not [2][3]/[3][2]) */
    kn_pool_opts o3 = {.kernel = {2, 2}, .stride = {1, 1}};
    kn_tensor *i3 = NULL;
    kn_tensor *y3 = kn_max_pool2d(x, &o3, &i3);
    KT_NEAR(6, kn_tensor_get(y3, (int64_t[]){0, 0, 2, 1}), 0);
    KT_EQ_INT(10, kn_tensor_get(i3, (int64_t[]){0, 0, 2, 1}));
    /* padding and ceil_mode: 4x4, k3 s2 p1 -> 2x2 (3x3 with ceil); 5x5 k2 s2 ceil -> 3x3 */
    kn_pool_opts op = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
    KT_CLOSE(kn_max_pool2d(x, &op, NULL),
             from(KN_F64, 4, (int64_t[]){1, 1, 2, 2}, (double[]){5, 8, 4, 9}), 0, 0);
    op.ceil_mode = true; /* (4 + 2 - 3 + 1) / 2 + 1 = 3: the last window starts on row 3 */
    KT_EQ_INT(3, kn_tensor_shape(kn_max_pool2d(x, &op, NULL))[2]);
    kn_tensor *x5 = kn_randn(KN_F32, 4, (int64_t[]){1, 1, 5, 5});
    kn_pool_opts oc = {.kernel = {2, 2}, .ceil_mode = true};
    kn_tensor *y5 = kn_max_pool2d(x5, &oc, NULL);
    KT_EQ_INT(3, kn_tensor_shape(y5)[2]);
    KT_NEAR(kn_tensor_get(x5, (int64_t[]){0, 0, 4, 4}), kn_tensor_get(y5, (int64_t[]){0, 0, 2, 2}),
            0);
    /* NaN propagates */
    double nv[4] = {1, NAN, 3, 2};
    kn_tensor *yn = kn_max_pool2d(from(KN_F32, 4, (int64_t[]){1, 1, 2, 2}, nv), &o, NULL);
    KT_TRUE(isnan(kn_item(yn)));
    /* 3-D input (C, H, W) */
    KT_EQ_INT(3, kn_tensor_ndim(kn_max_pool2d(kn_reshape(x, 3, (int64_t[]){1, 4, 4}), &o, NULL)));
}

/* fast vs reference, bitwise (values and indices), over a grid incl. dilation, padding, ceil */
static void test_max_pool_fast_vs_ref(void) {
    struct {
        int64_t H, W, k[2], s[2], p[2], d[2];
        bool ceil;
    } cases[] = {
        {8, 9, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
        {9, 9, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true}, /* 2x2 but a window sticks out */
        /* 2x2 / stride 2 on short rows: the AVX-512 row-pair kernel */
        {8, 8, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
        {2, 2, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
        {6, 14, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
        {4, 12, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
        {11, 13, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
        {11, 13, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true},
        {10, 10, {3, 2}, {1, 3}, {1, 0}, {2, 2}, true},
        {7, 20, {2, 5}, {3, 1}, {1, 2}, {1, 1}, false},
        {6, 6, {1, 1}, {1, 1}, {0, 0}, {1, 1}, false},
        {112, 112, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
        /* stride 2, values only: the AVX-512 interior kernel (masked tails, clipped rows) */
        {9, 41, {3, 3}, {2, 2}, {0, 0}, {1, 1}, false},
        {12, 37, {2, 5}, {2, 2}, {1, 2}, {2, 1}, true},
        {5, 70, {3, 2}, {2, 2}, {1, 1}, {1, 1}, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int d = 0; d < 2; d++) {
            kn_dtype dt = d ? KN_F64 : KN_F32;
            kn_tensor *x = kn_randn(dt, 4, (int64_t[]){2, 3, cases[i].H, cases[i].W});
            /* sprinkle ties and NaNs */
            if (dt == KN_F32) {
                float *p = kn_tensor_data(x);
                int64_t n = kn_tensor_numel(x);
                for (int64_t k = 0; k + 1 < n; k += 7)
                    p[k] = p[k + 1];
                p[5] = NAN;
                p[kn_tensor_numel(x) - 3] = NAN;
            }
            kn_attrs a = {0};
            kn_attrs_set_ints(&a, "kernel", cases[i].k, 2);
            kn_attrs_set_ints(&a, "stride", cases[i].s, 2);
            kn_attrs_set_ints(&a, "padding", cases[i].p, 2);
            kn_attrs_set_ints(&a, "dilation", cases[i].d, 2);
            kn_attrs_set_int(&a, "ceil_mode", cases[i].ceil);
            kn_attrs_set_int(&a, "indices", 1);
            kn_tensor *of[2] = {0}, *or_[2] = {0};
            bool prev = kn__force_ref(false);
            int n1 = kn_op_call("max_pool2d", &x, 1, &a, of, 2);
            kn__force_ref(true);
            int n2 = kn_op_call("max_pool2d", &x, 1, &a, or_, 2);
            kn__force_ref(prev);
            KT_EQ_INT(2, n1);
            KT_EQ_INT(2, n2);
            KT_CLOSE(of[0], or_[0], 0, 0);
            KT_CLOSE(of[1], or_[1], 0, 0);
            /* values-only fast path agrees too */
            kn_attrs_set_int(&a, "indices", 0);
            kn_tensor *v = run_op("max_pool2d", &x, 1, &a, false);
            KT_CLOSE(v, or_[0], 0, 0);
        }
    }
}

/* max_pool2d_backward, fast vs reference, compared as bytes (signed zeros included) on the
 * 2x2/stride-2 shapes the dense AVX-512 backward takes, with ties, NaNs and -0 gradients */
static void test_max_pool_backward_fast_vs_ref(void) {
    int64_t shapes[][4] = {
        {2, 3, 8, 8}, {2, 3, 24, 24}, {1, 2, 2, 2}, {1, 1, 6, 14}, {3, 2, 4, 32}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        kn_scope sc = kn_scope_begin();
        kn_tensor *x = kn_randn(KN_F32, 4, shapes[i]);
        float *p = kn_tensor_data(x);
        int64_t n = kn_tensor_numel(x);
        for (int64_t k = 0; k + 1 < n; k += 5)
            p[k] = p[k + 1];
        p[n / 2] = NAN;
        if (n > 7) p[7] = NAN, p[6] = NAN;
        int64_t os[4] = {shapes[i][0], shapes[i][1], shapes[i][2] / 2, shapes[i][3] / 2};
        kn_tensor *gy = kn_randn(KN_F32, 4, os);
        float *g = kn_tensor_data(gy);
        for (int64_t k = 0; k < kn_tensor_numel(gy); k += 3)
            g[k] = -0.0f;
        kn_attrs a = {0};
        kn_attrs_set_ints(&a, "kernel", (int64_t[]){2, 2}, 2);
        kn_attrs_set_ints(&a, "stride", (int64_t[]){2, 2}, 2);
        kn_attrs_set_ints(&a, "padding", (int64_t[]){0, 0}, 2);
        kn_attrs_set_ints(&a, "dilation", (int64_t[]){1, 1}, 2);
        kn_tensor *in[2] = {gy, x}, *f = NULL, *fwd[2] = {0};
        KT_EQ_INT(1, kn_op_call("max_pool2d_backward", in, 2, &a, &f, 1));
        /* reference: the reference forward's indices, scattered into zeros by hand */
        kn_attrs_set_int(&a, "indices", 1);
        bool prev = kn__force_ref(true);
        KT_EQ_INT(2, kn_op_call("max_pool2d", &x, 1, &a, fwd, 2));
        kn__force_ref(prev);
        const int64_t *ix = kn_tensor_data(fwd[1]);
        int64_t on = kn_tensor_numel(gy), ohw = os[2] * os[3], hw = shapes[i][2] * shapes[i][3];
        float *want = calloc((size_t)n, sizeof(float));
        for (int64_t o = 0; o < on; o++)
            want[(o / ohw) * hw + ix[o]] += g[o];
        int bad = memcmp(kn_tensor_data(f), want, sizeof(float) * (size_t)n);
        /* with relu_mask (the graph compiler's fusion): relu's backward applied after, with x as
         * relu's output: 0 where x <= 0 or NaN */
        kn_tensor *xr = kn_relu(x), *in2[2] = {gy, xr}, *f2 = NULL, *plain = NULL, *rb = NULL;
        kn_attrs_set_int(&a, "indices", 0);
        kn_attrs_set_int(&a, "relu_mask", 1);
        KT_EQ_INT(1, kn_op_call("max_pool2d_backward", in2, 2, &a, &f2, 1));
        kn_attrs_set_int(&a, "relu_mask", 0);
        KT_EQ_INT(1, kn_op_call("max_pool2d_backward", in2, 2, &a, &plain, 1));
        kn_tensor *in3[2] = {plain, xr};
        KT_EQ_INT(1, kn_op_call("relu_backward", in3, 2, NULL, &rb, 1));
        if (memcmp(kn_tensor_data(f2), kn_tensor_data(rb), sizeof(float) * (size_t)n)) bad |= 2;
        free(want);
        if (bad) KT_FAIL("shape %zu: fast backward differs from the reference (%d)", i, bad);
        kn_scope_end(sc);
    }
}

typedef struct {
    kn_pool_opts o;
    int kind; /* 0 max, 1 avg, 2 adaptive, 3 global */
    int64_t oh, ow;
    int perm;
} pool_gc;

static kn_tensor *f_pool(kn_tensor *const *in, void *u) {
    const pool_gc *p = u;
    kn_tensor *x = p->perm ? kn_transpose(kn_transpose(in[0], 0, 1), 0, 1) : in[0];
    if (p->perm) x = kn_slice(x, 3, 0, KN_SLICE_END, 1);
    switch (p->kind) {
    case 0: return kn_max_pool2d(x, &p->o, NULL);
    case 1: return kn_avg_pool2d(x, &p->o);
    case 2: return kn_adaptive_avg_pool2d(x, p->oh, p->ow);
    default: return kn_global_avg_pool2d(x);
    }
}

static void test_pool_gradcheck(void) {
    struct {
        int64_t x[4];
        pool_gc p;
    } cases[] = {
        {{2, 2, 6, 5}, {.o = {.kernel = {2, 2}}, .kind = 0}},
        {{1, 2, 7, 7},
         {.o = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true},
          .kind = 0,
          .perm = 1}},
        {{1, 1, 8, 7}, {.o = {.kernel = {3, 2}, .stride = {2, 1}, .dilation = {2, 2}}, .kind = 0}},
        {{2, 2, 6, 5}, {.o = {.kernel = {2, 2}, .count_include_pad = true}, .kind = 1}},
        {{1, 2, 7, 6},
         {.o = {.kernel = {3, 3},
                .stride = {2, 2},
                .padding = {1, 1},
                .ceil_mode = true,
                .count_include_pad = false},
          .kind = 1,
          .perm = 1}},
        {{1, 1, 5, 5},
         {.o = {.kernel = {2, 4},
                .stride = {3, 1},
                .padding = {1, 2},
                .count_include_pad = true,
                .ceil_mode = true},
          .kind = 1}},
        {{2, 2, 7, 5}, {.kind = 2, .oh = 3, .ow = 4}},
        {{1, 3, 4, 4}, {.kind = 2, .oh = 1, .ow = 1, .perm = 1}},
        {{2, 3, 4, 5}, {.kind = 3}},
    };
    char msg[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kn_tensor *in[1] = {leaf(4, cases[i].x)};
        kn_status st = kn_gradcheck(f_pool, &cases[i].p, in, 1, 1e-6, 1e-7, 1e-6, msg, sizeof msg);
        if (st != KN_OK) KT_FAIL("case %zu: %s", i, msg);
    }
}

/* second order: pool backward ops are differentiable in grad_output */
static kn_tensor *f_pool_grad(kn_tensor *const *in, void *u) {
    const pool_gc *p = u;
    kn_tensor *y = f_pool(in, u);
    kn_tensor *l = kn_sum(kn_mul(kn_mul(y, y), y), NULL, 0, false);
    kn_tensor *g[1] = {0};
    (void)p;
    if (kn_grad(&l, 1, NULL, in, 1, true, g) != KN_OK) return NULL;
    return g[0];
}

static void test_pool_double_backward(void) {
    pool_gc cs[] = {
        {.o = {.kernel = {2, 2}}, .kind = 0},
        {.o = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .count_include_pad = false},
         .kind = 1},
        {.kind = 2, .oh = 2, .ow = 3},
        {.kind = 3}};
    char msg[256];
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        kn_tensor *in[1] = {leaf(4, (int64_t[]){1, 2, 5, 6})};
        kn_status st = kn_gradcheck(f_pool_grad, &cs[i], in, 1, 1e-6, 1e-6, 1e-5, msg, sizeof msg);
        if (st != KN_OK) KT_FAIL("case %zu: %s", i, msg);
    }
}

/* ------------------------------------------------------------------ average pools */

static void test_avg_pool_values(void) {
    double xv[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    kn_tensor *x = from(KN_F32, 4, (int64_t[]){1, 1, 4, 4}, xv);
    kn_pool_opts o = {.kernel = {2, 2}, .count_include_pad = true};
    KT_CLOSE(kn_avg_pool2d(x, &o),
             from(KN_F64, 4, (int64_t[]){1, 1, 2, 2}, (double[]){3.5, 5.5, 11.5, 13.5}), 0, 0);
    /* padding 1, k3 s2: corner window has 4 real values of 9 slots */
    kn_pool_opts op = {
        .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .count_include_pad = true};
    kn_tensor *y = kn_avg_pool2d(x, &op);
    KT_NEAR((1 + 2 + 5 + 6) / 9.0, kn_tensor_get(y, (int64_t[]){0, 0, 0, 0}), 1e-6);
    op.count_include_pad = false;
    y = kn_avg_pool2d(x, &op);
    KT_NEAR((1 + 2 + 5 + 6) / 4.0, kn_tensor_get(y, (int64_t[]){0, 0, 0, 0}), 1e-6);
    KT_NEAR((6 + 7 + 8 + 10 + 11 + 12 + 14 + 15 + 16) / 9.0,
            kn_tensor_get(y, (int64_t[]){0, 0, 1, 1}), 1e-5);
    /* ceil_mode: 5x5 k2 s2 -> 3x3; the last window holds only x[4][4] and its divisor is 1
     * (the window is clipped to the input, it does not reach into padding) */
    kn_tensor *x5 = kn_reshape(kn_arange(0, 25, 1, KN_F64), 4, (int64_t[]){1, 1, 5, 5});
    kn_pool_opts oc = {.kernel = {2, 2}, .ceil_mode = true, .count_include_pad = true};
    kn_tensor *y5 = kn_avg_pool2d(x5, &oc);
    KT_EQ_INT(3, kn_tensor_shape(y5)[3]);
    KT_NEAR(24, kn_tensor_get(y5, (int64_t[]){0, 0, 2, 2}), 1e-12);
    KT_NEAR((20 + 21) / 2.0, kn_tensor_get(y5, (int64_t[]){0, 0, 2, 0}), 1e-12);
    /* ceil_mode with padding: count_include_pad counts the padding, not the overhang */
    kn_pool_opts ocp = {.kernel = {3, 3},
                        .stride = {2, 2},
                        .padding = {1, 1},
                        .ceil_mode = true,
                        .count_include_pad = true};
    kn_tensor *x6 = kn_ones(KN_F64, 4, (int64_t[]){1, 1, 6, 6});
    kn_tensor *y6 = kn_avg_pool2d(x6, &ocp);
    KT_EQ_INT(4, kn_tensor_shape(y6)[2]);
    /* last window starts at 5: hend = min(5 + 3, H + pad = 7) -> divisor (7-5)*(7-5) = 4 for
     * one real value; window (0, 3): divisor 3 * 2 = 6 for two real values */
    KT_NEAR(0.25, kn_tensor_get(y6, (int64_t[]){0, 0, 3, 3}), 1e-12);
    KT_NEAR(2.0 / 6.0, kn_tensor_get(y6, (int64_t[]){0, 0, 0, 3}), 1e-12);
}

static void test_adaptive_global_values(void) {
    kn_tensor *x = kn_reshape(kn_arange(0, 35, 1, KN_F64), 4, (int64_t[]){1, 1, 5, 7});
    kn_tensor *y = kn_adaptive_avg_pool2d(x, 3, 4);
    KT_EQ_INT(3, kn_tensor_shape(y)[2]);
    /* window rows floor(i*5/3)..ceil((i+1)*5/3): [0,2) [1,4) [3,5); cols over 7 -> 4:
     * [0,2) [1,4) [3,6) [5,7) */
    int64_t r0[3] = {0, 1, 3}, r1[3] = {2, 4, 5}, c0[4] = {0, 1, 3, 5}, c1[4] = {2, 4, 6, 7};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int64_t a = r0[i]; a < r1[i]; a++)
                for (int64_t b = c0[j]; b < c1[j]; b++)
                    s += a * 7 + b;
            s /= (double)((r1[i] - r0[i]) * (c1[j] - c0[j]));
            KT_NEAR(s, kn_tensor_get(y, (int64_t[]){0, 0, i, j}), 1e-12);
        }
    /* adaptive to the input size is the identity; global = mean over H, W */
    KT_CLOSE(kn_adaptive_avg_pool2d(x, 5, 7), x, 0, 0);
    kn_tensor *r = kn_randn(KN_F32, 4, (int64_t[]){2, 3, 7, 7});
    kn_tensor *g = kn_global_avg_pool2d(r);
    KT_EQ_INT(4, kn_tensor_ndim(g));
    KT_EQ_INT(1, kn_tensor_shape(g)[3]);
    KT_CLOSE(g, kn_mean(r, (int[]){2, 3}, 2, true), 1e-6, 1e-6);
    KT_CLOSE(kn_adaptive_avg_pool2d(r, 1, 1), g, 1e-6, 1e-6);
}

static void test_pool_errors(void) {
    kn_tensor *x = kn_ones(KN_F32, 4, (int64_t[]){1, 1, 4, 4});
    kn_pool_opts big = {.kernel = {5, 5}};
    KT_ERR(KN_ESHAPE, kn_max_pool2d(x, &big, NULL), "max_pool2d: input (1, 1, 4, 4) is too small");
    kn_pool_opts pad = {.kernel = {2, 2}, .padding = {2, 0}};
    KT_ERR(KN_EINVAL, kn_max_pool2d(x, &pad, NULL), "should be at most half of kernel");
    KT_ERR(KN_EINVAL, kn_avg_pool2d(x, &pad), "avg_pool2d: padding (2, 0)");
    kn_pool_opts zero = {.kernel = {0, 2}};
    KT_ERR(KN_EINVAL, kn_max_pool2d(x, &zero, NULL), "max_pool2d: kernel");
    KT_ERR(KN_EINVAL, kn_avg_pool2d(x, NULL), "avg_pool2d: options are required");
    kn_pool_opts o = {.kernel = {2, 2}};
    KT_ERR(KN_ESHAPE, kn_max_pool2d(kn_ones(KN_F32, 2, (int64_t[]){4, 4}), &o, NULL),
           "max_pool2d: input (4, 4) must be");
    KT_ERR(KN_EDTYPE, kn_max_pool2d(kn_ones(KN_I64, 4, (int64_t[]){1, 1, 4, 4}), &o, NULL),
           "max_pool2d: dtype int64 is not supported");
    KT_ERR(KN_EINVAL, kn_adaptive_avg_pool2d(x, 0, 2), "adaptive_avg_pool2d: output size (0, 2)");
    KT_ERR(KN_ESHAPE, kn_global_avg_pool2d(kn_ones(KN_F32, 1, (int64_t[]){4})),
           "global_avg_pool2d: input (4,)");
    kn_tensor *idx = (kn_tensor *)1;
    KT_TRUE(kn_max_pool2d(NULL, &o, &idx) == NULL && idx == NULL);
}

static void test_no_leaks(void) {
    KT_EQ_INT(0, kn_live_tensors());
}

int main(void) {
    KT_RUN(test_max_pool_backward_fast_vs_ref);
    RUN(test_conv2d_packed);
    kn_manual_seed(42);
    RUN(test_conv2d_values);
    RUN(test_conv1d_values);
    RUN(test_conv2d_fast_vs_ref);
    RUN(test_conv2d_strided_inputs);
    RUN(test_conv2d_threads);
    RUN(test_conv2d_gradcheck);
    RUN(test_conv1d_gradcheck);
    RUN(test_conv2d_double_backward);
    RUN(test_conv_transpose2d);
    RUN(test_conv_errors);
    RUN(test_max_pool_values);
    RUN(test_max_pool_fast_vs_ref);
    RUN(test_pool_gradcheck);
    RUN(test_pool_double_backward);
    RUN(test_avg_pool_values);
    RUN(test_adaptive_global_values);
    RUN(test_pool_errors);
    KT_RUN(test_no_leaks);
    return kt_finish();
}
