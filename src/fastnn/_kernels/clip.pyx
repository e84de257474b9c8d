# cython: language_level=3
"""Gradient clipping: the p-norm of gradients in a fixed order, and the in-place scale and
clamp (torch.nn.utils.clip_grad_norm_ / clip_grad_value_).

The norm is a reduction, so it follows the reduction rule of the kernels: the values are
split into CLIP_CHUNK-element chunks at fixed offsets, each chunk's partial is computed by
whichever thread owns it (in LANES independent float64 accumulators, so the loop
vectorizes without reassociating anything), and the partials are added serially in chunk
order.  The result is bitwise identical for any thread count.  The partials of up to
CLIP_GROUP chunks live on the stack (one parallel region per group): nothing is allocated,
nothing can fail.

Accumulation is in float64 for float32 gradients too (torch accumulates a float32 norm in
float32: ~1e-5 relative error on 1e7 values); the scale is then applied in the gradient's
dtype.  Both fastnn.clip_grad_norm_ and the compiled step call total_norm, clip_coef and
clip_scale, so the two paths agree bitwise.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt, pow, fabs, INFINITY
from libc.stdlib cimport malloc, free
from libc.stdint cimport int32_t, int64_t
cimport numpy as cnp

from ._core cimport current_engine, elem_threads, loop_threads

cnp.import_array()

cdef enum:
    CLIP_CHUNK = 8192     # elements per partial (fixed offsets: the order never changes)
    CLIP_GROUP = 64       # chunks per parallel region (their partials on the stack)
    LANES = 8             # independent accumulators per chunk (vector lanes)

cdef enum:
    MODE_SQ = 0           # p == 2: sum of squares
    MODE_ABS = 1          # p == 1: sum of |g|
    MODE_MAX = 2          # p == inf: max |g|
    MODE_POW = 3          # any other p > 0: sum of |g|**p


cdef inline int _mode(double p) noexcept nogil:
    if p == 2.0:
        return MODE_SQ
    if p == 1.0:
        return MODE_ABS
    if p == INFINITY:
        return MODE_MAX
    return MODE_POW


cdef inline double _max_nan(double m, double a) noexcept nogil:
    # the larger of m and a; NaN once either is NaN (sticky, as torch's max)
    return a if (a > m or a != a) else m


cdef inline double _fold(int mode, double acc, double x) noexcept nogil:
    return _max_nan(acc, x) if mode == MODE_MAX else acc + x


# -------------------------------------------------------------------- one chunk
cdef inline double _lanes(int mode, double *acc) noexcept nogil:
    # the lanes combined pairwise, in a fixed order
    if mode == MODE_MAX:
        return _max_nan(_max_nan(_max_nan(acc[0], acc[1]), _max_nan(acc[2], acc[3])),
                        _max_nan(_max_nan(acc[4], acc[5]), _max_nan(acc[6], acc[7])))
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double _chunk_sq(Py_ssize_t n, const floating *g) noexcept nogil:
    cdef double acc[LANES]
    cdef double v
    cdef Py_ssize_t i = 0, j, nv = n - n % LANES
    for j in range(LANES):
        acc[j] = 0
    while i < nv:
        for j in range(LANES):
            v = g[i + j]
            acc[j] = acc[j] + v * v
        i += LANES
    for j in range(n - nv):
        v = g[nv + j]
        acc[j] = acc[j] + v * v
    return _lanes(MODE_SQ, acc)


cdef double _chunk_abs(Py_ssize_t n, const floating *g) noexcept nogil:
    cdef double acc[LANES]
    cdef Py_ssize_t i = 0, j, nv = n - n % LANES
    for j in range(LANES):
        acc[j] = 0
    while i < nv:
        for j in range(LANES):
            acc[j] = acc[j] + fabs(<double>g[i + j])
        i += LANES
    for j in range(n - nv):
        acc[j] = acc[j] + fabs(<double>g[nv + j])
    return _lanes(MODE_ABS, acc)


# max |g| on the bit patterns: with the sign bit cleared, the order of IEEE values is the
# order of their patterns as integers, and every NaN's pattern lies above inf's, so the
# integer max is exact and propagates NaN -- and an integer max-reduction vectorizes, where
# a floating-point one does not without -ffast-math.  memcpy: the type pun without
# breaking strict aliasing (compiled to plain loads).
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline int32_t fnn_clip_abits32(const float *p) {
        int32_t r; memcpy(&r, p, 4); return r & 0x7fffffff;
    }
    static inline int64_t fnn_clip_abits64(const double *p) {
        int64_t r; memcpy(&r, p, 8); return r & 0x7fffffffffffffffLL;
    }
    static inline double fnn_clip_float32_of(int32_t b) { float f; memcpy(&f, &b, 4); return f; }
    static inline double fnn_clip_float64_of(int64_t b) { double f; memcpy(&f, &b, 8); return f; }
    """
    int32_t fnn_clip_abits32(const float *p) noexcept nogil
    int64_t fnn_clip_abits64(const double *p) noexcept nogil
    double fnn_clip_float32_of(int32_t b) noexcept nogil
    double fnn_clip_float64_of(int64_t b) noexcept nogil


cdef double _max32(Py_ssize_t n, const float *g) noexcept nogil:
    cdef int32_t acc[LANES]
    cdef int32_t a, m
    cdef Py_ssize_t i = 0, j, nv = n - n % LANES
    for j in range(LANES):
        acc[j] = 0
    while i < nv:
        for j in range(LANES):
            a = fnn_clip_abits32(g + i + j)
            acc[j] = a if a > acc[j] else acc[j]
        i += LANES
    for j in range(n - nv):
        a = fnn_clip_abits32(g + nv + j)
        acc[j] = a if a > acc[j] else acc[j]
    m = 0
    for j in range(LANES):
        m = acc[j] if acc[j] > m else m
    return fnn_clip_float32_of(m)


cdef double _max64(Py_ssize_t n, const double *g) noexcept nogil:
    cdef int64_t acc[LANES]
    cdef int64_t a, m
    cdef Py_ssize_t i = 0, j, nv = n - n % LANES
    for j in range(LANES):
        acc[j] = 0
    while i < nv:
        for j in range(LANES):
            a = fnn_clip_abits64(g + i + j)
            acc[j] = a if a > acc[j] else acc[j]
        i += LANES
    for j in range(n - nv):
        a = fnn_clip_abits64(g + nv + j)
        acc[j] = a if a > acc[j] else acc[j]
    m = 0
    for j in range(LANES):
        m = acc[j] if acc[j] > m else m
    return fnn_clip_float64_of(m)


cdef double _chunk_max(Py_ssize_t n, const floating *g) noexcept nogil:
    if floating is float:
        return _max32(n, g)
    else:
        return _max64(n, g)


cdef double _chunk_pow(Py_ssize_t n, const floating *g, double p) noexcept nogil:
    # pow() is a libm call: this loop does not vectorize (the uncommon norm types)
    cdef double acc[LANES]
    cdef Py_ssize_t i = 0, j, nv = n - n % LANES
    for j in range(LANES):
        acc[j] = 0
    while i < nv:
        for j in range(LANES):
            acc[j] = acc[j] + pow(fabs(<double>g[i + j]), p)
        i += LANES
    for j in range(n - nv):
        acc[j] = acc[j] + pow(fabs(<double>g[nv + j]), p)
    return _lanes(MODE_POW, acc)


cdef double _chunk(int mode, Py_ssize_t n, const floating *g, double p,
                   Py_ssize_t c) noexcept nogil:
    """The partial of chunk c of the n values at g."""
    cdef Py_ssize_t lo = c * CLIP_CHUNK, hi = lo + CLIP_CHUNK
    if hi > n:
        hi = n
    if mode == MODE_SQ:
        return _chunk_sq(hi - lo, g + lo)
    if mode == MODE_ABS:
        return _chunk_abs(hi - lo, g + lo)
    if mode == MODE_MAX:
        return _chunk_max(hi - lo, g + lo)
    return _chunk_pow(hi - lo, g + lo, p)


# -------------------------------------------------------------------- reductions
cdef double pow_sum(Py_ssize_t n, const floating *g, double p, int n_threads) noexcept nogil:
    cdef double part[CLIP_GROUP]
    cdef double *pp = part
    cdef int mode = _mode(p)
    cdef Py_ssize_t nchunks = (n + CLIP_CHUNK - 1) // CLIP_CHUNK, c0 = 0, c1, c
    cdef int nt = elem_threads(nchunks, CLIP_CHUNK, n_threads)
    cdef double total = 0
    while c0 < nchunks:
        c1 = c0 + CLIP_GROUP
        if c1 > nchunks:
            c1 = nchunks
        if nt == 1 or c1 - c0 < 2:
            for c in range(c0, c1):
                pp[c - c0] = _chunk(mode, n, g, p, c)
        else:
            for c in prange(c0, c1, nogil=True, num_threads=nt, schedule='static'):
                pp[c - c0] = _chunk(mode, n, g, p, c)
        for c in range(c1 - c0):          # partials in chunk order, whoever computed them
            total = _fold(mode, total, pp[c])
        c0 = c1
    return total


cdef inline double _root(int mode, double s, double p) noexcept nogil:
    if mode == MODE_SQ:
        return sqrt(s)
    if mode == MODE_POW:
        return pow(s, 1.0 / p)
    return s


cdef double grad_norm(Py_ssize_t n, const floating *g, double p, int n_threads) noexcept nogil:
    return _root(_mode(p), pow_sum(n, g, p, n_threads), p)


cdef double total_norm(const GradView *v, Py_ssize_t k, double p, int n_threads) noexcept nogil:
    # torch: vector_norm(stack([vector_norm(g, p) for g in grads]), p)
    cdef int mode = _mode(p)
    cdef double acc = 0, norm
    cdef Py_ssize_t i
    for i in range(k):
        if v[i].dbl:
            norm = grad_norm(v[i].n, <const double *>v[i].g, p, n_threads)
        else:
            norm = grad_norm(v[i].n, <const float *>v[i].g, p, n_threads)
        if mode == MODE_SQ:
            acc = acc + norm * norm
        elif mode == MODE_POW:
            acc = acc + pow(norm, p)
        else:
            acc = _fold(mode, acc, norm)
    return _root(mode, acc, p)


cdef double clip_coef(double max_norm, double total) noexcept nogil:
    return max_norm / (total + 1e-6)


cdef void clip_scale(const GradView *v, Py_ssize_t k, double coef, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    if coef >= 1:        # torch multiplies by min(coef, 1): a no-op here (NaN does scale)
        return
    for i in range(k):
        if v[i].dbl:
            grad_scale(v[i].n, <double *>v[i].g, coef, n_threads)
        else:
            grad_scale(v[i].n, <float *>v[i].g, <float>coef, n_threads)


# -------------------------------------------------------------------- elementwise
cdef inline void _scale_run(Py_ssize_t n, floating *g, floating coef) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] * coef


cdef inline void _clamp_run(Py_ssize_t n, floating *g, floating lo, floating hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n):
        x = g[i]
        x = lo if x < lo else x
        g[i] = hi if x > hi else x


cdef void grad_scale(Py_ssize_t n, floating *g, floating coef, int n_threads) noexcept nogil:
    cdef Py_ssize_t nchunks = (n + CLIP_CHUNK - 1) // CLIP_CHUNK, c, lo, hi
    cdef int nt = elem_threads(nchunks, CLIP_CHUNK, n_threads)
    if nt == 1:
        _scale_run(n, g, coef)
        return
    for c in prange(nchunks, nogil=True, num_threads=nt, schedule='static'):
        lo = c * CLIP_CHUNK
        hi = lo + CLIP_CHUNK
        if hi > n:
            hi = n
        _scale_run(hi - lo, g + lo, coef)


cdef void grad_clamp(Py_ssize_t n, floating *g, floating lo, floating hi,
                     int n_threads) noexcept nogil:
    cdef Py_ssize_t nchunks = (n + CLIP_CHUNK - 1) // CLIP_CHUNK, c, a, b
    cdef int nt = elem_threads(nchunks, CLIP_CHUNK, n_threads)
    if nt == 1:
        _clamp_run(n, g, lo, hi)
        return
    for c in prange(nchunks, nogil=True, num_threads=nt, schedule='static'):
        a = c * CLIP_CHUNK
        b = a + CLIP_CHUNK
        if b > n:
            b = n
        _clamp_run(b - a, g + a, lo, hi)


# -------------------------------------------------------------------- Python entry points
# Private: called by fastnn/nn/utils.py with checked arguments (1-D C-contiguous float32 /
# float64 arrays: the Parameters' _gflat views).  n_threads <= 0: the current setting.
def _pow_sum(const floating[::1] g, double p, int n_threads=-1):
    """pow_sum over g (a test hook: the fixed-order reduction itself)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    cdef double s
    with nogil:
        s = pow_sum(g.shape[0], &g[0] if g.shape[0] > 0 else NULL, p, nt)
    return s


def _grad_norm(const floating[::1] g, double p, int n_threads=-1):
    """The p-norm of one gradient."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    cdef double s
    with nogil:
        s = grad_norm(g.shape[0], &g[0] if g.shape[0] > 0 else NULL, p, nt)
    return s


def _scale(floating[::1] g, double coef, int n_threads=-1):
    """g *= coef (rounded to g's dtype)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    if g.shape[0] == 0:
        return
    with nogil:
        grad_scale(g.shape[0], &g[0], <floating>coef, nt)


def _clamp(floating[::1] g, double lo, double hi, int n_threads=-1):
    """g = min(max(g, lo), hi) (lo, hi rounded to g's dtype)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    if g.shape[0] == 0:
        return
    with nogil:
        grad_clamp(g.shape[0], &g[0], <floating>lo, <floating>hi, nt)


cdef GradView *_views(list grads) except? NULL:
    cdef Py_ssize_t k = len(grads), i
    cdef GradView *v = <GradView *>malloc(max(k, 1) * sizeof(GradView))
    cdef cnp.ndarray a
    if v == NULL:
        raise MemoryError("clip_grad_norm_: out of memory")
    for i in range(k):
        a = <cnp.ndarray>grads[i]
        v[i].n = cnp.PyArray_SIZE(a)
        v[i].g = cnp.PyArray_DATA(a) if v[i].n > 0 else NULL
        v[i].dbl = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
    return v


def _total_norm(list grads, double p, int n_threads=-1):
    """total_norm over grads (1-D contiguous float32/float64 arrays, in order)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    cdef Py_ssize_t k = len(grads)
    cdef GradView *v = _views(grads)
    cdef double t
    with nogil:
        t = total_norm(v, k, p, nt)
    free(v)
    return t


def _clip_coef(double max_norm, double total):
    return clip_coef(max_norm, total)


def _clip_scale(list grads, double coef, int n_threads=-1):
    """clip_scale over grads: each *= coef when coef < 1 (or NaN)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    cdef Py_ssize_t k = len(grads)
    cdef GradView *v
    if coef >= 1:
        return
    v = _views(grads)
    with nogil:
        clip_scale(v, k, coef, nt)
    free(v)
