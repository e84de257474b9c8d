/* fastnn's C layer: vector microkernels for several instruction sets, chosen at run time.
 *
 * The module is compiled with baseline flags; the AVX2+FMA and AVX-512 variants are compiled
 * for their ISA through a target pragma and only called when the CPU reports it
 * (__builtin_cpu_supports), so one build runs everywhere.  The "generic" variant is the same
 * code with the compiler's baseline vectors (SSE2 on x86-64, NEON on arm64).
 */
#ifndef FASTNN_SIMD_H
#define FASTNN_SIMD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "fnn_types.h"

/* two-operand shuffles of 16-byte vectors (GCC >= 12 and clang have __builtin_shufflevector) */
/* ... and of 32-byte vectors: 8 floats (FNN_SHUF8) or 4 doubles (FNN_SHUF4D) */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FNN_SHUF4(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#define FNN_SHUF2(a, b, i, j) __builtin_shufflevector(a, b, i, j)
#define FNN_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7)                                      \
    __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#define FNN_SHUF4D(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
typedef int32_t fnn_v4si __attribute__((vector_size(16)));
typedef int64_t fnn_v2di __attribute__((vector_size(16)));
typedef int32_t fnn_v8si __attribute__((vector_size(32)));
typedef int64_t fnn_v4di __attribute__((vector_size(32)));
#define FNN_SHUF4(a, b, i, j, k, l) __builtin_shuffle(a, b, (fnn_v4si){i, j, k, l})
#define FNN_SHUF2(a, b, i, j) __builtin_shuffle(a, b, (fnn_v2di){i, j})
#define FNN_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7)                                      \
    __builtin_shuffle(a, b, (fnn_v8si){i0, i1, i2, i3, i4, i5, i6, i7})
#define FNN_SHUF4D(a, b, i, j, k, l) __builtin_shuffle(a, b, (fnn_v4di){i, j, k, l})
#endif

#define FNN_NOINLINE __attribute__((noinline))
/* an empty asm that claims to change a vector register: keeps a computation in place */
#if defined(__x86_64__) || defined(__i386__)
#define FNN_KEEP(v) __asm__ volatile("" : "+v"(v))
#elif defined(__aarch64__)
#define FNN_KEEP(v) __asm__ volatile("" : "+w"(v))
#else
#define FNN_KEEP(v) __asm__ volatile("" : "+m"(v))
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FNN_X86 1
#else
#define FNN_X86 0
#endif

#if defined(__clang__)
#define FNN_TARGET_PUSH_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define FNN_TARGET_PUSH_AVX512 _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx2,fma\"))), apply_to = function)")
#define FNN_TARGET_POP _Pragma("clang attribute pop")
#else
#define FNN_TARGET_PUSH_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define FNN_TARGET_PUSH_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx2,fma\")")
#define FNN_TARGET_POP _Pragma("GCC pop_options")
#endif

/* ---- generic (baseline ISA): 16-byte vectors ---- */
#define FNN_T float
#define FNN_IS_DOUBLE 0
#define FNN_VL 4
#define FNN_MR 4
#define FNN_NR 8
#define FNN_SFX s_generic
#include "fnn_simd_impl.h"

#define FNN_T double
#define FNN_IS_DOUBLE 1
#define FNN_VL 2
#define FNN_MR 4
#define FNN_NR 4
#define FNN_SFX d_generic
#include "fnn_simd_impl.h"

#if FNN_X86
/* ---- AVX2 + FMA: 16 ymm registers, 12 accumulators ---- */
FNN_TARGET_PUSH_AVX2
#define FNN_T float
#define FNN_IS_DOUBLE 0
#define FNN_VL 8
#define FNN_MR 6
#define FNN_NR 16
#define FNN_SFX s_avx2
#include "fnn_simd_impl.h"

#define FNN_T double
#define FNN_IS_DOUBLE 1
#define FNN_VL 4
#define FNN_MR 6
#define FNN_NR 8
#define FNN_SFX d_avx2
#include "fnn_simd_impl.h"
FNN_TARGET_POP

/* ---- AVX-512F: 32 zmm registers, 24 accumulators ---- */
FNN_TARGET_PUSH_AVX512
#define FNN_T float
#define FNN_IS_DOUBLE 0
#define FNN_VL 16
#define FNN_MR 12
#define FNN_NR 32
#define FNN_SFX s_avx512
#include "fnn_simd_impl.h"

#define FNN_T double
#define FNN_IS_DOUBLE 1
#define FNN_VL 8
#define FNN_MR 12
#define FNN_NR 16
#define FNN_SFX d_avx512
#include "fnn_simd_impl.h"
FNN_TARGET_POP
#endif

__attribute__((unused)) static const char *fnn_variant_names[FNN_N_VARIANTS] = {"generic", "avx2", "avx512"};

/* blocking: the kc x nr B micro-panel plus two mr x kc A micro-panels stay in L1 (48 KB on
 * the Xeon we tuned on: kc=256 for float64 AVX-512 overflowed it and halved the speed),
 * the mc x kc A block in L2, the kc x nc B block in L3.  bench/tune.py re-measures. */
static fnn_kern_s fnn_kerns_s[FNN_N_VARIANTS] = {
    {4, 8, 256, 128, 2048, ukr_s_generic, ukr_strided_s_generic, pack_t_s_generic, act_fwd_s_generic, act_bwd_s_generic, sgd_s_generic, adam_s_generic, rmsprop_s_generic},
#if FNN_X86
    {6, 16, 256, 144, 3072, ukr_s_avx2, ukr_strided_s_avx2, pack_t_s_avx2, act_fwd_s_avx2, act_bwd_s_avx2, sgd_s_avx2, adam_s_avx2, rmsprop_s_avx2},
    {12, 32, 256, 96, 3072, ukr_s_avx512, ukr_strided_s_avx512, pack_t_s_avx512, act_fwd_s_avx512, act_bwd_s_avx512, sgd_s_avx512, adam_s_avx512, rmsprop_s_avx512},
#else
    {4, 8, 256, 128, 2048, ukr_s_generic, ukr_strided_s_generic, pack_t_s_generic, act_fwd_s_generic, act_bwd_s_generic, sgd_s_generic, adam_s_generic, rmsprop_s_generic},
    {4, 8, 256, 128, 2048, ukr_s_generic, ukr_strided_s_generic, pack_t_s_generic, act_fwd_s_generic, act_bwd_s_generic, sgd_s_generic, adam_s_generic, rmsprop_s_generic},
#endif
};
static fnn_kern_d fnn_kerns_d[FNN_N_VARIANTS] = {
    {4, 4, 256, 64, 2048, ukr_d_generic, ukr_strided_d_generic, pack_t_d_generic, act_fwd_d_generic, act_bwd_d_generic, sgd_d_generic, adam_d_generic, rmsprop_d_generic},
#if FNN_X86
    {6, 8, 192, 72, 3072, ukr_d_avx2, ukr_strided_d_avx2, pack_t_d_avx2, act_fwd_d_avx2, act_bwd_d_avx2, sgd_d_avx2, adam_d_avx2, rmsprop_d_avx2},
    {12, 16, 192, 48, 3072, ukr_d_avx512, ukr_strided_d_avx512, pack_t_d_avx512, act_fwd_d_avx512, act_bwd_d_avx512, sgd_d_avx512, adam_d_avx512, rmsprop_d_avx512},
#else
    {4, 4, 256, 64, 2048, ukr_d_generic, ukr_strided_d_generic, pack_t_d_generic, act_fwd_d_generic, act_bwd_d_generic, sgd_d_generic, adam_d_generic, rmsprop_d_generic},
    {4, 4, 256, 64, 2048, ukr_d_generic, ukr_strided_d_generic, pack_t_d_generic, act_fwd_d_generic, act_bwd_d_generic, sgd_d_generic, adam_d_generic, rmsprop_d_generic},
#endif
};

/* The FMA ceiling loop of a variant (fma_peak in fnn_simd_impl.h): returns a value that
 * depends on every accumulator; *flops receives the flops it ran. */
static double fnn_fma_peak(int variant, int is_double, long n, double *flops) {
    const int v = variant;
    if (is_double) {
        const fnn_kern_d *k = &fnn_kerns_d[v];
        *flops = 2.0 * n * k->mr * k->nr;
#if FNN_X86
        if (v == FNN_VARIANT_AVX2) return fma_peak_d_avx2(n);
        if (v == FNN_VARIANT_AVX512) return fma_peak_d_avx512(n);
#endif
        return fma_peak_d_generic(n);
    }
    const fnn_kern_s *k = &fnn_kerns_s[v];
    *flops = 2.0 * n * k->mr * k->nr;
#if FNN_X86
    if (v == FNN_VARIANT_AVX2) return fma_peak_s_avx2(n);
    if (v == FNN_VARIANT_AVX512) return fma_peak_s_avx512(n);
#endif
    return fma_peak_s_generic(n);
}

/* Which variants this CPU can run. */
static int fnn_variant_supported(int v) {
    if (v == FNN_VARIANT_GENERIC) return 1;
#if FNN_X86
    __builtin_cpu_init();
    if (v == FNN_VARIANT_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (v == FNN_VARIANT_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* ---- per-thread packing workspace ----
 * Grow-only, 64-byte aligned, one per OS thread (OpenMP workers and every Python thread
 * have their own), freed when the thread exits.  Never shared, so concurrent calls from
 * several Python threads are safe. */
typedef struct {
    void *p;
    size_t n;
} fnn_ws;
static pthread_key_t fnn_ws_key;
static pthread_once_t fnn_ws_once = PTHREAD_ONCE_INIT;
static int fnn_ws_key_ok = 0;
static void fnn_ws_free(void *w) {
    if (w) {
        free(((fnn_ws *)w)->p);
        free(w);
    }
}
static void fnn_ws_init(void) { fnn_ws_key_ok = pthread_key_create(&fnn_ws_key, fnn_ws_free) == 0; }
static void *fnn_workspace(size_t bytes) {
    pthread_once(&fnn_ws_once, fnn_ws_init);
    if (!fnn_ws_key_ok) return NULL;
    fnn_ws *w = (fnn_ws *)pthread_getspecific(fnn_ws_key);
    if (!w) {
        w = (fnn_ws *)calloc(1, sizeof *w);
        if (!w) return NULL;
        if (pthread_setspecific(fnn_ws_key, w) != 0) {
            free(w);
            return NULL;
        }
    }
    if (w->n < bytes) {
        free(w->p);
        size_t sz = (bytes + 63) & ~(size_t)63;
        w->p = aligned_alloc(64, sz);
        w->n = w->p ? sz : 0;
    }
    return w->p;
}

#endif
