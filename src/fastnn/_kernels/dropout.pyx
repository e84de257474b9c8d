# cython: language_level=3
"""Dropout's kernels: masks from a counter-based RNG.

The mask of one Dropout forward is a pure function of (seed, step, element index): the key
``dropout_key(seed, step)`` (two SplitMix64 finalizers) and, for the element at flat index
``i = row * n + col`` of the (m, n) value, the 32 high bits of ``mix64(key + (i + 1) *
0x9E3779B97F4A7C15)`` -- the i-th output of a SplitMix64 stream seeded with the key.  The
element is kept when those bits are >= ``thresh = floor(p * 2**32)`` (an integer compare: no
float rounding), so P(keep) = 1 - thresh / 2**32.  Since each element's bits depend on its
index only, rows can be shared out over threads in any way and the result is bitwise the
same for any thread count; backward regenerates the very same bits from the key.

    y = x * m,  m = scale (= 1 / (1 - p)) where kept, else 0     (forward and backward alike)

The NumPy twin is fastnn._reference.dropout_bits / dropout_mask (uint64 arithmetic).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t
from ._core cimport current_engine, current_variant, elem_threads, loop_threads
from ._views cimport cptr2, ptr2, row_stride
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #define FNN_GOLDEN 0x9E3779B97F4A7C15ULL
    static inline uint64_t fnn_mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    static inline uint64_t fnn_dropout_key(uint64_t seed, uint64_t step) {
        return fnn_mix64(fnn_mix64(seed ^ 0x5851F42D4C957F2DULL) + step * FNN_GOLDEN);
    }
    /* y[j] = x[j] * (bits(idx0 + j) >= t ? s : 0) for one row of n values, compiled for
     * each kernel variant (gcc vectorizes it; the AVX variants compare in signed 64 bits --
     * both sides are < 2**32 and AVX2 has no unsigned compare; with clang every variant
     * runs the generic code).  Every variant computes the same bits and products. */
    #define FNN_DROP_ROW(T, NAME, U)                                                     \
    static void NAME(long n, const T *x, T *y, uint64_t key, uint64_t idx0, uint32_t t,  \
                     T s) {                                                              \
        const uint64_t z0 = key + (idx0 + 1) * FNN_GOLDEN;                               \
        const U ti = (U)t;                                                               \
        const T zero = 0;                                                                \
        for (long j = 0; j < n; j++) {                                                   \
            U u = (U)(fnn_mix64(z0 + (uint64_t)j * FNN_GOLDEN) >> 32);                   \
            y[j] = x[j] * (u >= ti ? s : zero);                                          \
        }                                                                                \
    }
    FNN_DROP_ROW(float, fnn_drop_row_s_generic, uint32_t)
    FNN_DROP_ROW(double, fnn_drop_row_d_generic, uint32_t)
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
    #define FNN_DROP_X86 1
    #pragma GCC push_options
    #pragma GCC target("avx2,fma")
    FNN_DROP_ROW(float, fnn_drop_row_s_avx2, int64_t)
    FNN_DROP_ROW(double, fnn_drop_row_d_avx2, int64_t)
    #pragma GCC pop_options
    #pragma GCC push_options
    #pragma GCC target("avx512f,avx512dq,avx2,fma")
    FNN_DROP_ROW(float, fnn_drop_row_s_avx512, int64_t)
    FNN_DROP_ROW(double, fnn_drop_row_d_avx512, int64_t)
    #pragma GCC pop_options
    #else
    #define FNN_DROP_X86 0
    #endif
    typedef void (*fnn_drop_s_t)(long, const float *, float *, uint64_t, uint64_t, uint32_t,
                                 float);
    typedef void (*fnn_drop_d_t)(long, const double *, double *, uint64_t, uint64_t,
                                 uint32_t, double);
    /* the row kernel of variant v (FNN_VARIANT_*: 0 generic, 1 avx2, 2 avx512); AVX-512
     * also needs AVX512DQ (64-bit multiplies), else it runs the AVX2 code */
    static fnn_drop_s_t fnn_drop_row_s(int v) {
    #if FNN_DROP_X86
        if (v == 2 && __builtin_cpu_supports("avx512dq")) return fnn_drop_row_s_avx512;
        if (v >= 1) return fnn_drop_row_s_avx2;
    #endif
        return fnn_drop_row_s_generic;
    }
    static fnn_drop_d_t fnn_drop_row_d(int v) {
    #if FNN_DROP_X86
        if (v == 2 && __builtin_cpu_supports("avx512dq")) return fnn_drop_row_d_avx512;
        if (v >= 1) return fnn_drop_row_d_avx2;
    #endif
        return fnn_drop_row_d_generic;
    }
    static void fnn_drop_bits(long n, uint32_t *out, uint64_t key, uint64_t idx0) {
        const uint64_t z0 = key + (idx0 + 1) * FNN_GOLDEN;
        for (long j = 0; j < n; j++)
            out[j] = (uint32_t)(fnn_mix64(z0 + (uint64_t)j * FNN_GOLDEN) >> 32);
    }
    """
    uint64_t fnn_dropout_key(uint64_t seed, uint64_t step) noexcept nogil
    ctypedef void (*fnn_drop_s_t)(long, const float *, float *, uint64_t, uint64_t, uint32_t,
                                  float) noexcept nogil
    ctypedef void (*fnn_drop_d_t)(long, const double *, double *, uint64_t, uint64_t,
                                  uint32_t, double) noexcept nogil
    fnn_drop_s_t fnn_drop_row_s(int v) noexcept nogil
    fnn_drop_d_t fnn_drop_row_d(int v) noexcept nogil
    void fnn_drop_bits(long n, uint32_t *out, uint64_t key, uint64_t idx0) noexcept nogil


cdef uint64_t dropout_key(uint64_t seed, uint64_t step) noexcept nogil:
    return fnn_dropout_key(seed, step)


cdef inline void _row(int v, Py_ssize_t n, const floating *x, floating *y, uint64_t key,
                      uint64_t idx0, uint32_t thresh, floating scale) noexcept nogil:
    # variant v's row code (the lookup costs ~1 ns a row)
    if floating is float:
        fnn_drop_row_s(v)(n, x, y, key, idx0, thresh, scale)
    else:
        fnn_drop_row_d(v)(n, x, y, key, idx0, thresh, scale)


cdef void dropout_apply(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                        floating *y, Py_ssize_t rsy, uint64_t key, uint32_t thresh,
                        floating scale, int n_threads) noexcept nogil:
    """y = x * mask for m rows of n contiguous values (x == y allowed); each thread owns
    whole rows, and the mask of element (i, j) depends on i * n + j only.  The current
    kernel variant's row code (every variant computes the same bits and products)."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads), v = current_variant()
    if nt == 1:
        for i in range(m):
            _row(v, n, x + i * rsx, y + i * rsy, key, <uint64_t>(i * n), thresh, scale)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _row(v, n, x + i * rsx, y + i * rsy, key, <uint64_t>(i * n), thresh, scale)


# ------------------------------------------------------------------ Python entry points
def key(uint64_t seed, uint64_t step):
    """The mask key of forward number `step` of a Dropout seeded with `seed`."""
    return fnn_dropout_key(seed, step)


def threshold(double p):
    """floor(p * 2**32): an element is kept when its 32 bits are >= this (p in [0, 1))."""
    return <uint32_t>(p * 4294967296.0)


def bits(Py_ssize_t m, Py_ssize_t n, uint64_t k):
    """The (m, n) uint32 random bits of key k (what the mask compares)."""
    out = np.empty((m, n), np.uint32)
    cdef uint32_t[:, ::1] o = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(m):
            fnn_drop_bits(n, &o[i, 0], k, <uint64_t>(i * n))
    return out


def _dropout(const floating[:, :] x, floating[:, :] out, uint64_t k, uint32_t thresh,
             double scale, int n_threads=-1):
    """out = x * mask(k, thresh) * scale; x and out (m, n) with unit column strides (checked
    by the caller, fastnn.nn.layers.Dropout).  The engine rule applies to the threads."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        dropout_apply(x.shape[0], x.shape[1], cptr2(x), row_stride(x), ptr2(out),
                      row_stride(out), k, thresh, <floating>scale, nt)
