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
                     Engine, FNN_ACT_EXP_NEG, loop_threads)
from ._views cimport cptr2, ptr2, row_stride

cdef enum:
    EXP_CHUNK = 64      # softmax values exponentiated per vector call (value only)
    XENT_BLOCK = 2048   # softmax values per block of rows (with the gradient)


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


cdef inline void _exp_neg(Py_ssize_t n, floating *x) noexcept nogil:
    """x = exp(x) in place, for x <= 0: the vectorized exp of the activation kernels
    (Cephes, ~1 ulp), elementwise, so how values are grouped into calls never changes a
    result.  (libm's scalar expf per value was ~10 % of a digits-sized training step.)"""
    if floating is float:
        kern_s().act_fwd(n, x, x, FNN_ACT_EXP_NEG, 0)
    else:
        kern_d().act_fwd(n, x, x, FNN_ACT_EXP_NEG, 0)


cdef inline double _xent_row(Py_ssize_t n, const floating *s, Py_ssize_t y) noexcept nogil:
    # the value alone (no gradient): the same arithmetic as _xent_block, through a stack
    # buffer
    cdef Py_ssize_t j, t, c
    cdef floating mx = s[0], sy
    cdef floating buf[EXP_CHUNK]
    cdef double total = 0
    for j in range(1, n):
        if s[j] > mx:
            mx = s[j]
    sy = s[y] - mx
    j = 0
    while j < n:
        c = n - j if n - j < EXP_CHUNK else EXP_CHUNK
        for t in range(c):
            buf[t] = s[j + t] - mx
        _exp_neg(c, buf)
        for t in range(c):
            total += buf[t]
        j += c
    return log(total) - <double>sy


cdef void _xent_block(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n, const floating *s,
                      Py_ssize_t rss, const int64_t *y, floating *g, Py_ssize_t rsg,
                      floating gs, double *rows) noexcept nogil:
    """Rows i0..i1-1 with the gradient: log-softmax with each row's maximum subtracted (no
    overflow for any finite logits).  The shifted logits of the whole block are
    exponentiated in one vector call (the rows of a small-class problem are too short for
    the vectors on their own).  g may be s (in place): each row of s is read before its row
    of g is written."""
    cdef Py_ssize_t i, j
    cdef floating mx, e
    cdef const floating *si
    cdef floating *gi
    cdef double total
    for i in range(i0, i1):
        si = s + i * rss
        gi = g + i * rsg
        mx = si[0]
        for j in range(1, n):
            if si[j] > mx:
                mx = si[j]
        rows[i] = <double>(si[y[i]] - mx)
        for j in range(n):
            gi[j] = si[j] - mx
    if rsg == n:
        _exp_neg((i1 - i0) * n, g + i0 * rsg)
    else:
        for i in range(i0, i1):
            _exp_neg(n, g + i * rsg)
    for i in range(i0, i1):
        gi = g + i * rsg
        total = 0
        for j in range(n):
            total += gi[j]
        e = <floating>(gs / total)
        for j in range(n):
            gi[j] = gi[j] * e
        gi[y[i]] = gi[y[i]] - gs
        rows[i] = log(total) - rows[i]


cdef double xent_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                      const int64_t *y, floating *g, Py_ssize_t rsg, double scale,
                      double *rows, int n_threads) noexcept nogil:
    """scale * sum_i -log softmax(s_i)[y_i]; g = scale * (softmax(s) - onehot(y))."""
    cdef Py_ssize_t i, b, nb, rb = XENT_BLOCK // n if n < XENT_BLOCK else 1
    cdef floating gs = <floating>scale
    cdef int nt = elem_threads(m, 8 * n, n_threads)   # exp makes each value ~8x dearer
    if g == NULL:
        if nt == 1:
            for i in range(m):
                rows[i] = _xent_row(n, s + i * rss, y[i])
        else:
            for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
                rows[i] = _xent_row(n, s + i * rss, y[i])
        return scale * _sum_rows(m, rows)
    # blocks of rows (~XENT_BLOCK values, L1-resident between the passes)
    nb = (m + rb - 1) // rb
    if nt == 1:
        for b in range(nb):
            _xent_block(b * rb, min(m, (b + 1) * rb), n, s, rss, y, g, rsg, gs, rows)
    else:
        for b in prange(nb, nogil=True, num_threads=nt, schedule='static'):
            _xent_block(b * rb, min(m, (b + 1) * rb), n, s, rss, y, g, rsg, gs, rows)
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
def _mse(const floating[:, :] p, const floating[:, :] t, floating[:, :] g, double[::1] rows,
         double scale, int n_threads=-1):
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = mse_loss(p.shape[0], p.shape[1], cptr2(p), row_stride(p), cptr2(t),
                       row_stride(t), ptr2(g),
                       row_stride(g), scale, &rows[0], nt)
    return out


def _xent(const floating[:, :] s, const int64_t[::1] y, floating[:, :] g, double[::1] rows,
          double scale, int n_threads=-1):
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = xent_loss(s.shape[0], s.shape[1], cptr2(s), row_stride(s),
                        &y[0], ptr2(g), row_stride(g), scale, &rows[0], nt)
    return out


def _svm(const floating[:, :] s, const int64_t[::1] y, floating[:, :] g, double[::1] rows,
         double margin, double scale, int n_threads=-1):
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = svm_loss(s.shape[0], s.shape[1], cptr2(s), row_stride(s),
                       &y[0], ptr2(g), row_stride(g), margin, scale,
                       &rows[0], nt)
    return out
