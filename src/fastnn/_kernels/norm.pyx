# cython: language_level=3
"""Kernels of the normalization layers (fastnn.LayerNorm, fastnn.BatchNorm1d).

Statistics are two-pass (the mean first, then the mean of squared deviations), which
matches PyTorch in float64 to ~1e-15.  LayerNorm normalizes each row over its n values:
its per-row sums run in double (also for float32) in index order, one thread per row, so
each row's result is the same for any thread count.  BatchNorm1d normalizes each column
over the m rows of the batch: its column sums are ``col_sums`` (fixed-size row chunks
combined in chunk order, column blocks shared out across threads), as are the parameter
gradients of both layers -- results are bitwise identical for any thread count.

The callers (fastnn/nn/norm.py, the compiled step) validate shapes, dtypes and layouts
once; these entry points trust their arguments and run without the GIL.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from ._core cimport current_engine, col_sums, elem_threads, loop_threads
from ._views cimport cptr2, row_stride


cdef inline const floating *_c1(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline floating *_p1(floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating *_c2(const floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline floating *_p2(floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


# ------------------------------------------------------------------------ LayerNorm
cdef void _ln_fwd_row(Py_ssize_t n, const floating *x, const floating *w, const floating *b,
                      double eps, floating *y, floating *xhat, floating *rstd) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0, v = 0, d, mean, r
    cdef floating xh, rf
    for j in range(n):
        s += x[j]
    mean = s / n
    for j in range(n):
        d = x[j] - mean
        v += d * d
    r = 1.0 / sqrt(v / n + eps)
    rf = <floating>r
    if rstd != NULL:
        rstd[0] = rf
    for j in range(n):
        xh = <floating>((x[j] - mean) * r)
        if xhat != NULL:
            xhat[j] = xh
        if w != NULL:
            xh = xh * w[j]
        if b != NULL:
            xh = xh + b[j]
        y[j] = xh


cdef void layernorm_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                            const floating *w, const floating *b, double eps, floating *y,
                            floating *xhat, floating *rstd, int n_threads) noexcept nogil:
    """y[i] = (x[i] - mean_i) * rstd_i * w + b, rstd_i = 1/sqrt(var_i + eps) (biased
    variance over the row); saves xhat (m, n) and rstd (m,) when given."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if nt <= 1:
        for i in range(m):
            _ln_fwd_row(n, x + i * rsx, w, b, eps, y + i * n,
                        xhat + i * n if xhat != NULL else NULL,
                        rstd + i if rstd != NULL else NULL)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _ln_fwd_row(n, x + i * rsx, w, b, eps, y + i * n,
                        xhat + i * n if xhat != NULL else NULL,
                        rstd + i if rstd != NULL else NULL)


cdef void _ln_bwd_row(Py_ssize_t n, const floating *dy, const floating *xhat, floating r,
                      const floating *w, floating *dx) noexcept nogil:
    # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w
    cdef Py_ssize_t j
    cdef double a = 0, c = 0, g
    for j in range(n):
        g = dy[j] * w[j] if w != NULL else dy[j]
        a += g
        c += g * xhat[j]
    a = a / n
    c = c / n
    for j in range(n):
        g = dy[j] * w[j] if w != NULL else dy[j]
        dx[j] = <floating>(r * (g - a - xhat[j] * c))


cdef void _mul_rows(Py_ssize_t m, Py_ssize_t n, const floating *a, const floating *b,
                    floating *out, int nt) noexcept nogil:
    """out = a * b elementwise over m contiguous rows of n."""
    cdef Py_ssize_t i, j
    if nt <= 1:
        for i in range(m * n):
            out[i] = a[i] * b[i]
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            for j in range(n):
                out[i * n + j] = a[i * n + j] * b[i * n + j]


cdef void layernorm_backward(Py_ssize_t m, Py_ssize_t n, const floating *dy,
                             const floating *xhat, const floating *rstd, const floating *w,
                             floating *dx, floating *gw, floating *gb, bint accw, bint accb,
                             floating *work, int n_threads) noexcept nogil:
    """gw (+)= sum_rows(dy * xhat) (through work (m, n)), gb (+)= sum_rows(dy), and dx."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if gw != NULL:
        _mul_rows(m, n, dy, xhat, work, nt)
        col_sums(m, n, work, n, gw, accw, n_threads)
    if gb != NULL:
        col_sums(m, n, dy, n, gb, accb, n_threads)
    if dx == NULL:
        return
    if nt <= 1:
        for i in range(m):
            _ln_bwd_row(n, dy + i * n, xhat + i * n, rstd[i], w, dx + i * n)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _ln_bwd_row(n, dy + i * n, xhat + i * n, rstd[i], w, dx + i * n)


# ---------------------------------------------------------------------- BatchNorm1d
cdef void _bn_center_row(Py_ssize_t n, const floating *x, const floating *mean, floating *d,
                         floating *sq) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating v
    for j in range(n):
        v = x[j] - mean[j]
        d[j] = v
        sq[j] = v * v


cdef void _bn_out_row(Py_ssize_t n, const floating *x, const floating *mean,
                      const floating *invstd, const floating *w, const floating *b,
                      floating *xhat, floating *y) noexcept nogil:
    # xhat = (x - mean) * invstd; y = xhat * w + b (x is the centred row when mean is NULL)
    cdef Py_ssize_t j
    cdef floating v
    for j in range(n):
        v = (x[j] - mean[j]) * invstd[j] if mean != NULL else x[j] * invstd[j]
        if xhat != NULL:
            xhat[j] = v
        if w != NULL:
            v = v * w[j]
        if b != NULL:
            v = v + b[j]
        y[j] = v


cdef void batchnorm_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                            const floating *w, const floating *b, double eps, floating *y,
                            floating *xhat, floating *mean, floating *invstd,
                            floating *rmean, floating *rvar, bint batch_stats, double factor,
                            int n_threads) noexcept nogil:
    """Per column j over the m rows: with batch_stats, mean_j and the biased variance
    (two-pass, col_sums), invstd_j = 1/sqrt(var_j + eps), and when rmean/rvar are given
    running = factor * batch + (1 - factor) * running (the variance unbiased, m/(m-1));
    xhat (required then) = (x - mean) * invstd.  Without batch_stats: the running stats
    (invstd from rvar; mean is not written).  y = xhat * w + b."""
    cdef Py_ssize_t i, j
    cdef int nt = elem_threads(m, n, n_threads)
    cdef double s
    cdef const floating *src
    cdef const floating *mu
    if batch_stats:
        col_sums(m, n, x, rsx, mean, False, n_threads)
        for j in range(n):
            mean[j] = <floating>(mean[j] / <double>m)
        # xhat <- x - mean, y <- (x - mean)**2 (scratch), their column sums -> invstd
        if nt <= 1:
            for i in range(m):
                _bn_center_row(n, x + i * rsx, mean, xhat + i * n, y + i * n)
        else:
            for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
                _bn_center_row(n, x + i * rsx, mean, xhat + i * n, y + i * n)
        col_sums(m, n, y, n, invstd, False, n_threads)
        for j in range(n):
            s = invstd[j]
            if rmean != NULL:
                rmean[j] = <floating>(factor * mean[j] + (1.0 - factor) * rmean[j])
                rvar[j] = <floating>(factor * (s / (m - 1)) + (1.0 - factor) * rvar[j])
            invstd[j] = <floating>(1.0 / sqrt(s / m + eps))
        src = xhat
        mu = NULL
        rsx = n
    else:
        for j in range(n):
            invstd[j] = <floating>(1.0 / sqrt(rvar[j] + eps))
        src = x
        mu = rmean
    if nt <= 1:
        for i in range(m):
            _bn_out_row(n, src + i * rsx, mu, invstd, w, b,
                        xhat + i * n if xhat != NULL else NULL, y + i * n)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _bn_out_row(n, src + i * rsx, mu, invstd, w, b,
                        xhat + i * n if xhat != NULL else NULL, y + i * n)


cdef void _bn_bwd_row(Py_ssize_t n, const floating *dy, const floating *xhat,
                      const floating *k, const floating *a, const floating *c,
                      floating *dx) noexcept nogil:
    # batch statistics: dx = k * (dy - a - xhat * c); running statistics (a NULL): k * dy
    cdef Py_ssize_t j
    if a == NULL:
        for j in range(n):
            dx[j] = k[j] * dy[j]
    else:
        for j in range(n):
            dx[j] = k[j] * (dy[j] - a[j] - xhat[j] * c[j])


cdef void batchnorm_backward(Py_ssize_t m, Py_ssize_t n, const floating *dy,
                             const floating *xhat, const floating *invstd, const floating *w,
                             bint batch_stats, floating *dx, floating *gw, floating *gb,
                             bint accw, bint accb, floating *sums, floating *work,
                             int n_threads) noexcept nogil:
    """sums (4n scratch) <- sum_rows(dy), sum_rows(dy * xhat) (through work (m, n)); gw (+)=
    the second, gb (+)= the first; dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    with batch statistics (the full gradient through the batch mean and variance), else
    w * invstd * dy (eval mode: the statistics are constants)."""
    cdef Py_ssize_t i, j
    cdef int nt = elem_threads(m, n, n_threads)
    cdef floating *sdy = sums
    cdef floating *sdx = sums + n
    cdef floating *k = sums + 2 * n
    cdef floating *a = NULL
    cdef floating *c = NULL
    if batch_stats or gb != NULL:
        col_sums(m, n, dy, n, sdy, False, n_threads)
    if batch_stats or gw != NULL:
        _mul_rows(m, n, dy, xhat, work, nt)
        col_sums(m, n, work, n, sdx, False, n_threads)
    if gw != NULL:
        for j in range(n):
            gw[j] = gw[j] + sdx[j] if accw else sdx[j]
    if gb != NULL:
        for j in range(n):
            gb[j] = gb[j] + sdy[j] if accb else sdy[j]
    if dx == NULL:
        return
    for j in range(n):
        k[j] = w[j] * invstd[j] if w != NULL else invstd[j]
    if batch_stats:
        a = sdy
        c = sdx
        for j in range(n):
            sdy[j] = <floating>(sdy[j] / <double>m)
            sdx[j] = <floating>(sdx[j] / <double>m)
    if nt <= 1:
        for i in range(m):
            _bn_bwd_row(n, dy + i * n, xhat + i * n, k, a, c, dx + i * n)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _bn_bwd_row(n, dy + i * n, xhat + i * n, k, a, c, dx + i * n)


# --------------------------------------------------------------- Python entry points
# Empty arrays stand for NULL.  n_threads <= 0: the current setting (the engine rule
# applied: one thread with the BLAS engine).
cdef inline int _threads(int n_threads) noexcept nogil:
    return loop_threads(current_engine(), n_threads)


def _layernorm_forward(const floating[:, :] x, const floating[::1] w, const floating[::1] b,
                       double eps, floating[:, ::1] y, floating[:, ::1] xhat,
                       floating[::1] rstd, int n_threads=-1):
    cdef int nt = _threads(n_threads)
    if x.shape[0] == 0 or x.shape[1] == 0:
        return
    with nogil:
        layernorm_forward(x.shape[0], x.shape[1], cptr2(x), row_stride(x), _c1(w), _c1(b),
                          eps, _p2(y), _p2(xhat), _p1(rstd), nt)


def _layernorm_backward(const floating[:, ::1] dy, const floating[:, ::1] xhat,
                        const floating[::1] rstd, const floating[::1] w, floating[:, ::1] dx,
                        floating[::1] gw, floating[::1] gb, bint accw, bint accb,
                        floating[:, ::1] work, int n_threads=-1):
    cdef int nt = _threads(n_threads)
    with nogil:
        layernorm_backward(dy.shape[0], dy.shape[1], _c2(dy), _c2(xhat), _c1(rstd),
                           _c1(w), _p2(dx), _p1(gw), _p1(gb), accw, accb, _p2(work), nt)


def _batchnorm_forward(const floating[:, :] x, const floating[::1] w, const floating[::1] b,
                       double eps, floating[:, ::1] y, floating[:, ::1] xhat,
                       floating[::1] mean, floating[::1] invstd, floating[::1] rmean,
                       floating[::1] rvar, bint batch_stats, double factor,
                       int n_threads=-1):
    cdef int nt = _threads(n_threads)
    if x.shape[1] == 0:
        return
    with nogil:
        batchnorm_forward(x.shape[0], x.shape[1], cptr2(x), row_stride(x), _c1(w), _c1(b),
                          eps, _p2(y), _p2(xhat), _p1(mean), &invstd[0], _p1(rmean),
                          _p1(rvar), batch_stats, factor, nt)


def _batchnorm_backward(const floating[:, ::1] dy, const floating[:, ::1] xhat,
                        const floating[::1] invstd, const floating[::1] w, bint batch_stats,
                        floating[:, ::1] dx, floating[::1] gw, floating[::1] gb, bint accw,
                        bint accb, floating[::1] sums, floating[:, ::1] work,
                        int n_threads=-1):
    cdef int nt = _threads(n_threads)
    if dy.shape[1] == 0:
        return
    with nogil:
        batchnorm_backward(dy.shape[0], dy.shape[1], _c2(dy), _c2(xhat), &invstd[0],
                           _c1(w), batch_stats, _p2(dx), _p1(gw), _p1(gb), accw, accb,
                           &sums[0], _p2(work), nt)
