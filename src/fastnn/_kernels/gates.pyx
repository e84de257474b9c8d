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
from ._core cimport current_engine, current_threads, elem_threads, Engine, GateOp, loop_threads
from ._views cimport cptr2, ptr2, row_stride


# ------------------------------------------------------------------------- rows
cdef inline void _binary_row(Py_ssize_t n, const floating *a, const floating *b,
                             floating *y, int op) noexcept nogil:
    # one loop per op, so each inner loop is branch-free and vectorizes
    cdef Py_ssize_t j
    if op == GateOp.ADD:
        for j in range(n):
            y[j] = a[j] + b[j]
    elif op == GateOp.MUL:
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


# ------------------------------------------------------- nogil kernels (gates.pxd)
cdef void binary_forward(Py_ssize_t m, Py_ssize_t n, const floating *a, Py_ssize_t ra,
                         const floating *b, Py_ssize_t rb, floating *y, Py_ssize_t ry,
                         int op, int n_threads) noexcept nogil:
    """y = a + b, a * b or max(a, b) (op: GateOp.ADD, MUL, MAX); all (m, n)."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if y == NULL:
        return
    if nt == 1:
        for i in range(m):
            _binary_row(n, a + i * ra, b + i * rb, y + i * ry, op)
    else:
        for i in prange(m, num_threads=nt, schedule='static'):
            _binary_row(n, a + i * ra, b + i * rb, y + i * ry, op)


cdef void binary_backward(Py_ssize_t m, Py_ssize_t n, const floating *g, Py_ssize_t rg,
                          const floating *a, Py_ssize_t ra, const floating *b,
                          Py_ssize_t rb, floating *ga, Py_ssize_t rga, floating *gb,
                          Py_ssize_t rgb, int op, int n_threads) noexcept nogil:
    """Input gradients of y = a * b (GateOp.MUL) or max(a, b) (GateOp.MAX) given g = dL/dy:
    ga = g * b, gb = g * a (multiply); ga = g where a won else 0, gb the rest (maximum).
    A NULL ga / gb is skipped."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if g == NULL or (ga == NULL and gb == NULL):
        return
    if op == GateOp.MUL:
        if nt == 1:
            for i in range(m):
                _mul_bwd_row(n, g + i * rg, a + i * ra, b + i * rb,
                             ga + i * rga if ga != NULL else NULL,
                             gb + i * rgb if gb != NULL else NULL)
        else:
            for i in prange(m, num_threads=nt, schedule='static'):
                _mul_bwd_row(n, g + i * rg, a + i * ra, b + i * rb,
                             ga + i * rga if ga != NULL else NULL,
                             gb + i * rgb if gb != NULL else NULL)
    else:
        if nt == 1:
            for i in range(m):
                _max_bwd_row(n, g + i * rg, a + i * ra, b + i * rb,
                             ga + i * rga if ga != NULL else NULL,
                             gb + i * rgb if gb != NULL else NULL)
        else:
            for i in prange(m, num_threads=nt, schedule='static'):
                _max_bwd_row(n, g + i * rg, a + i * ra, b + i * rb,
                             ga + i * rga if ga != NULL else NULL,
                             gb + i * rgb if gb != NULL else NULL)


cdef void copy_rows(Py_ssize_t m, Py_ssize_t n, const floating *src, Py_ssize_t rs,
                    floating *dst, Py_ssize_t rd, int n_threads) noexcept nogil:
    """dst = src, (m, n) each, row by row: Concat writes each input into a column block of
    its output, Split reads its outputs from column blocks of its input; their backward
    passes do the reverse."""
    cdef Py_ssize_t i
    cdef size_t nbytes = <size_t>n * sizeof(floating)
    cdef int nt = elem_threads(m, n, n_threads)
    if dst == NULL:
        return
    if nt == 1:
        for i in range(m):
            memcpy(dst + i * rd, src + i * rs, nbytes)
    else:
        for i in prange(m, num_threads=nt, schedule='static'):
            memcpy(dst + i * rd, src + i * rs, nbytes)


# --------------------------------------------------------------------- entry points
def _binary_forward(const floating[:, :] a, const floating[:, :] b, floating[:, :] out,
                    int op, int n_threads=-1):
    """out = a + b, a * b or max(a, b) (op: GateOp.ADD, MUL, MAX); all (m, n)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        binary_forward(out.shape[0], out.shape[1], cptr2(a), row_stride(a), cptr2(b), row_stride(b), ptr2(out),
                       row_stride(out), op, nt)


def _binary_backward(const floating[:, :] g, const floating[:, :] a, const floating[:, :] b,
                     floating[:, :] ga, floating[:, :] gb, int op, bint want_a, bint want_b,
                     int n_threads=-1):
    """Input gradients of out = a * b (GateOp.MUL) or max(a, b) (GateOp.MAX) given g = dL/dout (see
    binary_backward).  want_a / want_b False skips that gradient (its buffer may then be
    empty)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        binary_backward(g.shape[0], g.shape[1], cptr2(g), row_stride(g), cptr2(a), row_stride(a), cptr2(b),
                        row_stride(b), ptr2(ga) if want_a else NULL, row_stride(ga) if want_a else 0,
                        ptr2(gb) if want_b else NULL, row_stride(gb) if want_b else 0, op, nt)


def _copy_rows(const floating[:, :] src, floating[:, :] dst, int n_threads=-1):
    """dst = src, (m, n) each, row by row (see copy_rows)."""
    cdef int nt = loop_threads(current_engine(), n_threads)
    with nogil:
        copy_rows(dst.shape[0], dst.shape[1], cptr2(src), row_stride(src), ptr2(dst), row_stride(dst), nt)
