/* One ISA variant of fastnn's vector kernels.  Included several times by fnn_simd.h with
 * FNN_T (float|double), FNN_IS_DOUBLE, FNN_VL (lanes), FNN_MR, FNN_NR and FNN_SFX defined
 * (and undefined again at the end), inside a target pragma, so every function here is
 * compiled for that instruction set.
 *
 *   ukr      MR x NR register-tiled GEMM microkernel on packed panels, with the fused
 *            writeback  C = act(alpha*acc + beta*C + bias)
 *   act_fwd  the same activation, elementwise over an array (bitwise identical to the
 *            epilogue, so fused and unfused paths agree exactly)
 *   act_bwd  dz = g * act'(.) from the saved activation output y, or the saved input for
 *            gelu, gelu_tanh, silu and softplus (their derivative is not a function of y)
 *   sgd, adam, rmsprop  the optimizer updates, one pass over a parameter and its state
 */
#define FNN_CAT2(a, b) a##_##b
#define FNN_CAT(a, b) FNN_CAT2(a, b)
#define N_(x) FNN_CAT(x, FNN_SFX)
#define FNN_NV (FNN_NR / FNN_VL)

#if FNN_IS_DOUBLE
typedef int64_t N_(it);
#else
typedef int32_t N_(it);
#endif
typedef FNN_T N_(vt) __attribute__((vector_size(FNN_VL * sizeof(FNN_T))));
typedef N_(it) N_(vi) __attribute__((vector_size(FNN_VL * sizeof(FNN_T))));

static inline N_(vt) N_(ld)(const FNN_T *p) { N_(vt) v; memcpy(&v, p, sizeof v); return v; }
static inline void N_(st)(FNN_T *p, N_(vt) v) { memcpy(p, &v, sizeof v); }
/* broadcast, bit-exact (also for -0.0): integer vector + scalar broadcasts the bits */
static inline N_(vt) N_(splat)(FNN_T s) {
    N_(it) bits;
    memcpy(&bits, &s, sizeof bits);
    N_(vi) v = {0};
    return (N_(vt))(v + bits);
}
/* the sign bit of every lane (negating +0.0 gives -0.0) */
static inline N_(vi) N_(signbit)(void) { return (N_(vi))(-N_(splat)(0)); }
/* mask ? a : b, mask lanes all-ones or zero (the result of a vector comparison) */
static inline N_(vt) N_(sel)(N_(vi) m, N_(vt) a, N_(vt) b) {
    return (N_(vt))((m & (N_(vi))a) | (~m & (N_(vi))b));
}

/* exp(x) for x <= 0 (the only range sigmoid/tanh need): Cephes' reduction and polynomial,
 * ~1 ulp; 0 below the normal range; NaN propagates. */
static inline N_(vt) N_(exp_neg)(N_(vt) x) {
#if FNN_IS_DOUBLE
    const double lo = -708.0, magic = 6755399441055744.0; /* 1.5 * 2^52 */
    N_(vt) n = (x * 1.4426950408889634073599 + magic) - magic; /* round to nearest */
    N_(vt) r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    N_(vt) rr = r * r;
    N_(vt) px = r * ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr
                     + 9.99999999999999999910E-1);
    N_(vt) qx = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr
                 + 2.27265548208155028766E-1) * rr + 2.00000000000000000009E0;
    N_(vt) y = 1.0 + 2.0 * (px / (qx - px));
    N_(vi) e = (__builtin_convertvector(n, N_(vi)) + 1023) << 52;
#else
    const float lo = -87.6f, magic = 12582912.0f; /* 1.5 * 2^23 */
    N_(vt) n = (x * 1.44269504088896341f + magic) - magic;
    N_(vt) r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    N_(vt) rr = r * r;
    N_(vt) y = (((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r
                  + 4.1665795894E-2f) * r + 1.6666665459E-1f) * r + 5.0000001201E-1f) * rr
               + r + 1.0f;
    N_(vi) e = (__builtin_convertvector(n, N_(vi)) + 127) << 23;
#endif
    y = y * (N_(vt))e;
    return N_(sel)(x < N_(splat)(lo), N_(splat)(0), y);
}

static inline N_(vt) N_(sigmoid)(N_(vt) x) {
    N_(vi) sign = N_(signbit)();
    N_(vt) ax = (N_(vt))((N_(vi))x & ~sign);
    N_(vt) e = N_(exp_neg)(-ax);       /* exp(-|x|) in (0, 1]: never overflows */
    N_(vt) s = 1 / (1 + e);
    return N_(sel)(x < N_(splat)(0), e * s, s);  /* x >= 0: 1/(1+e);  x < 0: e/(1+e) */
}

static inline N_(vt) N_(tanh)(N_(vt) x) {
    N_(vi) sign = N_(signbit)();
    N_(vt) ax = (N_(vt))((N_(vi))x & ~sign);
    N_(vt) e = N_(exp_neg)(-2 * ax);
    N_(vt) big = (1 - e) / (1 + e);    /* |x| >= 0.625: no cancellation */
    N_(vt) s = x * x;
#if FNN_IS_DOUBLE
    N_(vt) p = (-9.64399179425052238628E-1 * s - 9.92877231001918586564E1) * s
               - 1.61468768441708447952E3;
    N_(vt) q = ((s + 1.12811678491632931402E2) * s + 2.23548839060100448583E3) * s
               + 4.84406305325125486048E3;
    N_(vt) small = x + x * s * (p / q);
#else
    N_(vt) small = ((((-5.70498872745E-3f * s + 2.06390887954E-2f) * s - 5.37397155531E-2f) * s
                     + 1.33314422036E-1f) * s - 3.33332819422E-1f) * s * x + x;
#endif
    big = (N_(vt))((N_(vi))big | ((N_(vi))x & sign)); /* copysign */
    return N_(sel)(ax < N_(splat)(0.625), small, big);
}

/* ---- the activations added with GELU (issue 14).  Accuracy, max over a dense sweep
 * (tests/test_activations_new.py measures it against a float64 / mpmath reference): see the
 * README's activation table.  Every function here is lane-wise (no lane reads another), so
 * a value's result does not depend on where in a vector it sits. */

/* c[0] + c[1] t + ... + c[n-1] t^(n-1), Horner */
#define FNN_HORNER(res, cs, t)                                                                 \
    do {                                                                                      \
        const int n_ = (int)(sizeof(cs) / sizeof((cs)[0]));                                   \
        res = N_(splat)((cs)[n_ - 1]);                                                        \
        _Pragma("GCC unroll 32") for (int i_ = n_ - 2; i_ >= 0; i_--) res = res * (t) + (cs)[i_]; \
    } while (0)

/* sigmoid(v) and sigmoid(-v) = 1 - sigmoid(v), each without cancellation */
static inline N_(vt) N_(sigmoid2)(N_(vt) v, N_(vt) *neg) {
    N_(vi) sign = N_(signbit)();
    N_(vt) av = (N_(vt))((N_(vi))v & ~sign);
    N_(vt) e = N_(exp_neg)(-av);
    N_(vt) p = 1 / (1 + e), q = e * p;
    N_(vi) m = v < N_(splat)(0);
    *neg = N_(sel)(m, p, q);
    return N_(sel)(m, q, p);
}

/* exp(x) - 1 for x <= 0 (x > 0 is not used): Taylor series for |x| < ln(2)/2, else
 * exp(x) - 1 (no cancellation there); -1 below the normal range; NaN propagates. */
static inline N_(vt) N_(expm1_neg)(N_(vt) x) {
#if FNN_IS_DOUBLE
    static const double c[] = {1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                               1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
                               1.0 / 479001600, 1.0 / 6227020800.0, 1.0 / 87178291200.0};
#else
    static const float c[] = {1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720,
                              1.0f / 5040, 1.0f / 40320};
#endif
    N_(vt) p;
    FNN_HORNER(p, c, x);
    N_(vt) small = N_(sel)(x == N_(splat)(0), x, x + x * x * p);   /* expm1(-0) = -0 */
    N_(vt) big = N_(exp_neg)(x) - 1;
    return N_(sel)(x > N_(splat)(-0.34657359027997264), small, big);
}

/* Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal CDF, and e = exp(-x^2 / 2).  With
 * a = |x| / sqrt 2: a < 1, erf(a) = a P(a^2); a >= 1, erfc(a) = exp(-a^2) R(1 / (1 + a/2)),
 * so Phi(x) = erfc(a) / 2 for x < 0 keeps its relative accuracy in the left tail.  P and R
 * are least-squares fits in relative error (mpmath, Chebyshev nodes): relative error of the
 * fits 1.2e-9 / 5.3e-9 (float32; R on a in [1, 9.5]) and 1.3e-19 / 5.1e-19 (float64; R on
 * a in [1, 27]) -- below rounding, which dominates. */
static inline N_(vt) N_(norm_cdf)(N_(vt) x, N_(vt) *e) {
#if FNN_IS_DOUBLE
    static const double P[] = {
        1.1283791670955125737, -0.37612638903183747536, 0.11283791670954854308,
        -0.02686617064507231088, 0.0052239776247753191393, -0.00085483269784306939653,
        0.00012055331025793797661, -0.000014925593245923501765, 1.6460968721975600497e-6,
        -1.6349982741897688304e-7, 1.4657600165778558433e-8, -1.1364607520605600498e-9,
        5.9435082339817828257e-11};
    static const double R[] = {
        -3.2474114535835994903e-14, 0.28209479177731340371, 0.28209479160740790845,
        0.24683294770284632234, 0.17630914694283196084, 0.083748293959737229971,
        -0.0044225176260707016605, -0.056634535918698525656, -0.054082049954701432517,
        -0.0016017339663564444829, 0.04906048603495259261, 0.0061169421430762139036,
        0.35123341768730409686, -1.7096418508809271259, 5.2284338643859868854,
        -12.896993199724842269, 24.117628693798307541, -32.682185595218718234,
        31.604707681662210009, -21.402101231672907641, 9.7073920758987615858,
        -2.6637969057196431899, 0.33580903552272720715};
#else
    static const float P[] = {
        1.1283791656893225228f, -0.37612625567399251684f, 0.11283582247992895491f,
        -0.026853691099714645343f, 0.0051880988894004591798f, -0.0008008189323165635183f,
        0.000078472591269656871559f};
    static const float R[] = {
        -4.8123098182614746276e-6f, 0.28221557956814328549f, 0.28083443910646459122f,
        0.25380442076854583104f, 0.15532259740477433702f, 0.11083665852257964549f,
        0.018303438235937297825f, -0.18040850325657557312f, 0.079533569851376691572f};
#endif
    N_(vi) sign = N_(signbit)();
    N_(vt) h = (FNN_T)0.5 * (x * x);                       /* a^2 */
    N_(vt) xs = x * (FNN_T)0.70710678118654752440;          /* x / sqrt 2 */
    N_(vt) a = (N_(vt))((N_(vi))xs & ~sign);
    N_(vt) p, r;
    FNN_HORNER(p, P, h);
    N_(vt) small = (FNN_T)0.5 + (FNN_T)0.5 * (xs * p);
    N_(vt) ex = N_(exp_neg)(-h);
    N_(vt) t = 1 / (1 + (FNN_T)0.5 * a);
    FNN_HORNER(r, R, t);
    N_(vt) half_erfc = (FNN_T)0.5 * (ex * r);
    half_erfc = (N_(vt))((N_(vi))half_erfc & ~sign);    /* +0 where exp underflows */
    N_(vt) big = N_(sel)(x < N_(splat)(0), half_erfc, 1 - half_erfc);
    *e = ex;
    return N_(sel)(a < N_(splat)(1), small, big);
}

/* GELU(x) = x Phi(x) */
static inline N_(vt) N_(gelu)(N_(vt) x) {
    N_(vt) e;
    return x * N_(norm_cdf)(x, &e);
}

/* the tanh approximation: x (1 + tanh(u)) / 2 = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
#define FNN_GELU_K ((FNN_T)0.79788456080286535588)
#define FNN_GELU_C ((FNN_T)0.044715)
static inline N_(vt) N_(gelu_tanh)(N_(vt) x) {
    N_(vt) u = FNN_GELU_K * (x + FNN_GELU_C * (x * x * x));
    N_(vt) sn;
    return x * N_(sigmoid2)(u + u, &sn);
}

static inline N_(vt) N_(silu)(N_(vt) x) {
    N_(vt) sn;
    return x * N_(sigmoid2)(x, &sn);
}

/* Softplus: x where beta x > 20 (torch's default threshold), else log(1 + exp(beta x)) / beta
 * = (max(u, 0) + log1p(exp(-|u|))) / beta with u = beta x; log1p(w), w in (0, 1], as
 * 2 atanh(w / (2 + w)) (its Taylor series, |r| <= 1/3). */
#define FNN_SOFTPLUS_THRESHOLD ((FNN_T)20)
static inline N_(vt) N_(softplus)(N_(vt) x, FNN_T beta) {
#if FNN_IS_DOUBLE
    static const double L[] = {1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13,
                               1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21, 1.0 / 23, 1.0 / 25,
                               1.0 / 27, 1.0 / 29, 1.0 / 31, 1.0 / 33, 1.0 / 35};
#else
    static const float L[] = {1.0f / 3, 1.0f / 5, 1.0f / 7, 1.0f / 9, 1.0f / 11, 1.0f / 13,
                              1.0f / 15};
#endif
    N_(vi) sign = N_(signbit)();
    N_(vt) u = x * beta;
    N_(vt) au = (N_(vt))((N_(vi))u & ~sign);
    N_(vt) w = N_(exp_neg)(-au);
    N_(vt) r = w / (2 + w), r2 = r * r, q;
    FNN_HORNER(q, L, r2);
    N_(vt) lp = (r + r) + (r + r) * (r2 * q);
    N_(vt) pos = N_(sel)(u < N_(splat)(0), N_(splat)(0), u);   /* NaN stays NaN */
    N_(vt) y = (pos + lp) / beta;
    return N_(sel)(u > N_(splat)(FNN_SOFTPLUS_THRESHOLD), x, y);
}

static inline N_(vt) N_(elu)(N_(vt) x, FNN_T alpha) {
    N_(vt) neg = N_(sel)(x > N_(splat)(0), N_(splat)(0), x);
    return N_(sel)(x > N_(splat)(0), x, alpha * N_(expm1_neg)(neg));
}

/* the derivatives of the activations that save their input s (gelu, gelu_tanh, silu,
 * softplus): act'(s) */
static inline N_(vt) N_(dgelu)(N_(vt) x) {
    N_(vt) e;
    N_(vt) cdf = N_(norm_cdf)(x, &e);
    return cdf + x * (e * (FNN_T)0.39894228040143267794);   /* + x exp(-x^2/2) / sqrt(2 pi) */
}

static inline N_(vt) N_(dgelu_tanh)(N_(vt) x) {
    N_(vt) x2 = x * x;
    N_(vt) u = FNN_GELU_K * (x + FNN_GELU_C * (x2 * x));
    N_(vt) sn;
    N_(vt) s = N_(sigmoid2)(u + u, &sn);      /* (1 + tanh u) / 2 and (1 - tanh u) / 2 */
    /* d/dx x (1 + tanh u) / 2 = s + x (1 - tanh^2 u) / 2 u',  (1 - tanh^2 u) / 2 = 2 s sn */
    return s + (x + x) * (s * sn) * (FNN_GELU_K * (1 + (3 * FNN_GELU_C) * x2));
}

static inline N_(vt) N_(dsilu)(N_(vt) x) {
    N_(vt) sn;
    N_(vt) s = N_(sigmoid2)(x, &sn);
    return s * (1 + x * sn);
}

static inline N_(vt) N_(dsoftplus)(N_(vt) x, FNN_T beta) {
    N_(vt) u = x * beta;
    return N_(sel)(u > N_(splat)(FNN_SOFTPLUS_THRESHOLD), N_(splat)(1), N_(sigmoid)(u));
}

static inline N_(vt) N_(act)(N_(vt) v, int act, FNN_T slope) {
    switch (act) {
    case FNN_ACT_RELU: return N_(sel)(v < N_(splat)(0), N_(splat)(0), v);   /* NaN stays NaN */
    case FNN_ACT_LEAKY_RELU: return N_(sel)(v < N_(splat)(0), v * slope, v);
    case FNN_ACT_SIGMOID: return N_(sigmoid)(v);
    case FNN_ACT_TANH: return N_(tanh)(v);
    case FNN_ACT_EXP_NEG: return N_(exp_neg)(v);
    case FNN_ACT_GELU: return N_(gelu)(v);
    case FNN_ACT_GELU_TANH: return N_(gelu_tanh)(v);
    case FNN_ACT_SILU: return N_(silu)(v);
    case FNN_ACT_SOFTPLUS: return N_(softplus)(v, slope);
    case FNN_ACT_ELU: return N_(elu)(v, slope);
    default: return v;
    }
}

/* p = act(p) in place over nvec whole vectors: the writeback of the activations too long
 * to inline into every microkernel tile (sigmoid, tanh, gelu, gelu_tanh, silu, softplus,
 * elu: see ukr_body).  The same
 * N_(act) as act_fwd, on the same stored value: bitwise equal to GEMM then act_fwd. */
static FNN_NOINLINE void N_(act_vecs)(FNN_T *p, int nvec, int act, FNN_T slope) {
    for (int j = 0; j < nvec; j++)
        N_(st)(p + j * FNN_VL, N_(act)(N_(ld)(p + j * FNN_VL), act, slope));
}

/* The microkernel body for an mr_e x (nv_e vectors) sub-tile of the packed MR x NR panels:
 * acc = sum_k a[k*MR + i] * b[k*NR + j];  then, on the valid m x n corner of C (row stride
 * rsc, unit column stride):  C = act(alpha*acc + beta*C + bias).  beta == 0 never reads C.
 * Always inlined with constant mr_e/nv_e, so the accumulators live in registers.  Every
 * element takes the same arithmetic whichever sub-tile computes it (edge tiles go through
 * a padded buffer): results do not depend on how the output is split between threads. */
static inline __attribute__((always_inline)) void
N_(ukr_body)(const int mr_e, const int nv_e, const int arow, long kc, const FNN_T *restrict a,
             const long ars, const long acs, const FNN_T *restrict b, const long bks,
             FNN_T *restrict c, long rsc, int m, int n, FNN_T alpha, FNN_T beta,
             const FNN_T *restrict bias, int act, FNN_T slope) {
    N_(vt) acc[FNN_MR][FNN_NV];
#pragma GCC unroll 16
    for (int i = 0; i < mr_e; i++)
#pragma GCC unroll 8
        for (int j = 0; j < nv_e; j++) acc[i][j] = N_(splat)(0);
    /* fetch the C tile while the k loop runs: when C is large it comes from L3 or memory,
     * and the writeback would otherwise stall on every row */
    for (int i = 0; i < m; i++) {
        __builtin_prefetch(c + i * rsc, 1, 3);
        __builtin_prefetch(c + i * rsc + n - 1, 1, 3);
    }

    if (arow) {
        /* A read in place row-major (acs == 1, ars a run-time row stride): a[i*ars] for 12
         * rows would need 12 address registers and gcc spilled them inside the k loop.
         * Rows are addressed as base[i/4] + {0, 1, 2, 3} * ars instead: 3 bases stepped by
         * one element per k plus 3 offsets.  Same products in the same order. */
        const FNN_T *ab[(FNN_MR + 3) / 4];
#pragma GCC unroll 4
        for (int q = 0; q < (mr_e + 3) / 4; q++) ab[q] = a + q * 4 * ars;
        const long o1 = ars, o2 = 2 * ars, o3 = 3 * ars;
        for (long k = 0; k < kc; k++) {
            N_(vt) bv[FNN_NV];
#pragma GCC unroll 8
            for (int j = 0; j < nv_e; j++) bv[j] = N_(ld)(b + j * FNN_VL);
#pragma GCC unroll 16
            for (int i = 0; i < mr_e; i++) {
                const FNN_T *ap = ab[i / 4];
                FNN_T ai = (i % 4) == 0 ? ap[0] : (i % 4) == 1 ? ap[o1]
                           : (i % 4) == 2 ? ap[o2] : ap[o3];
#pragma GCC unroll 8
                for (int j = 0; j < nv_e; j++) acc[i][j] += ai * bv[j];
            }
#pragma GCC unroll 4
            for (int q = 0; q < (mr_e + 3) / 4; q++) ab[q]++;
            b += bks;
        }
    } else {
        for (long k = 0; k < kc; k++) {
            N_(vt) bv[FNN_NV];
#pragma GCC unroll 8
            for (int j = 0; j < nv_e; j++) bv[j] = N_(ld)(b + j * FNN_VL);
#pragma GCC unroll 16
            for (int i = 0; i < mr_e; i++) {
                FNN_T ai = a[i * ars];
#pragma GCC unroll 8
                for (int j = 0; j < nv_e; j++) acc[i][j] += ai * bv[j];
            }
            a += acs;
            b += bks;
        }
    }

    FNN_T tmp[FNN_MR * FNN_NR] __attribute__((aligned(64)));
    FNN_T btmp[FNN_NR] __attribute__((aligned(64)));
    const int ncols = nv_e * FNN_VL;
    int full = (m == mr_e && n == ncols);
    FNN_T *cp = c;
    long ldc = rsc;
    if (!full) {
        cp = tmp;
        ldc = FNN_NR;
        if (beta != 0) {
            memset(tmp, 0, sizeof tmp);
            for (int i = 0; i < m; i++) memcpy(tmp + i * FNN_NR, c + i * rsc, n * sizeof(FNN_T));
        }
    }
    const FNN_T *bp = bias;
    if (bias && n != ncols) {
        memset(btmp, 0, sizeof btmp);
        memcpy(btmp, bias, n * sizeof(FNN_T));
        bp = btmp;
    }
    /* The writeback, with the activation a compile-time constant in each copy and the
     * common alpha == 1, beta == 0 without its tests: gcc does not unswitch the unrolled
     * tile, and per-vector switches and tests cost a small-K tile (K = 2..10 in small
     * layers) as much as its products.  Same operations per element either way. */
#define FNN_EPI(ACT, PLAIN)                                                                    \
    _Pragma("GCC unroll 16") for (int i = 0; i < mr_e; i++) {                                 \
        _Pragma("GCC unroll 8") for (int j = 0; j < nv_e; j++) {                              \
            N_(vt) v = acc[i][j];                                                             \
            if (!(PLAIN)) {                                                                   \
                if (alpha != 1) v = v * alpha;                                                \
                if (beta == 1) v = v + N_(ld)(cp + i * ldc + j * FNN_VL);                     \
                else if (beta != 0) v = v + beta * N_(ld)(cp + i * ldc + j * FNN_VL);         \
            }                                                                                 \
            if (bp) v = v + N_(ld)(bp + j * FNN_VL);                                          \
            N_(st)(cp + i * ldc + j * FNN_VL, N_(act)(v, ACT, slope));                        \
        }                                                                                     \
    }
    const int plain = alpha == 1 && beta == 0;
    switch (act) {
    case FNN_ACT_RELU:
        if (plain) { FNN_EPI(FNN_ACT_RELU, 1) } else { FNN_EPI(FNN_ACT_RELU, 0) }
        break;
    case FNN_ACT_LEAKY_RELU: FNN_EPI(FNN_ACT_LEAKY_RELU, 0) break;
    /* The activations built on exp run over the stored tile (act_vecs, the same lane-wise
     * arithmetic on the same values, so the same bits).  Unrolled over the 24 accumulators
     * here, the float64 sigmoid/tanh bodies grew past what gcc scalarizes: it kept `acc` in
     * memory for the whole function, k loop included -- the float64 AVX-512 GEMM ran at
     * 22 GFLOP/s instead of 60 (tests/test_codegen.py now checks the k loops).
     * The identity writeback is shared with them (one copy of each less to compile: the
     * plain form skips alpha == 1 and beta == 0, which change no bit). */
    default:
        if (plain) { FNN_EPI(FNN_ACT_IDENTITY, 1) } else { FNN_EPI(FNN_ACT_IDENTITY, 0) }
        if (act != FNN_ACT_IDENTITY)   /* sigmoid, tanh, gelu, gelu_tanh, silu, softplus, elu */
            for (int i = 0; i < mr_e; i++) N_(act_vecs)(cp + i * ldc, nv_e, act, slope);
    }
#undef FNN_EPI
    if (!full)
        for (int i = 0; i < m; i++) memcpy(c + i * rsc, tmp + i * FNN_NR, n * sizeof(FNN_T));
}

/* The FMA ceiling of this variant, for bench/gemm.py: n rounds of MR x NR/VL independent
 * fused multiply-adds on registers (the microkernel's accumulator count, so enough chains
 * to cover the FMA latency), no memory traffic.  2 * n * MR * NR flops.  The asm barrier
 * keeps each round (gcc would otherwise fold the loop); the sum keeps the result live. */
static FNN_NOINLINE FNN_T N_(fma_peak)(long n) {
    N_(vt) acc[FNN_MR][FNN_NV];
    const N_(vt) x = N_(splat)((FNN_T)0.999), y = N_(splat)((FNN_T)1e-3);
#pragma GCC unroll 16
    for (int i = 0; i < FNN_MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < FNN_NV; j++) acc[i][j] = N_(splat)((FNN_T)(i + j));
    for (long r = 0; r < n; r++) {
#pragma GCC unroll 16
        for (int i = 0; i < FNN_MR; i++)
#pragma GCC unroll 8
            for (int j = 0; j < FNN_NV; j++) {
                acc[i][j] = acc[i][j] * x + y;
                FNN_KEEP(acc[i][j]);
            }
    }
    /* constant indices only: a variable one would keep `acc` in memory (see ukr_body) */
    N_(vt) sum = N_(splat)(0);
#pragma GCC unroll 16
    for (int i = 0; i < FNN_MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < FNN_NV; j++) sum = sum + acc[i][j];
    FNN_T lanes[FNN_VL], t = 0;
    N_(st)(lanes, sum);
    for (int l = 0; l < FNN_VL; l++) t += lanes[l];
    return t;
}

/* MR x NR microkernel; an edge tile that fits in half the rows and/or half the columns
 * runs a smaller register tile instead of computing zero padding.
 *   ukr:         A and B packed: a[k*MR + i], b[k*NR + j]
 *   ukr_strided: A element (i, k) at a[i*ars + k*acs], B row k at b + k*bks -- operands
 *                read in place (no packing) or packed (ars=1, acs=MR / bks=NR).  In-place
 *                operands must supply every row/column of the register tile that runs.
 * Same arithmetic either way, so results are bitwise identical. */
#if FNN_MR % 3 == 0
/* a two-thirds-height tile too (12 -> 8 rows on AVX-512, 6 -> 4 on AVX2): a batch of 32 rows
 * runs as 12 + 12 + 8 instead of three 12-row tiles, the last one through the padded
 * buffer (batch sizes are mostly powers of two) */
#define FNN_MR23 (FNN_MR * 2 / 3)
#define FNN_UKR_M23(AROW, ARS, ACS, BKS)                                                     \
    else if (m <= FNN_MR23 && !half_n)                                                        \
        N_(ukr_body)(FNN_MR23, FNN_NV, AROW, kc, a, ARS, ACS, b, BKS, c, rsc, m, n, alpha,     \
                     beta, bias, act, slope);                                                 \
    else if (m <= FNN_MR23)                                                                   \
        N_(ukr_body)(FNN_MR23, FNN_NV / 2, AROW, kc, a, ARS, ACS, b, BKS, c, rsc, m, n, alpha, \
                     beta, bias, act, slope);
#else
#define FNN_UKR_M23(AROW, ARS, ACS, BKS)
#endif
#define FNN_UKR_DISPATCH(AROW, ARS, ACS, BKS)                                                 \
    const int half_m = (FNN_MR % 2 == 0) && m <= FNN_MR / 2;                                  \
    const int half_n = (FNN_NV % 2 == 0) && n <= FNN_NR / 2;                                  \
    if (half_m && !half_n)                                                                    \
        N_(ukr_body)(FNN_MR / 2, FNN_NV, AROW, kc, a, ARS, ACS, b, BKS, c, rsc, m, n, alpha,   \
                     beta, bias, act, slope);                                                 \
    else if (half_m)                                                                          \
        N_(ukr_body)(FNN_MR / 2, FNN_NV / 2, AROW, kc, a, ARS, ACS, b, BKS, c, rsc, m, n,      \
                     alpha, beta, bias, act, slope);                                          \
    FNN_UKR_M23(AROW, ARS, ACS, BKS)                                                          \
    else if (!half_n)                                                                         \
        N_(ukr_body)(FNN_MR, FNN_NV, AROW, kc, a, ARS, ACS, b, BKS, c, rsc, m, n, alpha, beta, \
                     bias, act, slope);                                                       \
    else                                                                                      \
        N_(ukr_body)(FNN_MR, FNN_NV / 2, AROW, kc, a, ARS, ACS, b, BKS, c, rsc, m, n, alpha,   \
                     beta, bias, act, slope);

static FNN_NOINLINE void N_(ukr)(long kc, const FNN_T *restrict a, const FNN_T *restrict b,
                                 FNN_T *restrict c, long rsc, int m, int n, FNN_T alpha,
                                 FNN_T beta, const FNN_T *restrict bias, int act, FNN_T slope) {
    FNN_UKR_DISPATCH(0, 1, FNN_MR, FNN_NR)
}

/* the two in-place layouts get their own code: A row-major (x, dz) and A column-major
 * (dz^T, or a packed panel), whose MR values per k are contiguous.  Separate functions: with
 * all twelve bodies in one, gcc kept the float64 accumulators on the stack (2x slower). */
static FNN_NOINLINE void N_(ukr_rows)(long kc, const FNN_T *restrict a, long ars,
                                      const FNN_T *restrict b, long bks, FNN_T *restrict c,
                                      long rsc, int m, int n, FNN_T alpha, FNN_T beta,
                                      const FNN_T *restrict bias, int act, FNN_T slope) {
    FNN_UKR_DISPATCH(1, ars, 1, bks)
}

static FNN_NOINLINE void N_(ukr_cols)(long kc, const FNN_T *restrict a, long acs,
                                      const FNN_T *restrict b, long bks, FNN_T *restrict c,
                                      long rsc, int m, int n, FNN_T alpha, FNN_T beta,
                                      const FNN_T *restrict bias, int act, FNN_T slope) {
    FNN_UKR_DISPATCH(0, 1, acs, bks)
}

/* A with neither stride 1: gemm.pyx never reads such an A in place (it packs it), so this
 * is a fallback kept for completeness and compiled for the full tile only (each body costs
 * compile time; the tile's arithmetic per element is the same as the smaller ones'). */
static FNN_NOINLINE void N_(ukr_any)(long kc, const FNN_T *restrict a, long ars, long acs,
                                     const FNN_T *restrict b, long bks, FNN_T *restrict c,
                                     long rsc, int m, int n, FNN_T alpha, FNN_T beta,
                                     const FNN_T *restrict bias, int act, FNN_T slope) {
    N_(ukr_body)(FNN_MR, FNN_NV, 0, kc, a, ars, acs, b, bks, c, rsc, m, n, alpha, beta, bias,
                 act, slope);
}

static void N_(ukr_strided)(long kc, const FNN_T *restrict a, long ars, long acs,
                            const FNN_T *restrict b, long bks, FNN_T *restrict c, long rsc,
                            int m, int n, FNN_T alpha, FNN_T beta, const FNN_T *restrict bias,
                            int act, FNN_T slope) {
    if (acs == 1)
        N_(ukr_rows)(kc, a, ars, b, bks, c, rsc, m, n, alpha, beta, bias, act, slope);
    else if (ars == 1)
        N_(ukr_cols)(kc, a, acs, b, bks, c, rsc, m, n, alpha, beta, bias, act, slope);
    else
        N_(ukr_any)(kc, a, ars, acs, b, bks, c, rsc, m, n, alpha, beta, bias, act, slope);
}
#undef FNN_UKR_DISPATCH
#undef FNN_UKR_M23
#ifdef FNN_MR23
#undef FNN_MR23
#endif

/* dst[k*R + i] = src[i*rs + k] for i < rows, k < kc, rows..R zero-filled: the packing of a
 * row-major operand into R-row micro-panels (x into A panels, W into the panels of B = W^T),
 * a transpose done in 4x4 (float) or 2x2 (double) register blocks. */
#if FNN_IS_DOUBLE
typedef double N_(qv) __attribute__((vector_size(16)));
typedef double N_(ov) __attribute__((vector_size(32)));
#define FNN_Q 2
#define FNN_O 4
#else
typedef float N_(qv) __attribute__((vector_size(16)));
typedef float N_(ov) __attribute__((vector_size(32)));
#define FNN_Q 4
#define FNN_O 8
#endif
static FNN_NOINLINE void N_(pack_t)(long rows, long kc, const FNN_T *restrict src, long rs,
                                    FNN_T *restrict dst, long R) {
    long i = 0, k, t;
    /* a partial panel is zeroed first in one go: padding row by row after the transpose
     * became one memset call per k (K = 64 of them for a 3-column edge panel) */
    if (rows < R) memset(dst, 0, (size_t)kc * R * sizeof(FNN_T));
#if FNN_VL * (FNN_IS_DOUBLE ? 8 : 4) >= 32
    /* with 32-byte vectors (AVX2, AVX-512): 8x8 float / 4x4 double blocks, three shuffle
     * stages; twice the 16-byte blocks' throughput (packing W^T was 13 % of a two-thread
     * CS231n step) */
    for (; i + FNN_O <= rows; i += FNN_O) {
        const FNN_T *s = src + i * rs;
        for (k = 0; k + FNN_O <= kc; k += FNN_O) {
#if FNN_IS_DOUBLE
            N_(ov) r0, r1, r2, r3;
            memcpy(&r0, s + k, sizeof r0);
            memcpy(&r1, s + rs + k, sizeof r1);
            memcpy(&r2, s + 2 * rs + k, sizeof r2);
            memcpy(&r3, s + 3 * rs + k, sizeof r3);
            N_(ov) t0 = FNN_SHUF4D(r0, r1, 0, 4, 2, 6), t1 = FNN_SHUF4D(r0, r1, 1, 5, 3, 7);
            N_(ov) t2 = FNN_SHUF4D(r2, r3, 0, 4, 2, 6), t3 = FNN_SHUF4D(r2, r3, 1, 5, 3, 7);
            N_(ov) c[4] = {FNN_SHUF4D(t0, t2, 0, 1, 4, 5), FNN_SHUF4D(t1, t3, 0, 1, 4, 5),
                           FNN_SHUF4D(t0, t2, 2, 3, 6, 7), FNN_SHUF4D(t1, t3, 2, 3, 6, 7)};
#else
            N_(ov) r[8], t[8], u[8];
            for (int q = 0; q < 8; q++) memcpy(&r[q], s + q * rs + k, sizeof r[q]);
            for (int q = 0; q < 8; q += 2) {      /* interleave row pairs within lanes */
                t[q] = FNN_SHUF8(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
                t[q + 1] = FNN_SHUF8(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
            }
            for (int q = 0; q < 8; q += 4) {      /* pairs of pairs */
                u[q] = FNN_SHUF8(t[q], t[q + 2], 0, 1, 8, 9, 4, 5, 12, 13);
                u[q + 1] = FNN_SHUF8(t[q], t[q + 2], 2, 3, 10, 11, 6, 7, 14, 15);
                u[q + 2] = FNN_SHUF8(t[q + 1], t[q + 3], 0, 1, 8, 9, 4, 5, 12, 13);
                u[q + 3] = FNN_SHUF8(t[q + 1], t[q + 3], 2, 3, 10, 11, 6, 7, 14, 15);
            }
            N_(ov) c[8];                          /* the two 16-byte halves */
            for (int q = 0; q < 4; q++) {
                c[q] = FNN_SHUF8(u[q], u[q + 4], 0, 1, 2, 3, 8, 9, 10, 11);
                c[q + 4] = FNN_SHUF8(u[q], u[q + 4], 4, 5, 6, 7, 12, 13, 14, 15);
            }
#endif
            for (int q = 0; q < FNN_O; q++) memcpy(dst + (k + q) * R + i, &c[q], sizeof c[q]);
        }
        for (; k < kc; k++)
            for (t = 0; t < FNN_O; t++) dst[k * R + i + t] = s[t * rs + k];
    }
#endif
    for (; i + FNN_Q <= rows; i += FNN_Q) {
        const FNN_T *s = src + i * rs;
        for (k = 0; k + FNN_Q <= kc; k += FNN_Q) {
            N_(qv) r0, r1;
            memcpy(&r0, s + k, sizeof r0);
            memcpy(&r1, s + rs + k, sizeof r1);
#if FNN_IS_DOUBLE
            N_(qv) c0 = FNN_SHUF2(r0, r1, 0, 2), c1 = FNN_SHUF2(r0, r1, 1, 3);
            memcpy(dst + k * R + i, &c0, sizeof c0);
            memcpy(dst + (k + 1) * R + i, &c1, sizeof c1);
#else
            N_(qv) r2, r3;
            memcpy(&r2, s + 2 * rs + k, sizeof r2);
            memcpy(&r3, s + 3 * rs + k, sizeof r3);
            N_(qv) t0 = FNN_SHUF4(r0, r1, 0, 4, 1, 5), t1 = FNN_SHUF4(r0, r1, 2, 6, 3, 7);
            N_(qv) t2 = FNN_SHUF4(r2, r3, 0, 4, 1, 5), t3 = FNN_SHUF4(r2, r3, 2, 6, 3, 7);
            N_(qv) c0 = FNN_SHUF4(t0, t2, 0, 1, 4, 5), c1 = FNN_SHUF4(t0, t2, 2, 3, 6, 7);
            N_(qv) c2 = FNN_SHUF4(t1, t3, 0, 1, 4, 5), c3 = FNN_SHUF4(t1, t3, 2, 3, 6, 7);
            memcpy(dst + k * R + i, &c0, sizeof c0);
            memcpy(dst + (k + 1) * R + i, &c1, sizeof c1);
            memcpy(dst + (k + 2) * R + i, &c2, sizeof c2);
            memcpy(dst + (k + 3) * R + i, &c3, sizeof c3);
#endif
        }
        for (; k < kc; k++)
            for (t = 0; t < FNN_Q; t++) dst[k * R + i + t] = s[t * rs + k];
    }
    for (; i < rows; i++)
        for (k = 0; k < kc; k++) dst[k * R + i] = src[i * rs + k];
}
#undef FNN_Q
#undef FNN_O

/* y = act(x), elementwise over n contiguous values (x == y allowed). */
static FNN_NOINLINE void N_(act_fwd)(long n, const FNN_T *x, FNN_T *y, int act, FNN_T slope) {
    long i = 0;
    for (; i + FNN_VL <= n; i += FNN_VL) N_(st)(y + i, N_(act)(N_(ld)(x + i), act, slope));
    if (i < n) {
        FNN_T t[FNN_VL] __attribute__((aligned(64))) = {0};
        memcpy(t, x + i, (n - i) * sizeof(FNN_T));
        N_(st)(t, N_(act)(N_(ld)(t), act, slope));
        memcpy(y + i, t, (n - i) * sizeof(FNN_T));
    }
}

/* dz = g * act'(y) from the saved output y (g == dz allowed).  relu/leaky_relu use the
 * mask y > 0 (derivative at 0 is the negative branch, as in PyTorch). */
/* torch.optim.SGD's update, element by element (see optim.pyx):
 *   d = sign * g;  d += wd * p;  buf = d (first step) or mom * buf + damp1 * d;
 *   d = d + mom * buf if nesterov else buf;  p -= lr * d
 * Each flag combination is its own branch-free loop, which gcc vectorizes with this
 * variant's vectors (the Cython loop only got the baseline's 16-byte ones). */
static inline __attribute__((always_inline)) void
N_(sgd_loop)(long n, FNN_T *restrict p, const FNN_T *restrict g, FNN_T *restrict buf,
             FNN_T lr, FNN_T mom, FNN_T damp1, FNN_T wd, FNN_T sign, const int has_wd,
             const int has_mom, const int first, const int nesterov) {
    for (long i = 0; i < n; i++) {
        FNN_T d = sign * g[i];
        if (has_wd) d = d + wd * p[i];
        if (has_mom) {
            FNN_T b = first ? d : mom * buf[i] + damp1 * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] = p[i] - lr * d;
    }
}

static FNN_NOINLINE void N_(sgd)(long n, FNN_T *restrict p, const FNN_T *restrict g,
                                 FNN_T *restrict buf, FNN_T lr, FNN_T mom, FNN_T damp1,
                                 FNN_T wd, FNN_T sign, int flags) {
#define FNN_SGD_CASE(WD, MOM, FIRST, NEST)                                                     \
    case (WD) * FNN_SGD_WD + (MOM) * FNN_SGD_MOMENTUM + (FIRST) * FNN_SGD_FIRST +             \
        (NEST) * FNN_SGD_NESTEROV:                                                            \
        N_(sgd_loop)(n, p, g, buf, lr, mom, damp1, wd, sign, WD, MOM, FIRST, NEST);           \
        break;
    switch (flags) {
        FNN_SGD_CASE(0, 0, 0, 0) FNN_SGD_CASE(1, 0, 0, 0)
        FNN_SGD_CASE(0, 1, 0, 0) FNN_SGD_CASE(1, 1, 0, 0)
        FNN_SGD_CASE(0, 1, 1, 0) FNN_SGD_CASE(1, 1, 1, 0)
        FNN_SGD_CASE(0, 1, 0, 1) FNN_SGD_CASE(1, 1, 0, 1)
        FNN_SGD_CASE(0, 1, 1, 1) FNN_SGD_CASE(1, 1, 1, 1)
    default: break;   /* first/nesterov without momentum: optim.pyx never passes them */
    }
#undef FNN_SGD_CASE
}

/* one sqrt instruction (setup.py compiles with -fno-math-errno), so these loops vectorize */
#if FNN_IS_DOUBLE
#define FNN_SQRT __builtin_sqrt
#else
#define FNN_SQRT __builtin_sqrtf
#endif

/* torch.optim.Adam / AdamW's update (_single_tensor_adam), element by element (see optim.pyx):
 *   d = sign * g;  p *= decay (AdamW) or d += wd * p (Adam);
 *   m = m.lerp(d, w1);  v = beta2 * v + c2 * d * d;  vmax = max(vmax, v) (amsgrad);
 *   p += neg_step * m / (sqrt(v or vmax) / bc2_sqrt + eps)
 * torch's lerp: self + w * (end - self) for w < 0.5, else end - (end - self) * (1 - w). */
static inline __attribute__((always_inline)) void
N_(adam_loop)(long n, FNN_T *restrict p, const FNN_T *restrict g, FNN_T *restrict m,
              FNN_T *restrict v, FNN_T *restrict vmax, FNN_T sign, FNN_T wd, FNN_T decay,
              FNN_T w1, FNN_T omw1, FNN_T beta2, FNN_T c2, FNN_T bc2s, FNN_T eps, FNN_T nstep,
              const int has_wd, const int decoupled, const int amsgrad, const int lerp_hi) {
    for (long i = 0; i < n; i++) {
        FNN_T d = sign * g[i], pi = p[i];
        if (has_wd) {
            if (decoupled) pi = pi * decay;
            else d = d + wd * pi;
        }
        FNN_T mi = lerp_hi ? d - (d - m[i]) * omw1 : m[i] + w1 * (d - m[i]);
        FNN_T vi = v[i] * beta2 + c2 * d * d;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            vi = vmax[i] > vi ? vmax[i] : vi;
            vmax[i] = vi;
        }
        p[i] = pi + nstep * (mi / (FNN_SQRT(vi) / bc2s + eps));
    }
}

static FNN_NOINLINE void N_(adam)(long n, FNN_T *restrict p, const FNN_T *restrict g,
                                  FNN_T *restrict m, FNN_T *restrict v, FNN_T *restrict vmax,
                                  const fnn_adam_args *a) {
    FNN_T sign = (FNN_T)a->sign, wd = (FNN_T)a->wd, decay = (FNN_T)a->decay;
    FNN_T w1 = (FNN_T)a->w1, omw1 = (FNN_T)(1 - (FNN_T)a->w1), beta2 = (FNN_T)a->beta2;
    FNN_T c2 = (FNN_T)a->c2, bc2s = (FNN_T)a->bc2_sqrt, eps = (FNN_T)a->eps;
    FNN_T nstep = (FNN_T)a->neg_step;
    int has_wd = a->wd != 0 || a->decay != 1, decoupled = a->decay != 1;
    int lerp_hi = !(a->w1 < 0.5);
#define FNN_ADAM_CASE(WD, DEC, AMS, HI)                                                       \
    if (has_wd == (WD) && decoupled == (DEC) && (a->amsgrad != 0) == (AMS) && lerp_hi == (HI)) { \
        N_(adam_loop)(n, p, g, m, v, vmax, sign, wd, decay, w1, omw1, beta2, c2, bc2s, eps,   \
                      nstep, WD, DEC, AMS, HI);                                               \
        return;                                                                               \
    }
    FNN_ADAM_CASE(0, 0, 0, 0) FNN_ADAM_CASE(1, 0, 0, 0) FNN_ADAM_CASE(1, 1, 0, 0)
    FNN_ADAM_CASE(0, 0, 1, 0) FNN_ADAM_CASE(1, 0, 1, 0) FNN_ADAM_CASE(1, 1, 1, 0)
    FNN_ADAM_CASE(0, 0, 0, 1) FNN_ADAM_CASE(1, 0, 0, 1) FNN_ADAM_CASE(1, 1, 0, 1)
    FNN_ADAM_CASE(0, 0, 1, 1) FNN_ADAM_CASE(1, 0, 1, 1) FNN_ADAM_CASE(1, 1, 1, 1)
#undef FNN_ADAM_CASE
}

/* torch.optim.RMSprop's update (_single_tensor_rmsprop), element by element:
 *   d = sign * g;  d += wd * p;  sq = alpha * sq + c * d * d;
 *   avg = sqrt(sq - ga * ga) with ga = ga.lerp(d, c) (centered), else sqrt(sq);  avg += eps;
 *   buf = momentum * buf + d / avg, p += neg_lr * buf (momentum > 0), else p += neg_lr * d / avg */
static inline __attribute__((always_inline)) void
N_(rmsprop_loop)(long n, FNN_T *restrict p, const FNN_T *restrict g, FNN_T *restrict sq,
                 FNN_T *restrict ga, FNN_T *restrict buf, FNN_T sign, FNN_T wd, FNN_T alpha,
                 FNN_T c, FNN_T omc, FNN_T eps, FNN_T mom, FNN_T nlr, const int has_wd,
                 const int centered, const int has_mom, const int lerp_hi) {
    for (long i = 0; i < n; i++) {
        FNN_T d = sign * g[i];
        if (has_wd) d = d + wd * p[i];
        FNN_T s = sq[i] * alpha + c * d * d;
        sq[i] = s;
        if (centered) {
            FNN_T a = lerp_hi ? d - (d - ga[i]) * omc : ga[i] + c * (d - ga[i]);
            ga[i] = a;
            s = s + (FNN_T)(-1) * a * a;
        }
        FNN_T avg = FNN_SQRT(s) + eps;
        if (has_mom) {
            FNN_T b = buf[i] * mom + d / avg;
            buf[i] = b;
            p[i] = p[i] + nlr * b;
        } else {
            p[i] = p[i] + nlr * (d / avg);
        }
    }
}

static FNN_NOINLINE void N_(rmsprop)(long n, FNN_T *restrict p, const FNN_T *restrict g,
                                     FNN_T *restrict sq, FNN_T *restrict ga,
                                     FNN_T *restrict buf, const fnn_rmsprop_args *a) {
    FNN_T sign = (FNN_T)a->sign, wd = (FNN_T)a->wd, alpha = (FNN_T)a->alpha;
    FNN_T c = (FNN_T)a->c, omc = (FNN_T)(1 - (FNN_T)a->c), eps = (FNN_T)a->eps;
    FNN_T mom = (FNN_T)a->momentum, nlr = (FNN_T)a->neg_lr;
    int has_wd = a->wd != 0, centered = a->centered != 0, has_mom = a->momentum > 0;
    int lerp_hi = centered && !(a->c < 0.5);     /* only the centered lerp reads it */
#define FNN_RMS_CASE(WD, CEN, MOM, HI)                                                        \
    if (has_wd == (WD) && centered == (CEN) && has_mom == (MOM) && lerp_hi == (HI)) {          \
        N_(rmsprop_loop)(n, p, g, sq, ga, buf, sign, wd, alpha, c, omc, eps, mom, nlr, WD, CEN, \
                         MOM, HI);                                                            \
        return;                                                                               \
    }
    FNN_RMS_CASE(0, 0, 0, 0) FNN_RMS_CASE(1, 0, 0, 0) FNN_RMS_CASE(0, 1, 0, 0)
    FNN_RMS_CASE(1, 1, 0, 0) FNN_RMS_CASE(0, 0, 1, 0) FNN_RMS_CASE(1, 0, 1, 0)
    FNN_RMS_CASE(0, 1, 1, 0) FNN_RMS_CASE(1, 1, 1, 0)
    FNN_RMS_CASE(0, 1, 0, 1) FNN_RMS_CASE(1, 1, 0, 1)
    FNN_RMS_CASE(0, 1, 1, 1) FNN_RMS_CASE(1, 1, 1, 1)
#undef FNN_RMS_CASE
}
#undef FNN_SQRT

static FNN_NOINLINE void N_(act_bwd)(long n, const FNN_T *g, const FNN_T *y, FNN_T *dz, int act,
                                     FNN_T slope) {
    long i;
    switch (act) {
    case FNN_ACT_RELU:
        for (i = 0; i < n; i++) dz[i] = y[i] > 0 ? g[i] : (FNN_T)0;
        break;
    case FNN_ACT_LEAKY_RELU:
        for (i = 0; i < n; i++) dz[i] = y[i] > 0 ? g[i] : g[i] * slope;
        break;
    case FNN_ACT_SIGMOID:
        for (i = 0; i < n; i++) dz[i] = g[i] * (y[i] * (1 - y[i]));
        break;
    case FNN_ACT_TANH:
        for (i = 0; i < n; i++) dz[i] = g[i] * (1 - y[i] * y[i]);
        break;
    case FNN_ACT_ELU:       /* from the output: alpha exp(x) = y + alpha for x <= 0 */
        for (i = 0; i < n; i++) dz[i] = y[i] > 0 ? g[i] : g[i] * (y[i] + slope);
        break;
    /* these read the saved input s (y holds it): act'(s) */
#define FNN_DACT(D)                                                                                for (i = 0; i + FNN_VL <= n; i += FNN_VL) {                                                       N_(vt) s = N_(ld)(y + i);                                                                     N_(st)(dz + i, N_(ld)(g + i) * (D));                                                      }                                                                                             if (i < n) {                                                                                      FNN_T ts[FNN_VL] __attribute__((aligned(64))) = {0};                                          FNN_T tg[FNN_VL] __attribute__((aligned(64))) = {0};                                          memcpy(ts, y + i, (n - i) * sizeof(FNN_T));                                                   memcpy(tg, g + i, (n - i) * sizeof(FNN_T));                                                   N_(vt) s = N_(ld)(ts);                                                                        N_(st)(tg, N_(ld)(tg) * (D));                                                                 memcpy(dz + i, tg, (n - i) * sizeof(FNN_T));                                              }
    case FNN_ACT_GELU: FNN_DACT(N_(dgelu)(s)) break;
    case FNN_ACT_GELU_TANH: FNN_DACT(N_(dgelu_tanh)(s)) break;
    case FNN_ACT_SILU: FNN_DACT(N_(dsilu)(s)) break;
    case FNN_ACT_SOFTPLUS: FNN_DACT(N_(dsoftplus)(s, slope)) break;
#undef FNN_DACT
    default:
        if (dz != g) memmove(dz, g, n * sizeof(FNN_T));
    }
}

#undef N_
#undef FNN_NV
/* the including file defines these per variant */
#undef FNN_T
#undef FNN_IS_DOUBLE
#undef FNN_VL
#undef FNN_MR
#undef FNN_NR
#undef FNN_SFX
