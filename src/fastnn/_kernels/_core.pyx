# cython: language_level=3
"""Process-wide state of the compiled core (engine, threads, kernel variant) and the
elementwise kernels shared by both GEMM engines: activation forward/backward, bias add and
deterministic column sums."""
from cython.parallel cimport prange
from ._openmp cimport FNN_HAVE_OPENMP, omp_get_max_threads

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from *:
    """
    #ifndef FNN_BUILD
    #define FNN_BUILD "unknown"
    #endif
    """
    const char *FNN_BUILD


def build_info():
    """How the extensions were compiled: "release -O3 -g0", "debug -O0 -g", "sanitize ..."
    (setup.py; "unknown" when built otherwise)."""
    return FNN_BUILD.decode()


cdef extern from "fnn_simd.h" nogil:
    fnn_kern_s fnn_kerns_s[]
    fnn_kern_d fnn_kerns_d[]
    const char *fnn_variant_names[]
    int fnn_variant_supported(int v)
    void *fnn_workspace(size_t nbytes)
    double fnn_fma_peak(int variant, int is_double, long n, double *flops)

cdef int _engine = Engine.NATIVE
cdef int _threads = 0          # 0: follow omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl)
cdef int _variant = 0


cdef int current_engine() noexcept nogil:
    return _engine


cdef int current_threads() noexcept nogil:
    if _threads > 0:
        return _threads
    cdef int n = omp_get_max_threads()
    return n if n > 0 else 1


cdef int current_variant() noexcept nogil:
    return _variant


cdef const fnn_kern_s *kern_s() noexcept nogil:
    return &fnn_kerns_s[_variant]


cdef const fnn_kern_d *kern_d() noexcept nogil:
    return &fnn_kerns_d[_variant]


cdef void *workspace(size_t nbytes) noexcept nogil:
    return fnn_workspace(nbytes)


# ---------------------------------------------------------------- Python-visible state
VARIANTS = tuple(fnn_variant_names[i].decode() for i in range(FNN_N_VARIANTS))


def supported_variants():
    """Kernel variants this CPU can run, slowest first."""
    return tuple(VARIANTS[i] for i in range(FNN_N_VARIANTS) if fnn_variant_supported(i))


def get_variant():
    return VARIANTS[_variant]


def set_variant(str name):
    global _variant
    if name not in VARIANTS:
        raise ValueError(f"unknown kernel variant {name!r}; expected one of {VARIANTS}")
    cdef int v = VARIANTS.index(name)
    if not fnn_variant_supported(v):
        raise ValueError(f"kernel variant {name!r} is not supported by this CPU "
                         f"(supported: {supported_variants()})")
    _variant = v


def get_engine_code():
    return _engine


def set_engine_code(int code):
    global _engine
    if code not in (Engine.NATIVE, Engine.BLAS):
        raise ValueError(f"bad engine code {code}")
    _engine = code


def get_num_threads():
    return current_threads()


def set_num_threads_raw(int n):
    global _threads
    _threads = n


def openmp_enabled():
    return bool(FNN_HAVE_OPENMP)


def kernel_blocking(str dtype):
    """(MR, NR, KC, MC, NC) of the current variant for 'float32' or 'float64'."""
    if dtype == "float32":
        return (kern_s().mr, kern_s().nr, kern_s().kc, kern_s().mc, kern_s().nc)
    return (kern_d().mr, kern_d().nr, kern_d().kc, kern_d().mc, kern_d().nc)


# the fastest variant this CPU supports (fastnn._config applies FASTNN_KERNEL on import)
set_variant(supported_variants()[len(supported_variants()) - 1])


# ---------------------------------------------------------------- elementwise kernels
cdef inline void _act_row(Py_ssize_t n, const floating *x, floating *y, int act,
                          floating slope) noexcept nogil:
    if floating is float:
        kern_s().act_fwd(n, x, y, act, slope)
    else:
        kern_d().act_fwd(n, x, y, act, slope)


cdef void act_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                      floating *y, Py_ssize_t rsy, int act, floating slope,
                      int n_threads) noexcept nogil:
    """y[i, :] = act(x[i, :]) for m rows of n contiguous values (x == y allowed)."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            _act_row(n, x + i * rsx, y + i * rsy, act, slope)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _act_row(n, x + i * rsx, y + i * rsy, act, slope)


cdef inline void _act_bwd_row(Py_ssize_t n, const floating *g, const floating *y, floating *dz,
                              int act, floating slope) noexcept nogil:
    if floating is float:
        kern_s().act_bwd(n, g, y, dz, act, slope)
    else:
        kern_d().act_bwd(n, g, y, dz, act, slope)


cdef void act_backward(Py_ssize_t m, Py_ssize_t n, const floating *g, Py_ssize_t rsg,
                       const floating *y, Py_ssize_t rsy, floating *dz, Py_ssize_t rsdz,
                       int act, floating slope, int n_threads) noexcept nogil:
    """dz = g * act'(y) row by row (g == dz allowed)."""
    cdef Py_ssize_t i
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            _act_bwd_row(n, g + i * rsg, y + i * rsy, dz + i * rsdz, act, slope)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _act_bwd_row(n, g + i * rsg, y + i * rsy, dz + i * rsdz, act, slope)


cdef inline void _bias_act_row(Py_ssize_t n, floating *c, const floating *bias, int act,
                               floating slope) noexcept nogil:
    cdef Py_ssize_t j
    if bias != NULL:
        for j in range(n):
            c[j] = c[j] + bias[j]
    if act != Activation.IDENTITY:
        _act_row(n, c, c, act, slope)


cdef void bias_act(Py_ssize_t m, Py_ssize_t n, floating *c, Py_ssize_t rsc,
                   const floating *bias, int act, floating slope, int n_threads) noexcept nogil:
    """c[i, :] = act(c[i, :] + bias) in place."""
    cdef Py_ssize_t i
    if bias == NULL and act == Activation.IDENTITY:
        return
    cdef int nt = elem_threads(m, n, n_threads)
    if nt == 1:
        for i in range(m):
            _bias_act_row(n, c + i * rsc, bias, act, slope)
    else:
        for i in prange(m, nogil=True, num_threads=nt, schedule='static'):
            _bias_act_row(n, c + i * rsc, bias, act, slope)


cdef void scale_bias_act(Py_ssize_t m, Py_ssize_t n, floating *c, Py_ssize_t rsc,
                         floating beta, const floating *bias, int act,
                         floating slope) noexcept nogil:
    """c = act(beta * c + bias) in place, single-threaded; beta == 0 never reads c.  The
    whole GEMM when there is no product to add (K == 0 or alpha == 0)."""
    cdef Py_ssize_t i, j
    cdef floating *crow
    for i in range(m):
        crow = c + i * rsc
        for j in range(n):
            crow[j] = 0 if beta == 0 else beta * crow[j]
    bias_act(m, n, c, rsc, bias, act, slope, 1)


# Column sums: each thread owns whole blocks of COLBLOCK columns (so every output is summed
# by one thread in one fixed order); rows are summed in chunks of ROWCHUNK whose partials are
# added in chunk order (better accuracy than one long running sum).  Bitwise identical for
# any thread count.
cdef enum:
    COLBLOCK = 64
    ROWCHUNK = 128


cdef void _col_sums_block(Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1, const floating *x,
                          Py_ssize_t rsx, floating *out, bint accumulate) noexcept nogil:
    cdef floating total[COLBLOCK]
    cdef floating part[COLBLOCK]
    cdef Py_ssize_t w = j1 - j0, i, j, r0, r1
    cdef const floating *row
    for j in range(w):
        total[j] = 0
    r0 = 0
    while r0 < m:
        r1 = r0 + ROWCHUNK
        if r1 > m:
            r1 = m
        for j in range(w):
            part[j] = 0
        for i in range(r0, r1):
            row = x + i * rsx + j0
            for j in range(w):
                part[j] = part[j] + row[j]
        for j in range(w):
            total[j] = total[j] + part[j]
        r0 = r1
    if accumulate:
        for j in range(w):
            out[j0 + j] = out[j0 + j] + total[j]
    else:
        for j in range(w):
            out[j0 + j] = total[j]


cdef void col_sums(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                   floating *out, bint accumulate, int n_threads) noexcept nogil:
    """out[j] (+)= sum_i x[i, j] over m rows of n contiguous values."""
    cdef Py_ssize_t nb = (n + COLBLOCK - 1) // COLBLOCK, b, j1
    cdef int nt = elem_threads(m, n, n_threads)
    if nt > nb:
        nt = <int>nb
    if nt <= 1:
        for b in range(nb):
            j1 = (b + 1) * COLBLOCK
            _col_sums_block(m, b * COLBLOCK, j1 if j1 < n else n, x, rsx, out, accumulate)
    else:
        for b in prange(nb, nogil=True, num_threads=nt, schedule='static'):
            _col_sums_block(m, b * COLBLOCK, n if (b + 1) * COLBLOCK > n else (b + 1) * COLBLOCK,
                            x, rsx, out, accumulate)


def _fma_peak(str dtype, long rounds=2000000):
    """Benchmark hook (bench/gemm.py): GFLOP/s of the current variant's FMA ceiling loop --
    the microkernel's MR x NR/VL accumulators updated by fused multiply-adds `rounds` times,
    registers only -- on the calling thread."""
    cdef double flops = 0, sink
    cdef timespec t0, t1
    cdef int is_double = dtype == "float64"
    if not is_double and dtype != "float32":
        raise ValueError(f"_fma_peak: dtype must be 'float32' or 'float64', got {dtype!r}")
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        sink = fnn_fma_peak(_variant, is_double, rounds, &flops)
        clock_gettime(CLOCK_MONOTONIC, &t1)
    cdef double secs = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec)
    if sink != sink:    # never true for these inputs; keeps the result used
        raise RuntimeError("_fma_peak: NaN")
    return flops / max(secs, 1e-12) / 1e9


def _set_blocking(str dtype, int kc, int mc, int nc):
    """Tuning hook (bench/tune.py): change KC, MC, NC of the current variant.  MC and NC
    are rounded up to multiples of MR and NR."""
    cdef fnn_kern_s *k
    cdef fnn_kern_d *kd
    if kc < 1 or mc < 1 or nc < 1:
        raise ValueError("blocking sizes must be positive")
    if dtype == "float32":
        k = &fnn_kerns_s[_variant]
        k.kc = kc
        k.mc = (mc + k.mr - 1) // k.mr * k.mr
        k.nc = (nc + k.nr - 1) // k.nr * k.nr
    else:
        kd = &fnn_kerns_d[_variant]
        kd.kc = kc
        kd.mc = (mc + kd.mr - 1) // kd.mr * kd.mr
        kd.nc = (nc + kd.nr - 1) // kd.nr * kd.nr
