# cython: language_level=3
"""Fused optimizer updates: one pass over a parameter, its gradient and its state.

Elementwise, so the result never depends on the thread count.  The caller
(fastnn/optim/) checks that p, g and the state buffers are contiguous, of one dtype and
one size.  `opt_update` dispatches on the optimizer's kind (OptKind); a new optimizer adds
its kind, its kernel and a branch there, and both the module path and the compiled step
run it.
"""
from cython.parallel cimport prange
from ._core cimport (current_engine, current_threads, elem_threads, kern_s, kern_d,
                     FNN_SGD_WD, FNN_SGD_MOMENTUM, FNN_SGD_FIRST, FNN_SGD_NESTEROV,
                     OptKind, loop_threads)

cdef enum:
    CHUNK = 8192      # elements per parallel work item

# Subnormal numbers: a momentum buffer whose gradient stays ~0 decays geometrically into the
# subnormal range (0.9**800 * 1e-3 < 1.2e-38), and x86 CPUs take a ~100-cycle microcode
# assist for each multiply that reads or produces one: on the digits network a few hundred
# such values made the update 14 % of the whole training step.  The update therefore runs
# with FTZ/DAZ set in MXCSR, on the calling thread only and restored before returning:
# subnormal inputs read as zero and subnormal results become zero.  Nothing changes for
# values of normal magnitude (|x| >= 1.2e-38 float32, 2.2e-308 float64).
cdef extern from *:
    """
    #if defined(__x86_64__) || defined(_M_X64) || (defined(__i386__) && defined(__SSE2__))
    #include <xmmintrin.h>
    static inline unsigned int fnn_ftz_on(void) {
        unsigned int c = _mm_getcsr();
        _mm_setcsr(c | 0x8040u);         /* FTZ (bit 15) | DAZ (bit 6) */
        return c;
    }
    static inline void fnn_ftz_restore(unsigned int c) { _mm_setcsr(c); }
    #else
    static inline unsigned int fnn_ftz_on(void) { return 0; }
    static inline void fnn_ftz_restore(unsigned int c) { (void)c; }
    #endif
    """
    unsigned int fnn_ftz_on() noexcept nogil
    void fnn_ftz_restore(unsigned int) noexcept nogil


cdef inline void _sgd_chunk(Py_ssize_t n, floating *p, const floating *g, floating *buf,
                            floating lr, floating mom, floating damp1, floating wd,
                            bint nesterov, floating sign, bint first) noexcept nogil:
    # PyTorch's torch.optim.SGD, element by element (the loops: sgd in fnn_simd_impl.h,
    # one branch-free vectorized loop per flag combination, in the CPU's widest vectors):
    #   d = -g if maximize else g;  d += wd * p;
    #   buf = d (first step) or mom * buf + (1 - dampening) * d;
    #   d = d + mom * buf if nesterov else buf;  p -= lr * d
    cdef int flags = 0
    if wd != 0:
        flags = flags | FNN_SGD_WD
    if mom != 0:
        flags = flags | FNN_SGD_MOMENTUM
        if first:
            flags = flags | FNN_SGD_FIRST
        if nesterov:
            flags = flags | FNN_SGD_NESTEROV
    cdef unsigned int csr = fnn_ftz_on()
    if floating is float:
        kern_s().sgd(n, p, g, buf, lr, mom, damp1, wd, sign, flags)
    else:
        kern_d().sgd(n, p, g, buf, lr, mom, damp1, wd, sign, flags)
    fnn_ftz_restore(csr)


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


cdef void opt_update(const OptHyper *h, Py_ssize_t n, floating *p, const floating *g,
                     void **state, bint first, int n_threads) noexcept nogil:
    """One update of parameter p (n contiguous values) from its gradient g and its state
    buffers, as optimizer h.kind does it: the one dispatch that both Optimizer.step() (through
    _update) and the compiled step call.  A NULL state buffer is one the update does not use
    (SGD's momentum buffer when momentum == 0); `first`: the state buffers are new and this
    update initialises them."""
    if h.kind == OptKind.SGD:
        # v: lr, momentum, dampening, weight_decay, nesterov, maximize; state: momentum buffer
        sgd_update(n, p, g, <floating *>state[0], <floating>h.v[0], <floating>h.v[1],
                   <floating>h.v[2], <floating>h.v[3], h.v[4] != 0, h.v[5] != 0, first,
                   n_threads)


def _update(int kind, tuple hyper, long long t, floating[::1] p, const floating[::1] g,
            tuple state, bint first, int n_threads=-1):
    """Python entry point (fastnn/optim/optimizer.py, Optimizer.step): opt_update on one parameter.
    hyper: the optimizer's _hyper (floats); state: its state buffers for p (each a
    contiguous array of p's size and dtype, or None)."""
    cdef OptHyper h
    cdef void *bufs[OPT_MAX_STATE]
    cdef int j
    cdef floating[::1] b
    cdef int nt = loop_threads(current_engine(), n_threads)
    h.kind = kind
    h.t = t
    for j in range(OPT_MAX_HYPER):
        h.v[j] = hyper[j] if j < len(hyper) else 0.0
    for j in range(OPT_MAX_STATE):
        bufs[j] = NULL
        if j < len(state) and state[j] is not None:
            b = state[j]
            bufs[j] = &b[0] if b.shape[0] > 0 else NULL
    if p.shape[0] == 0:
        return
    with nogil:
        opt_update(&h, p.shape[0], &p[0], &g[0], bufs, first, nt)
