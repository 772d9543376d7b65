/*
 * ops_nn.c - ONNX neural-network ops onto kiln's: Conv and ConvTranspose (1-D and 2-D, auto_pad,
 * asymmetric pads), MaxPool (with ONNX's flat Indices) / AveragePool / LpPool-free pools,
 * global pools, Gemm, MatMul, Softmax / LogSoftmax / Hardmax (the 2-D coercion before opset 13),
 * BatchNormalization (inference), InstanceNormalization, LayerNormalization, LRN, Dropout
 * (inference).
 *
 * 1-D convolutions and pools run as 2-D ones on (N, C, 1, L). Padding kiln's kernels cannot
 * express (asymmetric, or more than half the kernel for pools) is applied with an explicit pad
 * first: -inf for max pooling; for average pooling that excludes the padding, the sum of the
 * zero-padded input is divided by the count of real elements (the same pool over a padded mask).
 */
#include <math.h>
#include <string.h>

#include "onnx/onnx_impl.h"

/* ---- spatial attributes ---- */

typedef struct spatial {
    int nd; /* spatial dims: 1, 2 or 3 */
    int64_t k[3], s[3], d[3], pb[3], pe[3];
} spatial;

/* Reads kernel (from kshape when the attribute is absent), strides, dilations, pads and (when
 * auto is set) auto_pad for an input of spatial size in[0..nd). */
static kn_status read_spatial(const kn_ox *x, int nd, const int64_t *in, const int64_t *kshape,
                              bool autopad, spatial *sp) {
    int64_t v[8];
    int n;
    sp->nd = nd;
    if ((n = kn__ox_ints(x, "kernel_shape", v, 8)) >= 0) {
        if (n != nd) return kn__err(KN_EINVAL, "kernel_shape has %d values for %d dims", n, nd);
        memcpy(sp->k, v, sizeof(int64_t) * (size_t)nd);
    } else if (kshape) {
        memcpy(sp->k, kshape, sizeof(int64_t) * (size_t)nd);
    } else {
        return kn__err(KN_EINVAL, "kernel_shape is required");
    }
    for (int i = 0; i < nd; i++)
        sp->s[i] = sp->d[i] = 1, sp->pb[i] = sp->pe[i] = 0;
    if ((n = kn__ox_ints(x, "strides", v, 8)) >= 0) {
        if (n != nd) return kn__err(KN_EINVAL, "strides has %d values for %d dims", n, nd);
        memcpy(sp->s, v, sizeof(int64_t) * (size_t)nd);
    }
    if ((n = kn__ox_ints(x, "dilations", v, 8)) >= 0) {
        if (n != nd) return kn__err(KN_EINVAL, "dilations has %d values for %d dims", n, nd);
        memcpy(sp->d, v, sizeof(int64_t) * (size_t)nd);
    }
    if ((n = kn__ox_ints(x, "pads", v, 8)) >= 0) {
        if (n != 2 * nd) return kn__err(KN_EINVAL, "pads has %d values for %d dims", n, nd);
        for (int i = 0; i < nd; i++)
            sp->pb[i] = v[i], sp->pe[i] = v[nd + i];
    }
    const int64_t big = (int64_t)1 << 31; /* kiln's kernels take int-sized geometry */
    for (int i = 0; i < nd; i++)
        if (sp->k[i] < 1 || sp->s[i] < 1 || sp->d[i] < 1 || sp->pb[i] < 0 || sp->pe[i] < 0 ||
            sp->k[i] > big || sp->s[i] > big || sp->d[i] > big || sp->pb[i] > big ||
            sp->pe[i] > big)
            return kn__err(KN_EINVAL,
                           "kernel, strides and dilations must be in [1, 2^31], pads in [0, 2^31]");
    char ap[32];
    const char *mode = autopad ? kn__ox_str(x, "auto_pad", "NOTSET", ap, sizeof ap) : "NOTSET";
    bool upper = !strcmp(mode, "SAME_UPPER"), lower = !strcmp(mode, "SAME_LOWER");
    if (upper || lower) {
        for (int i = 0; i < nd; i++) {
            int64_t out = (in[i] + sp->s[i] - 1) / sp->s[i];
            int64_t total = (out - 1) * sp->s[i] + (sp->k[i] - 1) * sp->d[i] + 1 - in[i];
            if (total < 0) total = 0;
            sp->pb[i] = upper ? total / 2 : total - total / 2;
            sp->pe[i] = total - sp->pb[i];
        }
    } else if (!strcmp(mode, "VALID")) {
        for (int i = 0; i < nd; i++)
            sp->pb[i] = sp->pe[i] = 0;
    } else if (strcmp(mode, "NOTSET")) {
        return kn__err(KN_EINVAL,
                       "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, "
                       "VALID",
                       mode);
    }
    return KN_OK;
}

/* 1-D -> 2-D: params for (1, L) */
static void as_2d(spatial *sp) {
    if (sp->nd == 2) return;
    sp->k[1] = sp->k[0], sp->s[1] = sp->s[0], sp->d[1] = sp->d[0];
    sp->pb[1] = sp->pb[0], sp->pe[1] = sp->pe[0];
    sp->k[0] = sp->s[0] = sp->d[0] = 1;
    sp->pb[0] = sp->pe[0] = 0;
    sp->nd = 2;
}

static bool symmetric(const spatial *sp) {
    return sp->pb[0] == sp->pe[0] && sp->pb[1] == sp->pe[1];
}

/* zero / value padding of the last two dims by sp's pads */
static kn_tensor *pad_hw(kn_tensor *x, const spatial *sp, double value) {
    int64_t p[4] = {sp->pb[1], sp->pe[1], sp->pb[0], sp->pe[0]};
    return kn_pad(x, p, 4, KN_PAD_CONSTANT, value);
}

/* rank of spatial dims of input 0 (1, 2 or 3), or an error naming the rank */
static int spatial_rank(const kn_tensor *t, const char *what) {
    int r = kn_tensor_ndim(t) - 2;
    if (r < 1 || r > 3)
        return kn__err(KN_EUNSUPPORTED, "%s of a %d-D input (kiln supports 1-D, 2-D and 3-D)", what,
                       kn_tensor_ndim(t));
    return r;
}

/* ---- 3-D as 2-D: the depth dim is folded into the batch, one 2-D op per kernel depth tap ----
 * x (N, C, D, H, W) already padded in depth; tap kd reads depths kd*dd + od*sd for every output
 * depth od: a strided slice, moved next to N and merged with it. */
static kn_tensor *depth_tap(kn_tensor *x, int64_t kd, const spatial *sp, int64_t od) {
    const int64_t *s = kn_tensor_shape(x);
    int64_t start = kd * sp->d[0];
    kn_tensor *t = kn_slice(x, 2, start, start + (od - 1) * sp->s[0] + 1, sp->s[0]);
    int perm[5] = {0, 2, 1, 3, 4};
    int64_t s4[4] = {s[0] * od, s[1], s[3], s[4]};
    return kn_reshape(kn_permute(t, perm), 4, s4);
}

/* (N*OD, M, OH, OW) -> (N, M, OD, OH, OW) */
static kn_tensor *undo_tap(kn_tensor *y, int64_t n, int64_t od) {
    if (!y) return NULL;
    const int64_t *s = kn_tensor_shape(y);
    int64_t s5[5] = {n, od, s[1], s[2], s[3]};
    int perm[5] = {0, 2, 1, 3, 4};
    return kn_contiguous(kn_permute(kn_reshape(y, 5, s5), perm));
}

/* the 2-D params of a 3-D spatial (dims 1 and 2) */
static spatial hw_of(const spatial *sp) {
    spatial h = {.nd = 2};
    for (int i = 0; i < 2; i++)
        h.k[i] = sp->k[i + 1], h.s[i] = sp->s[i + 1], h.d[i] = sp->d[i + 1],
        h.pb[i] = sp->pb[i + 1], h.pe[i] = sp->pe[i + 1];
    return h;
}

static kn_tensor *pad_dhw(kn_tensor *x, const spatial *sp, double value) {
    int64_t p[6] = {sp->pb[2], sp->pe[2], sp->pb[1], sp->pe[1], sp->pb[0], sp->pe[0]};
    return kn_pad(x, p, 6, KN_PAD_CONSTANT, value);
}

static kn_tensor *conv3d(kn_tensor *x, kn_tensor *w, kn_tensor *b, const spatial *sp,
                         int64_t groups) {
    x = pad_dhw(x, sp, 0.0);
    if (!x) return NULL;
    const int64_t *s = kn_tensor_shape(x);
    int64_t kd = kn_tensor_shape(w)[2], od = (s[2] - (kd - 1) * sp->d[0] - 1) / sp->s[0] + 1;
    if (od < 1) return kn__errp(KN_ESHAPE, "Conv: kernel deeper than the padded input");
    kn_conv_opts o = {
        .stride = {sp->s[1], sp->s[2]}, .dilation = {sp->d[1], sp->d[2]}, .groups = groups};
    kn_tensor *acc = NULL;
    for (int64_t k = 0; k < kd; k++) {
        kn_tensor *wk = kn_squeeze(kn_slice(w, 2, k, k + 1, 1), 2);
        kn_tensor *y = kn_conv2d(depth_tap(x, k, sp, od), wk, k == 0 ? b : NULL, &o);
        acc = acc ? kn_add(acc, y) : y;
    }
    return undo_tap(acc, s[0], od);
}

/* the full 3-D transposed convolution (no padding, no bias): the input's depth is spread out by
 * the stride (zeros between), then each kernel depth tap is a 2-D transposed convolution of
 * every depth, shifted to its offset and summed */
static kn_tensor *conv_transpose3d_full(kn_tensor *x, kn_tensor *w, const spatial *sp,
                                        int64_t groups) {
    const int64_t *s = kn_tensor_shape(x);
    int64_t n = s[0], c = s[1], id = s[2], sd = sp->s[0], dd = sp->d[0];
    int64_t kd = kn_tensor_shape(w)[2];
    kn_tensor *xu = x;
    if (sd > 1) {
        int64_t s6[6] = {n, c, id, 1, s[3], s[4]}, z6[6] = {n, c, id, sd - 1, s[3], s[4]};
        kn_tensor *parts[2] = {kn_reshape(x, 6, s6), kn_zeros(kn_tensor_dtype(x), 6, z6)};
        int64_t s5[5] = {n, c, id * sd, s[3], s[4]};
        xu = kn_slice(kn_reshape(kn_concat(parts, 2, 3), 5, s5), 2, 0, (id - 1) * sd + 1, 1);
    }
    if (!xu) return NULL;
    int64_t ld = kn_tensor_shape(xu)[2], fd = ld + (kd - 1) * dd;
    int perm[5] = {0, 2, 1, 3, 4};
    int64_t s4[4] = {n * ld, c, s[3], s[4]};
    kn_tensor *folded = kn_reshape(kn_permute(xu, perm), 4, s4);
    kn_conv_opts o = {
        .stride = {sp->s[1], sp->s[2]}, .dilation = {sp->d[1], sp->d[2]}, .groups = groups};
    int64_t zero[2] = {0, 0};
    kn_tensor *acc = NULL;
    for (int64_t k = 0; k < kd; k++) {
        kn_tensor *wk = kn_squeeze(kn_slice(w, 2, k, k + 1, 1), 2);
        kn_tensor *y = undo_tap(kn_conv_transpose2d(folded, wk, NULL, &o, zero), n, ld);
        int64_t p[6] = {0, 0, 0, 0, k * dd, fd - ld - k * dd};
        y = kn_pad(y, p, 6, KN_PAD_CONSTANT, 0.0);
        acc = acc ? kn_add(acc, y) : y;
    }
    return acc;
}

/* output length of a pool over `in` (padded already), ONNX's floor / ceil rule */
static int64_t pool_len(int64_t in, int64_t k, int64_t s, int64_t d, bool ceil_mode) {
    int64_t span = (k - 1) * d + 1;
    if (in < span) return 0;
    return ceil_mode ? (in - span + s - 1) / s + 1 : (in - span) / s + 1;
}

/* 3-D max / average pool; average: the sum over the zero-padded input divided by the count of
 * the elements that count (the input, plus the declared padding with count_include_pad; never
 * the overhang of ceil_mode windows) */
static kn_tensor *pool3d(kn_tensor *x, spatial sp, bool is_max, bool ceil_mode, bool include) {
    const int64_t *s0 = kn_tensor_shape(x);
    int64_t o[3], over[3];
    for (int i = 0; i < 3; i++) {
        int64_t in = s0[2 + i] + sp.pb[i] + sp.pe[i];
        o[i] = pool_len(in, sp.k[i], sp.s[i], sp.d[i], ceil_mode);
        if (o[i] < 1) return kn__errp(KN_ESHAPE, "pool: kernel larger than the padded input");
        int64_t need = (o[i] - 1) * sp.s[i] + (sp.k[i] - 1) * sp.d[i] + 1;
        over[i] = need > in ? need - in : 0;
    }
    spatial all = sp, tail = {.nd = 3};
    for (int i = 0; i < 3; i++)
        all.pe[i] += over[i], tail.pe[i] = over[i];
    spatial hw = hw_of(&all);
    kn_pool_opts po = {.kernel = {hw.k[0], hw.k[1]},
                       .stride = {hw.s[0], hw.s[1]},
                       .dilation = {hw.d[0], hw.d[1]},
                       .count_include_pad = true};
    kn_tensor *srcs[2] = {pad_dhw(x, &all, is_max ? -INFINITY : 0.0), NULL};
    if (!is_max)
        srcs[1] = include ? pad_dhw(pad_dhw(kn_ones_like(x), &sp, 1.0), &tail, 0.0)
                          : pad_dhw(kn_ones_like(x), &all, 0.0);
    kn_tensor *res[2] = {NULL, NULL};
    for (int v = 0; v < (is_max ? 1 : 2); v++) {
        if (!srcs[v]) return NULL;
        for (int64_t k = 0; k < sp.k[0]; k++) {
            kn_tensor *t = depth_tap(srcs[v], k, &all, o[0]); /* (N*OD, C, H, W) */
            kn_tensor *y = is_max ? kn_max_pool2d(t, &po, NULL) : kn_avg_pool2d(t, &po);
            res[v] = !res[v] ? y : is_max ? kn_maximum(res[v], y) : kn_add(res[v], y);
        }
    }
    return undo_tap(is_max ? res[0] : kn_div(res[0], res[1]), s0[0], o[0]);
}

/* ---- Conv / ConvTranspose ---- */

static kn_status conv(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *w = kn__ox_need(x, 1), *b = kn__ox_in(x, 2);
    if (!in || !w) return kn_last_status();
    int nd = spatial_rank(in, "Conv");
    if (nd < 0) return nd;
    if (kn_tensor_ndim(w) != nd + 2) return kn__err(KN_ESHAPE, "weight rank does not match input");
    spatial sp;
    kn_status st = read_spatial(x, nd, kn_tensor_shape(in) + 2, kn_tensor_shape(w) + 2, true, &sp);
    if (st) return st;
    if (nd == 3) return kn__ox_set(x, 0, conv3d(in, w, b, &sp, kn__ox_int(x, "group", 1)));
    if (nd == 1) {
        in = kn_unsqueeze(in, 2);
        w = kn_unsqueeze(w, 2);
        as_2d(&sp);
    }
    kn_conv_opts o = {.stride = {sp.s[0], sp.s[1]},
                      .dilation = {sp.d[0], sp.d[1]},
                      .groups = kn__ox_int(x, "group", 1)};
    if (symmetric(&sp))
        o.padding[0] = sp.pb[0], o.padding[1] = sp.pb[1];
    else
        in = pad_hw(in, &sp, 0.0);
    kn_tensor *y = kn_conv2d(in, w, b, &o);
    if (nd == 1 && y) y = kn_squeeze(y, 2);
    return kn__ox_set(x, 0, y);
}

static kn_status conv_transpose(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *w = kn__ox_need(x, 1), *b = kn__ox_in(x, 2);
    if (!in || !w) return kn_last_status();
    int nd = spatial_rank(in, "ConvTranspose");
    if (nd < 0) return nd;
    if (kn_tensor_ndim(w) != nd + 2) return kn__err(KN_ESHAPE, "weight rank does not match input");
    const int64_t *is = kn_tensor_shape(in) + 2;
    spatial sp;
    char ap[32];
    const char *mode = kn__ox_str(x, "auto_pad", "NOTSET", ap, sizeof ap);
    /* auto_pad pads to output_shape = input * stride here (below) */
    kn_status st = read_spatial(x, nd, is, kn_tensor_shape(w) + 2, false, &sp);
    if (st) return st;
    int64_t opad[3] = {0, 0, 0}, oshape[3];
    int n = kn__ox_ints(x, "output_padding", opad, 3);
    if (n >= 0 && n != nd) return kn__err(KN_EINVAL, "output_padding has %d values", n);
    int no = kn__ox_ints(x, "output_shape", oshape, 3);
    if (no >= 0 && no != nd) return kn__err(KN_EINVAL, "output_shape has %d values", no);
    bool same = !strcmp(mode, "SAME_UPPER") || !strcmp(mode, "SAME_LOWER");
    for (int i = 0; i < nd; i++) {
        int64_t full = (is[i] - 1) * sp.s[i] + (sp.k[i] - 1) * sp.d[i] + 1 + opad[i];
        int64_t target = no >= 0 ? oshape[i] : same ? is[i] * sp.s[i] : -1;
        if (target < 0) continue;
        int64_t total = full - target;
        bool upper = !strcmp(mode, "SAME_UPPER");
        sp.pb[i] = total < 0 ? 0 : upper ? total / 2 : total - total / 2;
        sp.pe[i] = total - sp.pb[i]; /* negative: the output grows at the end (bias only) */
    }
    if (nd == 3) {
        kn_tensor *y = conv_transpose3d_full(in, w, &sp, kn__ox_int(x, "group", 1));
        int64_t p[6] = {-sp.pb[2],          opad[2] - sp.pe[2], -sp.pb[1],
                        opad[1] - sp.pe[1], -sp.pb[0],          opad[0] - sp.pe[0]};
        if (y) y = kn_pad(y, p, 6, KN_PAD_CONSTANT, 0.0);
        if (y && b) {
            int64_t bs[4] = {kn_tensor_numel(b), 1, 1, 1};
            y = kn_add(y, kn_reshape(b, 4, bs));
        }
        return kn__ox_set(x, 0, y);
    }
    if (nd == 1) {
        in = kn_unsqueeze(in, 2);
        w = kn_unsqueeze(w, 2);
        opad[1] = opad[0], opad[0] = 0;
        as_2d(&sp);
    }
    kn_conv_opts o = {.stride = {sp.s[0], sp.s[1]},
                      .dilation = {sp.d[0], sp.d[1]},
                      .groups = kn__ox_int(x, "group", 1)};
    kn_tensor *y;
    if (symmetric(&sp) && sp.pe[0] >= 0 && sp.pe[1] >= 0 && opad[0] < sp.s[0] &&
        opad[1] < sp.s[1]) {
        o.padding[0] = sp.pb[0], o.padding[1] = sp.pb[1];
        y = kn_conv_transpose2d(in, w, b, &o, opad);
    } else {
        /* full output, then crop begin pads and pad / crop the end (output_padding - end pad) */
        int64_t zero[2] = {0, 0};
        y = kn_conv_transpose2d(in, w, NULL, &o, zero);
        int64_t p[4] = {-sp.pb[1], opad[1] - sp.pe[1], -sp.pb[0], opad[0] - sp.pe[0]};
        if (y) y = kn_pad(y, p, 4, KN_PAD_CONSTANT, 0.0);
        if (y && b) {
            int64_t bs[3] = {kn_tensor_numel(b), 1, 1};
            y = kn_add(y, kn_reshape(b, 3, bs));
        }
    }
    if (nd == 1 && y) y = kn_squeeze(y, 2);
    return kn__ox_set(x, 0, y);
}

/* ---- pools ---- */

/* ONNX's MaxPool indices: flat over the whole (N, C, H, W) tensor, row-major or (storage_order
 * 1) column-major within a plane; kiln's are row-major within the plane. */
static kn_tensor *flat_indices(kn_tensor *idx, int64_t H, int64_t W, bool col_major) {
    if (col_major) {
        kn_tensor *sw = kn_scalar(KN_I64, (double)W);
        kn_tensor *h = kn_div(idx, sw);
        kn_tensor *w = kn_sub(idx, kn_mul(h, sw));
        idx = kn_add(kn_mul(w, kn_scalar(KN_I64, (double)H)), h);
    }
    const int64_t *s = kn_tensor_shape(idx);
    int64_t planes = s[0] * s[1], ps[4] = {s[0], s[1], 1, 1};
    kn_tensor *base =
        kn_mul(kn_arange(0, (double)planes, 1, KN_I64), kn_scalar(KN_I64, (double)(H * W)));
    return kn_add(idx, kn_reshape(base, 4, ps));
}

static kn_status pool(kn_ox *x) {
    bool is_max = x->node->op_type.n == 7 && !memcmp(x->node->op_type.p, "MaxPool", 7);
    kn_tensor *in = kn__ox_need(x, 0);
    if (!in) return kn_last_status();
    int nd = spatial_rank(in, is_max ? "MaxPool" : "AveragePool");
    if (nd < 0) return nd;
    const int64_t *is = kn_tensor_shape(in) + 2;
    int64_t H = nd == 2 ? is[0] : 1, W = is[nd - 1];
    if (nd == 3) H = W = 1;
    spatial sp;
    kn_status st = read_spatial(x, nd, is, NULL, true, &sp);
    if (st) return st;
    for (int i = 0; i < nd; i++)
        if (!is_max && sp.d[i] != 1) return kn__err(KN_EUNSUPPORTED, "AveragePool with dilations");
    if (nd == 3) {
        if (x->nout > 1 && x->want[1]) return kn__err(KN_EUNSUPPORTED, "3-D MaxPool indices");
        return kn__ox_set(x, 0,
                          pool3d(in, sp, is_max, kn__ox_int(x, "ceil_mode", 0) != 0,
                                 kn__ox_int(x, "count_include_pad", 0) != 0));
    }
    if (nd == 1) {
        in = kn_unsqueeze(in, 2);
        as_2d(&sp);
    }
    kn_pool_opts o = {.kernel = {sp.k[0], sp.k[1]},
                      .stride = {sp.s[0], sp.s[1]},
                      .dilation = {sp.d[0], sp.d[1]},
                      .ceil_mode = kn__ox_int(x, "ceil_mode", 0) != 0,
                      .count_include_pad = true};
    bool include = kn__ox_int(x, "count_include_pad", 0) != 0;
    bool direct = symmetric(&sp) && sp.pb[0] <= sp.k[0] / 2 && sp.pb[1] <= sp.k[1] / 2;
    bool want_idx = x->nout > 1 && x->want[1];
    kn_tensor *y, *idx = NULL;
    if (direct) {
        o.padding[0] = sp.pb[0], o.padding[1] = sp.pb[1];
        o.count_include_pad = include;
        y = is_max ? kn_max_pool2d(in, &o, want_idx ? &idx : NULL) : kn_avg_pool2d(in, &o);
    } else if (want_idx) {
        return kn__err(KN_EUNSUPPORTED, "MaxPool indices with asymmetric or large pads");
    } else if (is_max) {
        y = kn_max_pool2d(pad_hw(in, &sp, -INFINITY), &o, NULL);
    } else if (include) {
        y = kn_avg_pool2d(pad_hw(in, &sp, 0.0), &o);
    } else {
        kn_tensor *sum = kn_avg_pool2d(pad_hw(in, &sp, 0.0), &o);
        kn_tensor *cnt = kn_avg_pool2d(pad_hw(kn_ones_like(in), &sp, 0.0), &o);
        y = kn_div(sum, cnt);
    }
    if (want_idx && y) {
        idx = flat_indices(idx, H, W, kn__ox_int(x, "storage_order", 0) == 1);
        if (nd == 1 && idx) idx = kn_squeeze(idx, 2);
        if ((st = kn__ox_set(x, 1, idx))) return st;
    }
    if (nd == 1 && y) y = kn_squeeze(y, 2);
    return kn__ox_set(x, 0, y);
}

static kn_status global_pool(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0);
    if (!in) return kn_last_status();
    int r = kn_tensor_ndim(in);
    if (r < 3) return kn__err(KN_ESHAPE, "input must be (N, C, ...)");
    int axes[KN_MAX_DIMS];
    for (int i = 2; i < r; i++)
        axes[i - 2] = i;
    bool is_max = x->node->op_type.n == 13 && !memcmp(x->node->op_type.p, "GlobalMaxPool", 13);
    if (!is_max && r == 4) return kn__ox_set(x, 0, kn_global_avg_pool2d(in));
    return kn__ox_set(x, 0,
                      is_max ? kn_amax(in, axes, r - 2, true) : kn_mean(in, axes, r - 2, true));
}

/* ---- GEMM ---- */

static kn_status gemm(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1), *c = kn__ox_in(x, 2);
    if (!a || !b) return kn_last_status();
    bool ta = kn__ox_int(x, "transA", 0), tb = kn__ox_int(x, "transB", 0);
    double alpha = kn__ox_float(x, "alpha", 1.0), beta = kn__ox_float(x, "beta", 1.0);
    if (kn_tensor_ndim(a) != 2 || kn_tensor_ndim(b) != 2)
        return kn__err(KN_ESHAPE, "A and B must be 2-D");
    if (!ta && tb && alpha == 1.0 &&
        (!c ||
         (beta == 1.0 && kn_tensor_ndim(c) == 1 && kn_tensor_shape(c)[0] == kn_tensor_shape(b)[0])))
        return kn__ox_set(x, 0, kn_linear(a, b, c));
    int perm[2] = {1, 0};
    if (ta) a = kn_permute(a, perm);
    if (tb) b = kn_permute(b, perm);
    kn_tensor *y = kn_matmul(a, b);
    if (alpha != 1.0) y = kn_mul_scalar(y, alpha);
    if (c && beta != 0.0) y = kn_add(y, beta == 1.0 ? c : kn_mul_scalar(c, beta));
    return kn__ox_set(x, 0, y);
}

static kn_status matmul(kn_ox *x) {
    kn_tensor *a = kn__ox_need(x, 0), *b = kn__ox_need(x, 1);
    return a && b ? kn__ox_set(x, 0, kn_matmul(a, b)) : kn_last_status();
}

/* ---- softmax family ---- */

static kn_status softmax(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0);
    if (!in) return kn_last_status();
    const char *t = x->node->op_type.p;
    bool log = t[0] == 'L', hard = t[0] == 'H';
    int r = kn_tensor_ndim(in), axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", x->opset < 13 ? 1 : -1), r, "axis", &axis);
    if (st) return st;
    kn_tensor *v = in;
    int dim = axis;
    if (x->opset < 13) { /* coerced to 2-D: (prod(dims < axis), prod(dims >= axis)) */
        int64_t s2[2] = {1, 1};
        for (int i = 0; i < r; i++)
            s2[i >= axis] *= kn_tensor_shape(in)[i];
        v = kn_reshape(in, 2, s2);
        dim = 1;
    }
    kn_tensor *y;
    if (hard) {
        kn_tensor *am = kn_argmax(v, dim, true);
        int vr = kn_tensor_ndim(v);
        int64_t n = v ? kn_tensor_shape(v)[dim] : 0, shape[KN_MAX_DIMS];
        for (int i = 0; i < vr; i++)
            shape[i] = i == dim ? n : 1;
        kn_tensor *ar = kn_reshape(kn_arange(0, (double)n, 1, KN_I64), vr, shape);
        y = kn_cast(kn_eq(ar, am), kn_tensor_dtype(in));
    } else {
        y = log ? kn_log_softmax(v, dim) : kn_softmax(v, dim);
    }
    if (v != in && y) y = kn_reshape(y, r, kn_tensor_shape(in));
    return kn__ox_set(x, 0, y);
}

/* ---- normalisation ---- */

static kn_status batch_norm(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *sc = kn__ox_need(x, 1), *bi = kn__ox_need(x, 2);
    kn_tensor *mean = kn__ox_need(x, 3), *var = kn__ox_need(x, 4);
    if (!in || !sc || !bi || !mean || !var) return kn_last_status();
    if (kn__ox_int(x, "training_mode", 0) || (x->nout > 1 && x->want[1]))
        return kn__err(KN_EUNSUPPORTED, "BatchNormalization in training mode");
    double eps = kn__ox_float(x, "epsilon", 1e-5);
    return kn__ox_set(x, 0, kn_batch_norm(in, mean, var, sc, bi, false, 0.1, eps));
}

static kn_status instance_norm(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *sc = kn__ox_need(x, 1), *bi = kn__ox_need(x, 2);
    if (!in || !sc || !bi) return kn_last_status();
    if (kn_tensor_ndim(in) < 3) return kn__err(KN_ESHAPE, "input must be (N, C, ...)");
    return kn__ox_set(
        x, 0, kn_group_norm(in, kn_tensor_shape(in)[1], sc, bi, kn__ox_float(x, "epsilon", 1e-5)));
}

static kn_status layer_norm(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0), *sc = kn__ox_need(x, 1), *bi = kn__ox_in(x, 2);
    if (!in || !sc) return kn_last_status();
    int r = kn_tensor_ndim(in), axis;
    kn_status st = kn__ox_axis(kn__ox_int(x, "axis", -1), r, "axis", &axis);
    if (st) return st;
    int nn = r - axis;
    /* kiln wants weight/bias of the normalised shape: broadcast ONNX's to it */
    const int64_t *ns = kn_tensor_shape(in) + axis;
    if (kn_tensor_ndim(sc) != nn || memcmp(kn_tensor_shape(sc), ns, sizeof(int64_t) * (size_t)nn))
        sc = kn_contiguous(kn_expand(sc, nn, ns));
    if (bi &&
        (kn_tensor_ndim(bi) != nn || memcmp(kn_tensor_shape(bi), ns, sizeof(int64_t) * (size_t)nn)))
        bi = kn_contiguous(kn_expand(bi, nn, ns));
    kn_attrs at = {0};
    kn_attrs_set_int(&at, "nnorm", nn);
    kn_attrs_set_float(&at, "eps", kn__ox_float(x, "epsilon", 1e-5));
    kn_tensor *ins[3] = {in, sc, bi}, *outs[3] = {0};
    int n = kn_op_call("layer_norm", ins, bi ? 3 : 2, &at, outs, 3);
    if (n < 0) return n;
    for (int i = 0; i < 3 && i < x->nout; i++)
        if (x->want[i] && (st = kn__ox_set(x, i, outs[i]))) return st;
    return KN_OK;
}

static kn_status lrn(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0);
    if (!in) return kn_last_status();
    if (kn_tensor_ndim(in) < 3) return kn__err(KN_ESHAPE, "input must be (N, C, ...)");
    int64_t size = kn__ox_int(x, "size", 0);
    if (size < 1) return kn__err(KN_EINVAL, "size must be positive");
    double alpha = kn__ox_float(x, "alpha", 1e-4), beta = kn__ox_float(x, "beta", 0.75);
    double bias = kn__ox_float(x, "bias", 1.0);
    const int64_t *s = kn_tensor_shape(in);
    int64_t rest = kn_tensor_numel(in) / (s[0] * s[1]);
    int64_t s4[4] = {s[0], 1, s[1], rest};
    /* sum of squares over a channel window: a (size, 1) pool over (N, 1, C, rest) */
    kn_tensor *sq = kn_reshape(kn_mul(in, in), 4, s4);
    int64_t p[4] = {0, 0, (size - 1) / 2, size - 1 - (size - 1) / 2};
    kn_pool_opts o = {.kernel = {size, 1}, .stride = {1, 1}, .count_include_pad = true};
    kn_tensor *sum = kn_avg_pool2d(kn_pad(sq, p, 4, KN_PAD_CONSTANT, 0.0), &o);
    kn_tensor *den = kn_pow_scalar(kn_add_scalar(kn_mul_scalar(sum, alpha), bias), beta);
    return kn__ox_set(x, 0, kn_div(in, kn_reshape(den, kn_tensor_ndim(in), s)));
}

static kn_status dropout(kn_ox *x) {
    kn_tensor *in = kn__ox_need(x, 0);
    if (!in) return kn_last_status();
    bool training = false;
    if (x->opset >= 12 && kn__ox_in(x, 2)) {
        int64_t t;
        int n = kn__ox_in_ints(x, 2, &t, 1);
        if (n < 0) return n;
        training = n == 1 && t != 0;
    } else if (x->opset < 7) {
        training = !kn__ox_int(x, "is_test", 0);
    }
    if (training) return kn__err(KN_EUNSUPPORTED, "Dropout in training mode (random)");
    kn_status st = kn__ox_set(x, 0, in);
    if (!st && x->nout > 1 && x->want[1])
        st = kn__ox_set(x, 1, kn_full(KN_BOOL, kn_tensor_ndim(in), kn_tensor_shape(in), 1));
    return st;
}

const kn_ox_op kn__ox_ops_nn[] = {
    {"Conv", conv, 1, 0, false},
    {"ConvTranspose", conv_transpose, 1, 0, false},
    {"MaxPool", pool, 1, 0, false},
    {"AveragePool", pool, 1, 0, false},
    {"GlobalAveragePool", global_pool, 1, 0, false},
    {"GlobalMaxPool", global_pool, 1, 0, false},
    {"Gemm", gemm, 1, 0, false},
    {"MatMul", matmul, 1, 0, false},
    {"Softmax", softmax, 1, 0, false},
    {"LogSoftmax", softmax, 1, 0, false},
    {"Hardmax", softmax, 1, 0, false},
    {"BatchNormalization", batch_norm, 1, 0, false},
    {"InstanceNormalization", instance_norm, 1, 0, false},
    {"LayerNormalization", layer_norm, 17, 0, false},
    {"LRN", lrn, 1, 0, false},
    {"Dropout", dropout, 1, 0, false},
    {NULL, NULL, 0, 0, false},
};
