# cython: language_level=3
"""Fused optimizer updates: one pass over a parameter, its gradient and its state.

Elementwise, so the result never depends on the thread count.  The caller
(fastnn/optim.py) checks that p, g and buf are contiguous, of one dtype and one size.
"""
from cython.parallel cimport prange
from ._core cimport current_engine, current_threads, elem_threads, ENGINE_BLAS

cdef enum:
    CHUNK = 8192      # elements per parallel work item


cdef inline void _sgd_chunk(Py_ssize_t n, floating *p, const floating *g, floating *buf,
                            floating lr, floating mom, floating damp1, floating wd,
                            bint nesterov, floating sign, bint first) noexcept nogil:
    # PyTorch's torch.optim.SGD, element by element:
    #   d = -g if maximize else g;  d += wd * p;
    #   buf = d (first step) or mom * buf + (1 - dampening) * d;
    #   d = d + mom * buf if nesterov else buf;  p -= lr * d
    # The flags are loop-invariant; gcc unswitches them out of the loop.
    cdef Py_ssize_t i
    cdef floating d, b
    for i in range(n):
        d = sign * g[i]
        if wd != 0:
            d = d + wd * p[i]
        if mom != 0:
            if first:
                b = d
            else:
                b = mom * buf[i] + damp1 * d
            buf[i] = b
            if nesterov:
                d = d + mom * b
            else:
                d = b
        p[i] = p[i] - lr * d


cdef void sgd_update(Py_ssize_t n, floating *p, const floating *g, floating *buf,
                     floating lr, floating momentum, floating dampening, floating weight_decay,
                     bint nesterov, bint maximize, bint first, int n_threads) noexcept nogil:
    """One SGD step on n contiguous values; buf (the momentum buffer) is unused, and may be
    NULL, when momentum == 0; `first` initialises it from the step's gradient."""
    cdef floating sign = -1 if maximize else 1
    cdef floating damp1 = 1 - dampening
    cdef Py_ssize_t nchunks = (n + CHUNK - 1) // CHUNK, c, lo, hi
    cdef int nt = elem_threads(nchunks, CHUNK, n_threads)
    if nt == 1:
        _sgd_chunk(n, p, g, buf, lr, momentum, damp1, weight_decay, nesterov, sign, first)
        return
    for c in prange(nchunks, nogil=True, num_threads=nt, schedule='static'):
        lo = c * CHUNK
        hi = lo + CHUNK
        if hi > n:
            hi = n
        _sgd_chunk(hi - lo, p + lo, g + lo, buf + lo if buf != NULL else NULL, lr, momentum,
                   damp1, weight_decay, nesterov, sign, first)


def _sgd(floating[::1] p, const floating[::1] g, floating[::1] buf, double lr,
         double momentum, double dampening, double weight_decay, bint nesterov,
         bint maximize, bint first, int n_threads=-1):
    """Python entry point (fastnn/optim.py); pass an empty buf when momentum == 0."""
    cdef int nt = 1
    if current_engine() != ENGINE_BLAS:
        nt = n_threads if n_threads > 0 else current_threads()
    if p.shape[0] == 0:
        return
    with nogil:
        sgd_update(p.shape[0], &p[0], &g[0], &buf[0] if buf.shape[0] > 0 else NULL,
                   <floating>lr, <floating>momentum, <floating>dampening,
                   <floating>weight_decay, nesterov, maximize, first, nt)
