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
                     fnn_adam_args, fnn_rmsprop_args, OptKind, loop_threads)
from libc.math cimport pow

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


cdef void _moments_range(int kind, const void *args, Py_ssize_t lo, Py_ssize_t hi,
                         floating *p, const floating *g, floating **s) noexcept nogil:
    # values lo..hi of one Adam/AdamW (args: fnn_adam_args) or RMSprop (fnn_rmsprop_args)
    # update, on this thread, with FTZ/DAZ as the SGD update
    cdef floating *s2 = s[2] + lo if s[2] != NULL else NULL
    cdef floating *s1 = s[1] + lo if s[1] != NULL else NULL
    cdef unsigned int csr = fnn_ftz_on()
    if kind == OptKind.RMSPROP:
        if floating is float:
            kern_s().rmsprop(hi - lo, p + lo, g + lo, s[0] + lo, s1, s2,
                             <const fnn_rmsprop_args *>args)
        else:
            kern_d().rmsprop(hi - lo, p + lo, g + lo, s[0] + lo, s1, s2,
                             <const fnn_rmsprop_args *>args)
    else:
        if floating is float:
            kern_s().adam(hi - lo, p + lo, g + lo, s[0] + lo, s1, s2,
                          <const fnn_adam_args *>args)
        else:
            kern_d().adam(hi - lo, p + lo, g + lo, s[0] + lo, s1, s2,
                          <const fnn_adam_args *>args)
    fnn_ftz_restore(csr)


cdef void _moments_update(int kind, const void *args, Py_ssize_t n, floating *p,
                          const floating *g, floating **s, int n_threads) noexcept nogil:
    # elementwise over CHUNK-sized pieces: the result never depends on the thread count
    cdef Py_ssize_t nchunks = (n + CHUNK - 1) // CHUNK, c, lo, hi
    cdef int nt = elem_threads(nchunks, CHUNK, n_threads)
    if nt == 1:
        _moments_range(kind, args, 0, n, p, g, s)
        return
    for c in prange(nchunks, nogil=True, num_threads=nt, schedule='static'):
        lo = c * CHUNK
        hi = lo + CHUNK
        if hi > n:
            hi = n
        _moments_range(kind, args, lo, hi, p, g, s)


cdef void opt_update(const OptHyper *h, Py_ssize_t n, floating *p, const floating *g,
                     void **state, bint first, int n_threads) noexcept nogil:
    """One update of parameter p (n contiguous values) from its gradient g and its state
    buffers, as optimizer h.kind does it: the one dispatch that both Optimizer.step() (through
    _update) and the compiled step call.  A NULL state buffer is one the update does not use
    (SGD's momentum buffer when momentum == 0); `first`: the state buffers are new and this
    update initialises them."""
    cdef fnn_adam_args a
    cdef fnn_rmsprop_args r
    cdef floating *s[3]
    cdef double lr, wd
    s[0] = <floating *>state[0]
    s[1] = <floating *>state[1]
    s[2] = <floating *>state[2]
    if h.kind == OptKind.SGD:
        # v: lr, momentum, dampening, weight_decay, nesterov, maximize; state: momentum buffer
        sgd_update(n, p, g, s[0], <floating>h.v[0], <floating>h.v[1], <floating>h.v[2],
                   <floating>h.v[3], h.v[4] != 0, h.v[5] != 0, first, n_threads)
    elif h.kind == OptKind.ADAM or h.kind == OptKind.ADAMW:
        # v: lr, beta1, beta2, eps, weight_decay, amsgrad, maximize;
        # state: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad); the scalars as torch's
        # _single_tensor_adam computes them (Python floats: pow, not sqrt, for ** 0.5)
        lr = h.v[0]
        wd = h.v[4]
        a.sign = -1.0 if h.v[6] != 0 else 1.0
        a.wd = wd if h.kind == OptKind.ADAM else 0.0
        a.decay = 1.0 - lr * wd if h.kind == OptKind.ADAMW and wd != 0 else 1.0
        a.w1 = 1.0 - h.v[1]
        a.beta2 = h.v[2]
        a.c2 = 1.0 - h.v[2]
        a.bc2_sqrt = pow(1.0 - pow(h.v[2], <double>h.t), 0.5)
        a.eps = h.v[3]
        a.neg_step = -(lr / (1.0 - pow(h.v[1], <double>h.t)))
        a.amsgrad = h.v[5] != 0
        _moments_update(h.kind, &a, n, p, g, s, n_threads)
    elif h.kind == OptKind.RMSPROP:
        # v: lr, alpha, eps, weight_decay, momentum, centered, maximize;
        # state: square_avg, grad_avg (centered), momentum_buffer (momentum > 0)
        r.sign = -1.0 if h.v[6] != 0 else 1.0
        r.wd = h.v[3]
        r.alpha = h.v[1]
        r.c = 1.0 - h.v[1]
        r.eps = h.v[2]
        r.momentum = h.v[4]
        r.neg_lr = -h.v[0]
        r.centered = h.v[5] != 0
        _moments_update(h.kind, &r, n, p, g, s, n_threads)


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
