# cython: language_level=3
"""Fused loss kernels: the loss value and its gradient w.r.t. the predictions in one pass.

Each row is handled by one thread, which writes that row's gradient and its loss into
rows[i] (a double); the rows are then summed serially in index order, so the value is
bitwise identical for any thread count.  g == NULL skips the gradient (evaluation).
Strides are element strides; every row is contiguous.  The callers (fastnn/losses.py)
validate shapes, dtypes and label ranges.
"""
from libc.math cimport log
from cython.parallel cimport prange
from ._core cimport (current_engine, current_threads, elem_threads, kern_s, kern_d,
                     ENGINE_BLAS, FNN_ACT_EXP_NEG)

cdef enum:
    EXP_CHUNK = 64     # softmax values exponentiated per vector call


cdef inline double _sum_rows(Py_ssize_t m, const double *rows) noexcept nogil:
    cdef double total = 0
    cdef Py_ssize_t i
    for i in range(m):
        total += rows[i]
    return total


cdef inline double _mse_row(Py_ssize_t n, const floating *p, const floating *t, floating *g,
                            floating g_scale) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating d
    cdef double acc = 0
    if g != NULL:
        for j in range(n):
            d = p[j] - t[j]
            acc += <double>d * d
            g[j] = g_scale * d
    else:
        for j in range(n):
            d = p[j] - t[j]
            acc += <double>d * d
    return acc


cdef double mse_loss(Py_ssize_t m, Py_ssize_t n, const floating *p, Py_ssize_t rsp,
                     const floating *t, Py_ssize_t rst, floating *g, Py_ssize_t rsg,
                     double scale, double *rows, int n_threads) noexcept nogil:
    """scale * sum((p - t)**2); g = 2 * scale * (p - t)."""
    cdef Py_ssize_t i
    cdef floating gs = <floating>(2.0 * scale)
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            rows[i] = _mse_row(n, p + i * rsp, t + i * rst,
                               g + i * rsg if g != NULL else NULL, gs)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            rows[i] = _mse_row(n, p + i * rsp, t + i * rst,
                               g + i * rsg if g != NULL else NULL, gs)
    return scale * _sum_rows(m, rows)


cdef inline double _xent_row(Py_ssize_t n, const floating *s, Py_ssize_t y, floating *g,
                             floating g_scale) noexcept nogil:
    # log-softmax with the row maximum subtracted (no overflow for any finite logits); the
    # exponentials of s - max <= 0 go through the vectorized exp of the activation kernels
    # (Cephes, ~1 ulp; libm's scalar expf/exp per value was ~10 % of a digits-sized
    # training step), in chunks of a stack buffer so that the value is computed the same way
    # with and without the gradient.
    cdef Py_ssize_t j, t, c
    cdef floating mx = s[0], e, sy
    cdef floating buf[EXP_CHUNK]
    cdef double total = 0
    for j in range(1, n):
        if s[j] > mx:
            mx = s[j]
    sy = s[y] - mx          # read before g is written: g may be s (in place)
    j = 0
    while j < n:
        c = n - j if n - j < EXP_CHUNK else EXP_CHUNK
        for t in range(c):
            buf[t] = s[j + t] - mx
        if floating is float:
            kern_s().act_fwd(c, buf, buf, FNN_ACT_EXP_NEG, 0)
        else:
            kern_d().act_fwd(c, buf, buf, FNN_ACT_EXP_NEG, 0)
        for t in range(c):
            total += buf[t]
        if g != NULL:
            for t in range(c):
                g[j + t] = buf[t]
        j += c
    if g != NULL:
        e = <floating>(g_scale / total)
        for j in range(n):
            g[j] = g[j] * e
        g[y] = g[y] - g_scale
    return log(total) - <double>sy


cdef double xent_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                      const int64_t *y, floating *g, Py_ssize_t rsg, double scale,
                      double *rows, int n_threads) noexcept nogil:
    """scale * sum_i -log softmax(s_i)[y_i]; g = scale * (softmax(s) - onehot(y))."""
    cdef Py_ssize_t i
    cdef floating gs = <floating>scale
    cdef int nt = elem_threads(m, 8 * n, n_threads)   # exp makes each value ~8x dearer
    if nt == 1:
        for i in range(m):
            rows[i] = _xent_row(n, s + i * rss, y[i], g + i * rsg if g != NULL else NULL, gs)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            rows[i] = _xent_row(n, s + i * rss, y[i], g + i * rsg if g != NULL else NULL, gs)
    return scale * _sum_rows(m, rows)


cdef inline double _svm_row(Py_ssize_t n, const floating *s, Py_ssize_t y, floating *g,
                            floating margin, floating g_scale) noexcept nogil:
    # sum_{j != y} max(0, s_j - s_y + margin); a margin of exactly 0 contributes no gradient
    cdef Py_ssize_t j, count = 0
    cdef floating sy = s[y], d
    cdef double total = 0
    for j in range(n):
        d = s[j] - sy + margin
        if j != y and d > 0:
            total += d
            count += 1
            if g != NULL:
                g[j] = g_scale
        elif g != NULL:
            g[j] = 0
    if g != NULL:
        g[y] = -<floating>count * g_scale
    return total


cdef double svm_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                     const int64_t *y, floating *g, Py_ssize_t rsg, double margin,
                     double scale, double *rows, int n_threads) noexcept nogil:
    """scale * sum_i sum_{j != y_i} max(0, s_ij - s_iy + margin) and its subgradient."""
    cdef Py_ssize_t i
    cdef floating gs = <floating>scale, mg = <floating>margin
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            rows[i] = _svm_row(n, s + i * rss, y[i], g + i * rsg if g != NULL else NULL, mg, gs)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            rows[i] = _svm_row(n, s + i * rss, y[i], g + i * rsg if g != NULL else NULL, mg, gs)
    return scale * _sum_rows(m, rows)


# ---------------------------------------------------------------- Python entry points
# (validated by fastnn/losses.py: at least one row and one column, labels in range; `g` may
# be an empty (0, 0) array for "no gradient")
cdef inline int _nt(int n_threads) noexcept nogil:
    if current_engine() == ENGINE_BLAS:
        return 1
    return n_threads if n_threads > 0 else current_threads()


cdef inline floating *_gp(floating[:, :] g) noexcept nogil:
    return &g[0, 0] if g.shape[0] > 0 and g.shape[1] > 0 else NULL


def _mse(const floating[:, :] p, const floating[:, :] t, floating[:, :] g, double[::1] rows,
         double scale, int n_threads=-1):
    cdef double out
    cdef int nt = _nt(n_threads)
    with nogil:
        out = mse_loss(p.shape[0], p.shape[1], &p[0, 0], p.strides[0] // sizeof(floating), &t[0, 0],
                       t.strides[0] // sizeof(floating), _gp(g),
                       g.strides[0] // sizeof(floating), scale, &rows[0], nt)
    return out


def _xent(const floating[:, :] s, const int64_t[::1] y, floating[:, :] g, double[::1] rows,
          double scale, int n_threads=-1):
    cdef double out
    cdef int nt = _nt(n_threads)
    with nogil:
        out = xent_loss(s.shape[0], s.shape[1], &s[0, 0], s.strides[0] // sizeof(floating),
                        &y[0], _gp(g), g.strides[0] // sizeof(floating), scale, &rows[0], nt)
    return out


def _svm(const floating[:, :] s, const int64_t[::1] y, floating[:, :] g, double[::1] rows,
         double margin, double scale, int n_threads=-1):
    cdef double out
    cdef int nt = _nt(n_threads)
    with nogil:
        out = svm_loss(s.shape[0], s.shape[1], &s[0, 0], s.strides[0] // sizeof(floating),
                       &y[0], _gp(g), g.strides[0] // sizeof(floating), margin, scale,
                       &rows[0], nt)
    return out
