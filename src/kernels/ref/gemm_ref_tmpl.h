/*
 * gemm_ref_tmpl.h - body of the blocked reference GEMM, included by gemm_ref.c once per dtype
 * with T (element type), SFX (name suffix: s or d), VEC (a 64-byte GCC vector of T) and NR
 * (elements of T in 64 bytes) defined. Not a public header; see gemm.h for the contract.
 *
 * Goto-style blocking: B is packed in KC x NR strips (one strip stays in L1), A in MR x KC strips
 * (an MC x KC block stays in L2); an MR x NR register tile accumulates over one KC block. Threads
 * take (MC rows) x (NCH columns) tiles of C; K blocks are always walked in order by one thread per
 * C element, so the result does not depend on the thread count.
 */
#define KN_CAT2(a, b) a##b
#define KN_CAT(a, b) KN_CAT2(a, b)
#define FN(name) KN_CAT(KN_CAT(kn__, SFX), name)
#define LOCAL(name) KN_CAT(name, KN_CAT(_, SFX))

/* C tile (mr x nr valid of an MR x NR register tile) = alpha * acc + beta * C. */
static inline void LOCAL(tile_store)(const T *restrict acc, int64_t mr, int64_t nr, T alpha,
                                     T beta, T *restrict C, int64_t ldc) {
    for (int64_t r = 0; r < mr; r++) {
        T *crow = C + r * ldc;
        const T *arow = acc + r * NR;
        if (beta == 0) {
            for (int64_t c = 0; c < nr; c++) crow[c] = alpha * arow[c];
        } else if (beta == 1 && alpha == 1) {
            for (int64_t c = 0; c < nr; c++) crow[c] += arow[c];
        } else {
            for (int64_t c = 0; c < nr; c++) crow[c] = alpha * arow[c] + beta * crow[c];
        }
    }
}

/* acc (MR x NR) = sum_k a[k] (MR) outer b[k] (NR), a and b packed and 64-byte aligned. */
KN_GEMM_CLONES static void LOCAL(ukernel)(int64_t kc, const T *restrict a, const T *restrict b,
                                          T *restrict acc) {
    VEC c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0};
    for (int64_t k = 0; k < kc; k++) {
        VEC bv = *(const VEC *)(b + k * NR);
        const T *ak = a + k * MR;
        c0 += ak[0] * bv;
        c1 += ak[1] * bv;
        c2 += ak[2] * bv;
        c3 += ak[3] * bv;
        c4 += ak[4] * bv;
        c5 += ak[5] * bv;
    }
    VEC *o = (VEC *)acc;
    o[0] = c0;
    o[1] = c1;
    o[2] = c2;
    o[3] = c3;
    o[4] = c4;
    o[5] = c5;
}

void FN(gemm_naive)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A,
                    int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            T s = 0;
            for (int64_t k = 0; k < K; k++) {
                T a = ta ? A[k * lda + i] : A[i * lda + k];
                T b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            C[i * ldc + j] = beta == 0 ? alpha * s : alpha * s + beta * C[i * ldc + j];
        }
}

static void LOCAL(scale_c)(int64_t M, int64_t N, T beta, T *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++) {
        T *c = C + i * ldc;
        if (beta == 0)
            for (int64_t j = 0; j < N; j++) c[j] = 0;
        else if (beta != 1)
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
}

void FN(gemm_ref)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A,
                  int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0) {
        LOCAL(scale_c)(M, N, beta, C, ldc);
        return;
    }
    const int64_t KC = KN_GEMM_KC, MC = KN_GEMM_MC, NCH = KN_GEMM_NCH;
    const int64_t NC = KN_GEMM_NC, MB = KN_GEMM_MB;
    int64_t ncmax = N < NC ? N : NC, mbmax = M < MB ? M : MB;
    int64_t kcmax = K < KC ? K : KC;
    int64_t nstrips_b = (ncmax + NR - 1) / NR, nstrips_a = (mbmax + MR - 1) / MR;
    T *bp = kn__aligned_alloc(sizeof(T) * (size_t)(nstrips_b * NR * kcmax));
    T *ap = kn__aligned_alloc(sizeof(T) * (size_t)(nstrips_a * MR * kcmax));
    if (!bp || !ap) {
        /* Out of memory for packing: fall back to the unblocked loop (no allocation). */
        kn__aligned_free(bp);
        kn__aligned_free(ap);
        FN(gemm_naive)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int nth = kn__threads();
    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = N - jc < NC ? N - jc : NC;
        int64_t nsb = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = K - pc < KC ? K - pc : KC;
            T beta_eff = pc == 0 ? beta : (T)1;
            /* pack B[pc:pc+kc, jc:jc+nc] into NR-wide strips, zero-padded */
#pragma omp parallel for num_threads(nth) if (nsb * kc > 32768) schedule(static)
            for (int64_t s = 0; s < nsb; s++) {
                T *dst = bp + s * NR * kc;
                int64_t j0 = jc + s * NR, nr = nc - s * NR < NR ? nc - s * NR : NR;
                for (int64_t k = 0; k < kc; k++) {
                    T *d = dst + k * NR;
                    if (!tb) {
                        const T *src = B + (pc + k) * ldb + j0;
                        for (int64_t c = 0; c < nr; c++) d[c] = src[c];
                    } else {
                        const T *src = B + j0 * ldb + pc + k;
                        for (int64_t c = 0; c < nr; c++) d[c] = src[c * ldb];
                    }
                    for (int64_t c = nr; c < NR; c++) d[c] = 0;
                }
            }
            for (int64_t ib = 0; ib < M; ib += MB) {
                int64_t mb = M - ib < MB ? M - ib : MB;
                int64_t nsa = (mb + MR - 1) / MR;
#pragma omp parallel for num_threads(nth) if (nsa * kc > 32768) schedule(static)
                for (int64_t s = 0; s < nsa; s++) {
                    T *dst = ap + s * MR * kc;
                    int64_t i0 = ib + s * MR, mr = mb - s * MR < MR ? mb - s * MR : MR;
                    for (int64_t k = 0; k < kc; k++) {
                        T *d = dst + k * MR;
                        if (!ta) {
                            const T *src = A + i0 * lda + pc + k;
                            for (int64_t r = 0; r < mr; r++) d[r] = src[r * lda];
                        } else {
                            const T *src = A + (pc + k) * lda + i0;
                            for (int64_t r = 0; r < mr; r++) d[r] = src[r];
                        }
                        for (int64_t r = mr; r < MR; r++) d[r] = 0;
                    }
                }
                int64_t ntm = (mb + MC - 1) / MC, ntn = (nc + NCH - 1) / NCH;
                double work = (double)mb * (double)nc * (double)kc;
#pragma omp parallel for num_threads(nth) if (work > 262144.0) schedule(static) collapse(2)
                for (int64_t tm = 0; tm < ntm; tm++) {
                    for (int64_t tn = 0; tn < ntn; tn++) {
                        T acc[MR * NR] __attribute__((aligned(64)));
                        int64_t s_lo = tn * NCH / NR, s_hi = (tn + 1) * NCH / NR;
                        if (s_hi > nsb) s_hi = nsb;
                        int64_t r_lo = tm * MC / MR, r_hi = (tm + 1) * MC / MR;
                        if (r_hi > nsa) r_hi = nsa;
                        for (int64_t sb = s_lo; sb < s_hi; sb++) {
                            int64_t nr = nc - sb * NR < NR ? nc - sb * NR : NR;
                            for (int64_t sa = r_lo; sa < r_hi; sa++) {
                                int64_t mr = mb - sa * MR < MR ? mb - sa * MR : MR;
                                LOCAL(ukernel)(kc, ap + sa * MR * kc, bp + sb * NR * kc, acc);
                                LOCAL(tile_store)(acc, mr, nr, alpha, beta_eff,
                                                  C + (ib + sa * MR) * ldc + jc + sb * NR, ldc);
                            }
                        }
                    }
                }
            }
        }
    }
    kn__aligned_free(bp);
    kn__aligned_free(ap);
}

#undef FN
#undef LOCAL
#undef KN_CAT
#undef KN_CAT2
