# cython: language_level=3
"""Kernels of the graph gates (fastnn.Add, Multiply, Maximum, Concat, Split).

Every operand is a 2-D view with a unit column stride (rows of contiguous values) and any row
stride; strides are passed in elements.  The callers (fastnn/graph.py) validate shapes,
dtypes and layouts once; these entry points trust their arguments and run without the GIL.
Each output element depends on its own inputs only, so results are bitwise identical for any
thread count.  Rows are shared out with a static prange above ELEMWISE_PARALLEL_MIN values.
"""
from cython cimport floating
from libc.string cimport memcpy
from cython.parallel cimport prange
from ._core cimport current_engine, current_threads, elem_threads, ENGINE_BLAS

# binary gate codes (forward)
cdef enum:
    OP_ADD = 0
    OP_MUL = 1
    OP_MAX = 2


cdef inline const floating *_p2(const floating[:, :] X) noexcept nogil:
    return &X[0, 0] if X.shape[0] > 0 and X.shape[1] > 0 else NULL


cdef inline floating *_w2(floating[:, :] X) noexcept nogil:
    return &X[0, 0] if X.shape[0] > 0 and X.shape[1] > 0 else NULL


cdef inline Py_ssize_t _rs(const floating[:, :] X) noexcept nogil:
    return X.strides[0] // <Py_ssize_t>sizeof(floating)


cdef inline int _threads(int n_threads) noexcept nogil:
    # with the BLAS engine our own loops stay single-threaded (two thread pools fight)
    if current_engine() == ENGINE_BLAS:
        return 1
    if n_threads <= 0:
        return current_threads()
    return n_threads


# ------------------------------------------------------------------------- rows
cdef inline void _binary_row(Py_ssize_t n, const floating *a, const floating *b,
                             floating *y, int op) noexcept nogil:
    # one loop per op, so each inner loop is branch-free and vectorizes
    cdef Py_ssize_t j
    if op == OP_ADD:
        for j in range(n):
            y[j] = a[j] + b[j]
    elif op == OP_MUL:
        for j in range(n):
            y[j] = a[j] * b[j]
    else:
        # a where a >= b (ties go to the first input) or a is NaN, else b: a NaN in
        # either input propagates, as in numpy.maximum
        for j in range(n):
            y[j] = a[j] if (a[j] >= b[j] or a[j] != a[j]) else b[j]


cdef inline void _mul_bwd_row(Py_ssize_t n, const floating *g, const floating *a,
                              const floating *b, floating *ga, floating *gb) noexcept nogil:
    # d(a*b)/da = b, d(a*b)/db = a: the multiply gate swaps its inputs
    cdef Py_ssize_t j
    if ga != NULL:
        for j in range(n):
            ga[j] = g[j] * b[j]
    if gb != NULL:
        for j in range(n):
            gb[j] = g[j] * a[j]


cdef inline void _max_bwd_row(Py_ssize_t n, const floating *g, const floating *a,
                              const floating *b, floating *ga, floating *gb) noexcept nogil:
    # the max gate routes the gradient to the input the forward chose (same mask)
    cdef Py_ssize_t j
    cdef floating zero = 0
    if ga != NULL:
        for j in range(n):
            ga[j] = g[j] if (a[j] >= b[j] or a[j] != a[j]) else zero
    if gb != NULL:
        for j in range(n):
            gb[j] = zero if (a[j] >= b[j] or a[j] != a[j]) else g[j]


# --------------------------------------------------------------------- entry points
def _binary_forward(const floating[:, :] a, const floating[:, :] b, floating[:, :] out,
                    int op, int n_threads=-1):
    """out = a + b (op 0), a * b (op 1) or max(a, b) (op 2); all (m, n)."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1], i
    cdef const floating *pa = _p2(a)
    cdef const floating *pb = _p2(b)
    cdef floating *py = _w2(out)
    cdef Py_ssize_t ra = _rs(a), rb = _rs(b), ry = _rs(out)
    cdef int nt = elem_threads(m, n, _threads(n_threads))
    if py == NULL:
        return
    with nogil:
        if nt == 1:
            for i in range(m):
                _binary_row(n, pa + i * ra, pb + i * rb, py + i * ry, op)
        else:
            for i in prange(m, num_threads=nt, schedule='static'):
                _binary_row(n, pa + i * ra, pb + i * rb, py + i * ry, op)


def _binary_backward(const floating[:, :] g, const floating[:, :] a, const floating[:, :] b,
                     floating[:, :] ga, floating[:, :] gb, int op, bint want_a, bint want_b,
                     int n_threads=-1):
    """Input gradients of out = a * b (op 1) or max(a, b) (op 2) given g = dL/dout:
    ga = g * b, gb = g * a (multiply); ga = g where a won else 0, gb the rest (maximum).
    want_a / want_b False skips that gradient (its buffer may then be empty)."""
    cdef Py_ssize_t m = g.shape[0], n = g.shape[1], i
    cdef const floating *pg = _p2(g)
    cdef const floating *pa = _p2(a)
    cdef const floating *pb = _p2(b)
    cdef floating *pga = _w2(ga) if want_a else NULL
    cdef floating *pgb = _w2(gb) if want_b else NULL
    cdef Py_ssize_t rg = _rs(g), ra = _rs(a), rb = _rs(b)
    cdef Py_ssize_t rga = _rs(ga) if want_a else 0, rgb = _rs(gb) if want_b else 0
    cdef int nt = elem_threads(m, n, _threads(n_threads))
    if pg == NULL or (pga == NULL and pgb == NULL):
        return
    with nogil:
        if op == OP_MUL:
            if nt == 1:
                for i in range(m):
                    _mul_bwd_row(n, pg + i * rg, pa + i * ra, pb + i * rb,
                                 pga + i * rga if pga != NULL else NULL,
                                 pgb + i * rgb if pgb != NULL else NULL)
            else:
                for i in prange(m, num_threads=nt, schedule='static'):
                    _mul_bwd_row(n, pg + i * rg, pa + i * ra, pb + i * rb,
                                 pga + i * rga if pga != NULL else NULL,
                                 pgb + i * rgb if pgb != NULL else NULL)
        else:
            if nt == 1:
                for i in range(m):
                    _max_bwd_row(n, pg + i * rg, pa + i * ra, pb + i * rb,
                                 pga + i * rga if pga != NULL else NULL,
                                 pgb + i * rgb if pgb != NULL else NULL)
            else:
                for i in prange(m, num_threads=nt, schedule='static'):
                    _max_bwd_row(n, pg + i * rg, pa + i * ra, pb + i * rb,
                                 pga + i * rga if pga != NULL else NULL,
                                 pgb + i * rgb if pgb != NULL else NULL)


def _copy_rows(const floating[:, :] src, floating[:, :] dst, int n_threads=-1):
    """dst = src, (m, n) each, row by row: Concat writes each input into a column block of
    its output (dst a column slice), Split reads its outputs from column blocks of its input
    (src a column slice); their backward passes do the reverse."""
    cdef Py_ssize_t m = dst.shape[0], n = dst.shape[1], i
    cdef const floating *ps = _p2(src)
    cdef floating *pd = _w2(dst)
    cdef Py_ssize_t rs = _rs(src), rd = _rs(dst)
    cdef size_t nbytes = <size_t>n * sizeof(floating)
    cdef int nt = elem_threads(m, n, _threads(n_threads))
    if pd == NULL:
        return
    with nogil:
        if nt == 1:
            for i in range(m):
                memcpy(pd + i * rd, ps + i * rs, nbytes)
        else:
            for i in prange(m, num_threads=nt, schedule='static'):
                memcpy(pd + i * rd, ps + i * rs, nbytes)
