# cython: language_level=3
"""Fused loss kernels: the loss value and its gradient w.r.t. the predictions in one pass.

Each row is handled by one thread, which writes that row's gradient and its loss into
rows[i] (a double); the rows are then summed serially in index order, so the value is
bitwise identical for any thread count.  g == NULL skips the gradient (evaluation).
Strides are element strides; every row is contiguous.  The callers (fastnn/losses.py)
validate shapes, dtypes and label ranges.
"""
from libc.math cimport exp, fabs, log, log1p
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


# ---------------------------------------------------------------- elementwise losses
# (the PointwiseLoss codes are declared in losses.pxd, for the compiled step too)

# torch's clamp of BCE's gradient denominator: 1e-12 rounded to float32 (9.99999996e-13)
cdef double BCE_EPS = <double><float>1e-12


cdef inline double _sign(double d) noexcept nogil:
    # torch's sign: 0 at 0 (the L1 subgradient there)
    return <double>(d > 0) - <double>(d < 0)


cdef inline double _bce_logits_elem(double x, double y, double w, double *dl) noexcept nogil:
    # log(1 + exp(-|x|)) + max(-x, 0) = -log sigmoid(x), without overflow; w = pos_weight
    cdef double e = exp(-fabs(x))
    cdef double lse = log1p(e) + (-x if x < 0 else 0.0)
    cdef double sig = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
    cdef double lw = 1.0 + (w - 1.0) * y
    dl[0] = sig * lw - w * y
    return (1.0 - y) * x + lw * lse


cdef inline double _bce_elem(double x, double y, double *dl) noexcept nogil:
    cdef double lp = log(x), lq = log(1.0 - x), d
    if lp < -100.0:
        lp = -100.0
    if lq < -100.0:
        lq = -100.0
    # torch's gradient: (p - t) / max(p (1 - p), eps), eps = 1e-12 as a float
    d = x * (1.0 - x)
    dl[0] = (x - y) / (d if d > BCE_EPS else BCE_EPS)
    return -(y * lp + (1.0 - y) * lq)


cdef inline double _pw_row(int kind, Py_ssize_t n, const floating *p, const floating *t,
                           const double *pw, floating *g, double gs,
                           double param) noexcept nogil:
    """One row of an elementwise loss: returns sum_j l(p_j, t_j) and writes
    g_j = gs * dl/dp_j (g NULL: the value only).  Every element is computed in double and
    the gradient rounded once; g may be p (each element is read before it is written).
    One loop per kind (the kind is not re-tested per element)."""
    cdef Py_ssize_t j
    cdef double d, ad, dl = 0
    cdef double acc = 0
    if kind == PW_MSE:
        for j in range(n):
            d = <double>p[j] - <double>t[j]
            acc += d * d
            if g != NULL:
                g[j] = <floating>(gs * (2.0 * d))
    elif kind == PW_L1:
        for j in range(n):
            d = <double>p[j] - <double>t[j]
            acc += fabs(d)
            if g != NULL:
                g[j] = <floating>(gs * _sign(d))
    elif kind == PW_HUBER:
        for j in range(n):
            d = <double>p[j] - <double>t[j]
            ad = fabs(d)
            if ad < param:
                acc += 0.5 * d * d
                dl = d
            else:
                acc += param * (ad - 0.5 * param)
                dl = param * _sign(d)
            if g != NULL:
                g[j] = <floating>(gs * dl)
    elif kind == PW_SMOOTH_L1:
        for j in range(n):
            d = <double>p[j] - <double>t[j]
            ad = fabs(d)
            if ad < param:
                acc += 0.5 * d * d / param
                dl = d / param
            else:
                acc += ad - 0.5 * param
                dl = _sign(d)
            if g != NULL:
                g[j] = <floating>(gs * dl)
    elif kind == PW_BCE_LOGITS:
        for j in range(n):
            acc += _bce_logits_elem(p[j], t[j], pw[j] if pw != NULL else 1.0, &dl)
            if g != NULL:
                g[j] = <floating>(gs * dl)
    else:   # PW_BCE
        for j in range(n):
            acc += _bce_elem(p[j], t[j], &dl)
            if g != NULL:
                g[j] = <floating>(gs * dl)
    return acc


cdef inline double _pw_weighted(int kind, Py_ssize_t i, Py_ssize_t n, const floating *p,
                                Py_ssize_t rsp, const floating *t, Py_ssize_t rst,
                                const double *sw, const double *pw, floating *g,
                                Py_ssize_t rsg, double param, double scale) noexcept nogil:
    cdef double w = sw[i] if sw != NULL else 1.0
    return w * _pw_row(kind, n, p + i * rsp, t + i * rst, pw,
                       g + i * rsg if g != NULL else NULL, scale * w, param)


cdef double pointwise_loss(int kind, Py_ssize_t m, Py_ssize_t n, const floating *p,
                           Py_ssize_t rsp, const floating *t, Py_ssize_t rst,
                           const double *sw, const double *pw, floating *g, Py_ssize_t rsg,
                           double param, double scale, double *rows,
                           int n_threads) noexcept nogil:
    """scale * sum_i sw_i sum_j l(p_ij, t_ij); g_ij = scale * sw_i * dl/dp_ij.  sw: per-row
    weights (NULL: 1), pw: per-column positive weights of PW_BCE_LOGITS (NULL: 1), param:
    delta (Huber) or beta (SmoothL1)."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, 4 * n if kind != PW_MSE else n, n_threads)
    if nt == 1:
        for i in range(m):
            rows[i] = _pw_weighted(kind, i, n, p, rsp, t, rst, sw, pw, g, rsg, param, scale)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            rows[i] = _pw_weighted(kind, i, n, p, rsp, t, rst, sw, pw, g, rsg, param, scale)
    return scale * _sum_rows(m, rows)


# ------------------------------------------------- weighted / smoothed classification
cdef void _xent_w_block(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n, const floating *s,
                        Py_ssize_t rss, const int64_t *y, const double *cw, double wsum,
                        double eps, const double *sw, floating *g, Py_ssize_t rsg, double gs,
                        double *rows) noexcept nogil:
    """Rows i0..i1-1 of xent_w_loss, as _xent_block: row i's value is
    sw_i [(1 - eps) w_y (lse - z_y) + (eps / n) (W lse - sum_c w_c z_c)] with z = s - max
    and lse = log sum exp z (w = cw, 1 without; W = sum w), its gradient
    gs sw_i [p_j ((1 - eps) w_y + eps W / n) - (1 - eps) w_y [j == y] - eps w_j / n].
    The shifted logits of the block are exponentiated in one vector call.  g is required
    and may be s (each row of s is read before its row of g is written)."""
    cdef Py_ssize_t i, j, yi
    cdef floating mx
    cdef const floating *si
    cdef floating *gi
    cdef double sz, total, wy, rw, a, cp, ce, lse, c1 = 1.0 - eps
    for i in range(i0, i1):
        si = s + i * rss
        gi = g + i * rsg
        yi = y[i]
        mx = si[0]
        for j in range(1, n):
            if si[j] > mx:
                mx = si[j]
        wy = cw[yi] if cw != NULL else 1.0
        sz = 0
        if eps != 0:
            if cw != NULL:
                for j in range(n):
                    sz += cw[j] * <double>(si[j] - mx)
            else:
                for j in range(n):
                    sz += <double>(si[j] - mx)
        # the part of the value without lse, kept in rows[i] until lse is known
        rows[i] = c1 * wy * <double>(si[yi] - mx) + (eps / n) * sz
        for j in range(n):
            gi[j] = si[j] - mx
    if rsg == n:
        _exp_neg((i1 - i0) * n, g + i0 * rsg)
    else:
        for i in range(i0, i1):
            _exp_neg(n, g + i * rsg)
    for i in range(i0, i1):
        gi = g + i * rsg
        yi = y[i]
        total = 0
        for j in range(n):
            total += gi[j]
        lse = log(total)
        wy = cw[yi] if cw != NULL else 1.0
        rw = sw[i] if sw != NULL else 1.0
        a = gs * rw
        cp = a * (c1 * wy + eps * wsum / n) / total
        ce = a * eps / n
        if eps != 0 and cw != NULL:
            for j in range(n):
                gi[j] = <floating>(gi[j] * cp - ce * cw[j])
        else:
            for j in range(n):
                gi[j] = <floating>(gi[j] * cp - ce)
        gi[yi] = <floating>(gi[yi] - a * c1 * wy)
        rows[i] = rw * ((c1 * wy + eps * wsum / n) * lse - rows[i])


cdef double xent_w_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                        const int64_t *y, const double *cw, const double *sw, double eps,
                        floating *g, Py_ssize_t rsg, double scale, double *rows,
                        int n_threads) noexcept nogil:
    """CrossEntropyLoss with class weights cw (NULL: none), per-row weights sw (NULL:
    none) and label smoothing eps, as torch: scale * sum_i sw_i [(1 - eps) w_{y_i}
    (-log p_{i,y_i}) + (eps / n) sum_c w_c (-log p_ic)].  Blocks of rows as xent_loss."""
    cdef Py_ssize_t b, nb, j, rb = XENT_BLOCK // n if n < XENT_BLOCK else 1
    cdef double wsum = 0
    cdef int nt = elem_threads(m, 8 * n, n_threads)
    if cw != NULL:
        for j in range(n):
            wsum += cw[j]
    else:
        wsum = <double>n
    nb = (m + rb - 1) // rb
    if nt == 1:
        for b in range(nb):
            _xent_w_block(b * rb, min(m, (b + 1) * rb), n, s, rss, y, cw, wsum, eps, sw, g,
                          rsg, scale, rows)
    else:
        for b in prange(nb, nogil=True, num_threads=nt, schedule='static'):
            _xent_w_block(b * rb, min(m, (b + 1) * rb), n, s, rss, y, cw, wsum, eps, sw, g,
                          rsg, scale, rows)
    return scale * _sum_rows(m, rows)


cdef inline double _nll_row(Py_ssize_t n, const floating *s, Py_ssize_t y, double w,
                            floating *g, double gs) noexcept nogil:
    cdef Py_ssize_t j
    cdef double v = -w * <double>s[y]
    if g != NULL:
        for j in range(n):
            g[j] = 0
        g[y] = <floating>(-gs * w)
    return v


cdef double nll_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                     const int64_t *y, const double *cw, const double *sw, floating *g,
                     Py_ssize_t rsg, double scale, double *rows, int n_threads) noexcept nogil:
    """scale * sum_i -sw_i w_{y_i} s_{i,y_i} (s: log-probabilities); g = its gradient."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            rows[i] = _nll_row(n, s + i * rss, y[i],
                               (cw[y[i]] if cw != NULL else 1.0) * (sw[i] if sw != NULL else 1.0),
                               g + i * rsg if g != NULL else NULL, scale)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            rows[i] = _nll_row(n, s + i * rss, y[i],
                               (cw[y[i]] if cw != NULL else 1.0) * (sw[i] if sw != NULL else 1.0),
                               g + i * rsg if g != NULL else NULL, scale)
    return scale * _sum_rows(m, rows)


cdef double svm_w_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                       const int64_t *y, const double *sw, floating *g, Py_ssize_t rsg,
                       double margin, double scale, double *rows, int n_threads) noexcept nogil:
    """svm_loss with per-row weights sw: row i's value and gradient times sw_i."""
    cdef Py_ssize_t i
    cdef floating mg = <floating>margin
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            rows[i] = sw[i] * _svm_row(n, s + i * rss, y[i], g + i * rsg if g != NULL else NULL,
                                       mg, <floating>(scale * sw[i]))
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            rows[i] = sw[i] * _svm_row(n, s + i * rss, y[i], g + i * rsg if g != NULL else NULL,
                                       mg, <floating>(scale * sw[i]))
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


# (the weight arrays are float64 and contiguous; an empty one stands for "no weights")
cdef inline const double *_dptr(const double[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


def _pointwise(int kind, const floating[:, :] p, const floating[:, :] t, const double[::1] sw,
               const double[::1] pw, floating[:, :] g, double[::1] rows, double param,
               double scale, int n_threads=-1):
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = pointwise_loss(kind, p.shape[0], p.shape[1], cptr2(p), row_stride(p), cptr2(t),
                             row_stride(t), _dptr(sw), _dptr(pw), ptr2(g), row_stride(g),
                             param, scale, &rows[0], nt)
    return out


def _xent_w(const floating[:, :] s, const int64_t[::1] y, const double[::1] cw,
            const double[::1] sw, double eps, floating[:, :] g, double[::1] rows,
            double scale, int n_threads=-1):
    # g is required (a (rows, classes) buffer)
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = xent_w_loss(s.shape[0], s.shape[1], cptr2(s), row_stride(s), &y[0],
                          _dptr(cw), _dptr(sw), eps, ptr2(g), row_stride(g), scale,
                          &rows[0], nt)
    return out


def _nll(const floating[:, :] s, const int64_t[::1] y, const double[::1] cw,
         const double[::1] sw, floating[:, :] g, double[::1] rows, double scale,
         int n_threads=-1):
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = nll_loss(s.shape[0], s.shape[1], cptr2(s), row_stride(s), &y[0], _dptr(cw),
                       _dptr(sw), ptr2(g), row_stride(g), scale, &rows[0], nt)
    return out


def _svm_w(const floating[:, :] s, const int64_t[::1] y, const double[::1] sw,
           floating[:, :] g, double[::1] rows, double margin, double scale,
           int n_threads=-1):
    # sw is required (one weight per row)
    cdef double out
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        out = svm_w_loss(s.shape[0], s.shape[1], cptr2(s), row_stride(s), &y[0], &sw[0],
                         ptr2(g), row_stride(g), margin, scale, &rows[0], nt)
    return out


# ------------------------------------------------------------ Softmax / LogSoftmax (dim=1)
# Row-wise over the last axis, each row by one thread in one fixed order (bitwise identical
# for any thread count): the row's maximum is subtracted (no overflow for finite inputs), the
# exponentials are the vectorized exp of the activation kernels, sums accumulate in double.
cdef inline void _softmax_row(Py_ssize_t n, const floating *x, floating *y,
                              bint logsm) noexcept nogil:
    cdef Py_ssize_t j, t, c
    cdef floating mx = x[0], ls, r
    cdef floating buf[EXP_CHUNK]
    cdef double total = 0
    for j in range(1, n):
        if x[j] > mx:
            mx = x[j]
    for j in range(n):
        y[j] = x[j] - mx
    if logsm:
        # the exponentials through a stack buffer (y keeps the shifted values)
        j = 0
        while j < n:
            c = n - j if n - j < EXP_CHUNK else EXP_CHUNK
            for t in range(c):
                buf[t] = y[j + t]
            _exp_neg(c, buf)
            for t in range(c):
                total += buf[t]
            j += c
        ls = <floating>log(total)
        for j in range(n):
            y[j] = y[j] - ls
    else:
        _exp_neg(n, y)
        for j in range(n):
            total += y[j]
        r = <floating>(1.0 / total)
        for j in range(n):
            y[j] = y[j] * r


cdef inline void _softmax_bwd_row(Py_ssize_t n, const floating *g, const floating *y,
                                  floating *gi, bint logsm) noexcept nogil:
    cdef Py_ssize_t j
    cdef double acc = 0
    cdef floating s
    if logsm:
        # g_in = g - exp(y) * sum(g)
        for j in range(n):
            acc += g[j]
        s = <floating>acc
        for j in range(n):
            gi[j] = y[j]
        _exp_neg(n, gi)
        for j in range(n):
            gi[j] = g[j] - gi[j] * s
    else:
        # g_in = y * (g - sum(g * y))
        for j in range(n):
            acc += <double>g[j] * y[j]
        s = <floating>acc
        for j in range(n):
            gi[j] = y[j] * (g[j] - s)


cdef void softmax_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                          floating *y, Py_ssize_t rsy, bint logsm,
                          int n_threads) noexcept nogil:
    """y = softmax(x) (or log_softmax with logsm) row by row; y must not overlap x."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if n == 0:
        return
    if nt == 1:
        for i in range(m):
            _softmax_row(n, x + i * rsx, y + i * rsy, logsm)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _softmax_row(n, x + i * rsx, y + i * rsy, logsm)


cdef void softmax_backward(Py_ssize_t m, Py_ssize_t n, const floating *g, Py_ssize_t rsg,
                           const floating *y, Py_ssize_t rsy, floating *gi, Py_ssize_t rsgi,
                           bint logsm, int n_threads) noexcept nogil:
    """gi = y * (g - sum(g * y)) (softmax) or g - exp(y) * sum(g) (log_softmax), y the
    saved output, row by row; gi must not overlap g or y."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if n == 0:
        return
    if nt == 1:
        for i in range(m):
            _softmax_bwd_row(n, g + i * rsg, y + i * rsy, gi + i * rsgi, logsm)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _softmax_bwd_row(n, g + i * rsg, y + i * rsy, gi + i * rsgi, logsm)


def _softmax(const floating[:, :] x, floating[:, :] y, bint logsm, int n_threads=-1):
    """The module path's forward (fastnn.nn.layers.Softmax / LogSoftmax); rows contiguous."""
    cdef int engine = current_engine()
    cdef int nt = loop_threads(engine, n_threads)
    with nogil:
        softmax_forward(x.shape[0], x.shape[1], cptr2(x), row_stride(x), ptr2(y),
                        row_stride(y), logsm, nt)


def _softmax_backward(const floating[:, :] g, const floating[:, :] y, floating[:, :] gi,
                      bint logsm, int n_threads=-1):
    cdef int engine = current_engine()
    cdef int nt = loop_threads(engine, n_threads)
    with nogil:
        softmax_backward(g.shape[0], g.shape[1], cptr2(g), row_stride(g), cptr2(y),
                         row_stride(y), ptr2(gi), row_stride(gi), logsm, nt)
