# cython: language_level=3
"""fastnn's own packed GEMM engine.

    C = act(alpha * op(A) @ op(B) + beta * C + bias)

BLIS-style: B is packed into KC x NR micro-panels, A into MR x KC micro-panels (any strides,
so a transposed or sliced view costs no copy), and a register-tiled C microkernel
(fnn_simd_impl.h; AVX-512, AVX2+FMA or baseline vectors, chosen at run time) computes each
MR x NR tile and writes it back with the bias and activation fused in.

Threads own whole output cells (a 2-D grid of row x column blocks aligned to MR/NR); K is
never split, so each output element is summed by one thread in one fixed order and the
result is bitwise identical for any thread count.  Packing buffers are per thread.
"""
from cython.parallel cimport prange
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from libc.string cimport memset

from ._core cimport (fnn_kern_s, fnn_kern_d, kern_s, kern_d, workspace, scale_bias_act,
                     bias_act, Activation)

# Below PARALLEL_MIN_FLOPS flops (2*M*N*K) a GEMM runs on one thread, and each extra thread
# must get at least FLOPS_PER_THREAD: a parallel region plus the duplicated packing costs more
# than it saves on small problems.  Measured with bench/threshold.py (see the README).
cdef double PARALLEL_MIN_FLOPS = 2e6
cdef double FLOPS_PER_THREAD = 1e6


# Read a row-major A, and a row-major B, in place instead of packing them (ukr_strided in
# fnn_simd_impl.h) when they are reused little (64x1000x100 float32: 61 -> 75 GFLOP/s;
# 500^3 lost 15 % in place, so larger operands are packed).  Only when the row stride
# spreads successive rows over the L1 cache sets: with a stride of 2 KiB, say, a B
# micro-panel's rows fall into 4 of 64 sets and thrash (512^3 float32 ran at 15 GFLOP/s
# instead of 85).  A power-of-two-ish stride is packed instead.
cdef bint DIRECT_A = True
cdef bint DIRECT_B = True
cdef enum:
    IN_PLACE_MAX_PANELS = 8
# operands spanning at most this many bytes are read in place (see _gemm_cell)
cdef Py_ssize_t SMALL_SPAN = 16384


def _set_direct(bint a, bint b, small_span=None):
    """Tuning hook: read A / B in place where the rules in _gemm_cell allow (True) or always
    pack them (False); small_span: operands spanning at most this many bytes are read in
    place whatever their reuse and stride (0: off).
    Returns the previous (a, b, small_span)."""
    global DIRECT_A, DIRECT_B, SMALL_SPAN
    old = (DIRECT_A, DIRECT_B, SMALL_SPAN)
    DIRECT_A = a
    DIRECT_B = b
    if small_span is not None:
        SMALL_SPAN = small_span
    return old


cdef inline bint _in_place(Py_ssize_t unit_stride, Py_ssize_t row_stride,
                           Py_ssize_t itemsize) noexcept nogil:
    """Unit inner stride, and gcd(row stride in bytes, 4096) <= 128: successive rows then
    start in at least 32 different 64-byte L1 sets (4 KiB = one way of the L1)."""
    if unit_stride != 1:
        return False
    cdef Py_ssize_t a = row_stride * itemsize, b = 4096, t
    if a < 0:
        a = -a
    while b != 0:
        t = a % b
        a = b
        b = t
    return a <= 128


def _set_parallel_threshold(double min_flops, double flops_per_thread):
    """Tuning hook for bench/threshold.py."""
    global PARALLEL_MIN_FLOPS, FLOPS_PER_THREAD
    PARALLEL_MIN_FLOPS = min_flops
    FLOPS_PER_THREAD = flops_per_thread


def _get_parallel_threshold():
    return PARALLEL_MIN_FLOPS, FLOPS_PER_THREAD


cdef inline Py_ssize_t _cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef void _pack_a(int mc, int kc, const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                  floating *dst, int mr) noexcept nogil:
    """dst[p][k*mr + i] = A[p*mr + i, k], rows past mc zero-filled: the MR-row micro-panels
    of A, and (called on B^T, i.e. with B's strides swapped) the NR-column ones of B."""
    cdef int p = 0, i, k, rows
    cdef const floating *src
    cdef floating *d
    while p < mc:
        rows = mc - p
        if rows > mr:
            rows = mr
        d = dst + p * kc
        if csa == 1:     # row-major: a transpose, in vector registers (pads itself)
            if floating is float:
                kern_s().pack_t(rows, kc, A + p * rsa, rsa, d, mr)
            else:
                kern_d().pack_t(rows, kc, A + p * rsa, rsa, d, mr)
            p += mr
            continue
        if rows < mr:
            # a partial panel is zeroed in one go (padding it per k became one memset
            # call per k)
            memset(d, 0, <size_t>kc * mr * sizeof(floating))
        if rsa == 1:     # column-contiguous (e.g. a row-major B): unit-stride copies
            for k in range(kc):
                src = A + k * csa + p
                for i in range(rows):
                    d[k * mr + i] = src[i]
        else:
            for k in range(kc):
                src = A + k * csa + p * rsa
                for i in range(rows):
                    d[k * mr + i] = src[i * rsa]
        p += mr


cdef inline Py_ssize_t _span(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t rs,
                             Py_ssize_t cs, Py_ssize_t itemsize) noexcept nogil:
    """Bytes between the first and one past the last element of a rows x cols operand."""
    if rs < 0:
        rs = -rs
    if cs < 0:
        cs = -cs
    return ((rows - 1) * rs + (cols - 1) * cs + 1) * itemsize


cdef int _gemm_cell(int m0, int m1, int n0, int n1, int K, floating alpha,
                    const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                    const floating *B, Py_ssize_t rsb, Py_ssize_t csb,
                    floating beta, floating *C, Py_ssize_t rsc,
                    const floating *bias, int act, floating slope) noexcept nogil:
    """Serial BLIS loops over the output block C[m0:m1, n0:n1]. Returns 0, or -1 when the
    packing workspace cannot be allocated."""
    # the kernel table entry is read once: kern_s()/kern_d() is a call into _core
    cdef const fnn_kern_s *ks = NULL
    cdef const fnn_kern_d *kd = NULL
    cdef int mr, nr, kc, mc, nc
    if floating is float:
        ks = kern_s()
        mr = ks.mr; nr = ks.nr; kc = ks.kc; mc = ks.mc; nc = ks.nc
    else:
        kd = kern_d()
        mr = kd.mr; nr = kd.nr; kc = kd.kc; mc = kd.mc; nc = kd.nc
    # balanced K blocks, up to 1/8 deeper than KC: K=784 runs as 3 x 262 rather than
    # 3 x 256 + 16 (a sliver that costs a whole pass over C).  Depends on K only, so every
    # thread count sums in the same order.
    cdef int nkb = <int>_cdiv(<Py_ssize_t>K * 8, <Py_ssize_t>kc * 9)
    kc = <int>_cdiv(K, nkb if nkb > 0 else 1)
    cdef int kcap = K if K < kc else kc
    cdef int mcap = <int>(_cdiv(min(mc, m1 - m0), mr) * mr)
    cdef int ncap = <int>(_cdiv(min(nc, n1 - n0), nr) * nr)

    cdef int jc, pc, ic, jr, ir, ncur, kcur, mcur, mt, nt, last_act, full_rows, full_cols
    cdef floating beta_k
    cdef const floating *bias_k
    cdef const floating *apanel
    cdef const floating *bpanel
    cdef Py_ssize_t ars, acs, bks
    cdef Py_ssize_t isz = sizeof(floating)
    # Packing pays when the packed panels are reused: A across the cell's column panels,
    # B across its row panels.  With few of them (<= IN_PLACE_MAX_PANELS) read in place.
    # An operand whose whole address span fits in SMALL_SPAN bytes is read in place
    # whatever its stride or reuse: it sits in L1 after the first tile, and a span that
    # small puts at most SMALL_SPAN/4 KiB of its lines in any L1 set, so the power-of-two
    # strides of small layers (a 64-float row = 256 B) cannot thrash.  A is read in place
    # row-major (unit column stride: x, dz) or column-major (unit row stride: dz^T in
    # grad_W = dz^T @ x, whose MR rows then load like a packed panel).
    # (DIRECT_A / DIRECT_B off: always pack, for the tests that compare both paths.)
    cdef bint a_small = _span(m1 - m0, K, rsa, csa, isz) <= SMALL_SPAN
    cdef bint b_small = _span(K, n1 - n0, rsb, csb, isz) <= SMALL_SPAN
    cdef bint a_few = _cdiv(n1 - n0, nr) <= IN_PLACE_MAX_PANELS
    cdef bint a_rows = DIRECT_A and csa == 1 and (a_small or (a_few and _in_place(csa, rsa, isz)))
    cdef bint a_cols = (DIRECT_A and not a_rows and rsa == 1
                        and (a_small or (a_few and _in_place(rsa, csa, isz))))
    cdef bint direct = a_rows or a_cols
    cdef bint direct_b = DIRECT_B and csb == 1 and (b_small or (
        _cdiv(m1 - m0, mr) <= IN_PLACE_MAX_PANELS and _in_place(csb, rsb, isz)))
    # scratch only when something is packed: partial edge panels at least
    cdef bint need_ws = (not direct or (m1 - m0) % mr != 0 or not direct_b
                         or (n1 - n0) % nr != 0)
    cdef Py_ssize_t abytes = _cdiv(<Py_ssize_t>mcap * kcap * isz, 64) * 64
    cdef char *ws = NULL
    if need_ws:
        ws = <char *>workspace(abytes + <Py_ssize_t>ncap * kcap * isz)
        if ws == NULL:
            return -1
    cdef floating *abuf = <floating *>ws
    cdef floating *bbuf = <floating *>(ws + abytes)
    jc = n0
    while jc < n1:
        ncur = n1 - jc if n1 - jc < nc else nc
        pc = 0
        while pc < K:
            kcur = K - pc if K - pc < kc else kc
            # B's kc x nc block is packed like A's, as the rows of B^T (strides swapped); read
            # in place, only a partial last column panel is packed
            if direct_b:
                full_cols = (ncur // nr) * nr
                if full_cols < ncur:
                    _pack_a(ncur - full_cols, kcur, B + pc * rsb + jc + full_cols, 1, rsb, bbuf,
                            nr)
            else:
                _pack_a(ncur, kcur, B + pc * rsb + jc * csb, csb, rsb, bbuf, nr)
            beta_k = beta if pc == 0 else 1
            if pc + kcur >= K:            # last K block: fused bias + activation
                last_act = act
                bias_k = bias + jc if bias != NULL else NULL
            else:
                last_act = Activation.IDENTITY
                bias_k = NULL
            ic = m0
            while ic < m1:
                mcur = m1 - ic if m1 - ic < mc else mc
                if direct:
                    # full row panels are read in place; only a partial last one is packed
                    full_rows = (mcur // mr) * mr
                    if full_rows < mcur:
                        _pack_a(mcur - full_rows, kcur, A + (ic + full_rows) * rsa + pc * csa,
                                rsa, csa, abuf, mr)
                else:
                    _pack_a(mcur, kcur, A + ic * rsa + pc * csa, rsa, csa, abuf, mr)
                jr = 0
                while jr < ncur:
                    nt = ncur - jr if ncur - jr < nr else nr
                    if direct_b and nt == nr:
                        bpanel = B + pc * rsb + jc + jr
                        bks = rsb
                    else:
                        bpanel = bbuf if direct_b else bbuf + jr * kcur
                        bks = nr
                    ir = 0
                    while ir < mcur:
                        mt = mcur - ir if mcur - ir < mr else mr
                        if direct and mt == mr:
                            apanel = A + (ic + ir) * rsa + pc * csa
                            ars = rsa
                            acs = csa
                        else:
                            apanel = abuf if direct else abuf + ir * kcur
                            ars = 1
                            acs = mr
                        if acs == mr and ars == 1 and bks == nr:   # packed: constant strides
                            if floating is float:
                                ks.ukr(kcur, apanel, bpanel, C + (ic + ir) * rsc + jc + jr,
                                       rsc, mt, nt, alpha, beta_k,
                                       bias_k + jr if bias_k != NULL else NULL, last_act,
                                       slope)
                            else:
                                kd.ukr(kcur, apanel, bpanel, C + (ic + ir) * rsc + jc + jr,
                                       rsc, mt, nt, alpha, beta_k,
                                       bias_k + jr if bias_k != NULL else NULL, last_act,
                                       slope)
                        elif floating is float:
                            ks.ukr_strided(kcur, apanel, ars, acs, bpanel, bks,
                                           C + (ic + ir) * rsc + jc + jr, rsc, mt, nt,
                                           alpha, beta_k,
                                           bias_k + jr if bias_k != NULL else NULL,
                                           last_act, slope)
                        else:
                            kd.ukr_strided(kcur, apanel, ars, acs, bpanel, bks,
                                           C + (ic + ir) * rsc + jc + jr, rsc, mt, nt,
                                           alpha, beta_k,
                                           bias_k + jr if bias_k != NULL else NULL,
                                           last_act, slope)
                        ir += mr
                    jr += nr
                ic += mc
            pc += kcur
        jc += nc
    return 0


cdef int gemm_threads(int M, int N, int K, int n_threads) noexcept nogil:
    """How many threads a GEMM of this size uses (small problems run on one)."""
    cdef double flops = 2.0 * M * N * K
    if n_threads <= 1 or flops < PARALLEL_MIN_FLOPS:
        return 1
    cdef double cap = flops / max(FLOPS_PER_THREAD, 1.0)
    if cap < n_threads:
        return <int>cap
    return n_threads


cdef void _choose_grid(int M, int N, int mu, int nu, int mr, int nr, int nt,
                       int *gm, int *gn) noexcept nogil:
    """Split mu x nu units (MR x NR tiles) into gm x gn cells, gm*gn <= nt, minimising the
    largest cell's compute plus its packing traffic."""
    cdef int t, g, h
    cdef double rows, cols, cost, best = -1
    gm[0] = 1
    gn[0] = 1
    t = nt
    while t >= 1:
        for g in range(1, t + 1):
            if t % g != 0:
                continue
            h = t // g
            if g > mu or h > nu:
                continue
            rows = <double>min(M, _cdiv(mu, g) * mr)
            cols = <double>min(N, _cdiv(nu, h) * nr)
            cost = rows * cols + 4.0 * (rows + cols)
            if best < 0 or cost < best:
                best = cost
                gm[0] = g
                gn[0] = h
        if best >= 0:
            return
        t -= 1


# At most GEMV_MAX_M rows (a batch of one or two: request-time inference), C = A @ B + bias
# runs as matrix-vector products reading B in place: packing all of B (a 784x512 weight is
# 1.6 MB) for one row cost 2x the product itself.  Dot form where B's rows are contiguous
# along K (x @ W.T), axpy form where they are contiguous along N (dz @ W); each output is
# summed in one fixed order on one thread, the bias and activation by bias_act (the
# epilogue the K == 0 path uses).
cdef int GEMV_MAX_M = 2
cdef enum:
    GEMV_LANES = 16


def _set_gemv_max_m(int m):
    """Tuning hook: GEMMs with at most m rows (and beta == 0) run as matrix-vector
    products (0: off).  Returns the previous value."""
    global GEMV_MAX_M
    old = GEMV_MAX_M
    GEMV_MAX_M = m
    return old


cdef void _gemv_dot(int N, int K, floating alpha, const floating *a, const floating *B,
                    Py_ssize_t csb, floating *c) noexcept nogil:
    """c[j] = alpha * sum_k a[k] B[k, j], B[k, j] at B + k + j*csb: GEMV_LANES partial sums
    (k mod GEMV_LANES) added in lane order, then the tail."""
    cdef floating s[GEMV_LANES]
    cdef floating t
    cdef int j, k, l
    cdef const floating *w
    for j in range(N):
        w = B + <Py_ssize_t>j * csb
        for l in range(GEMV_LANES):
            s[l] = 0
        k = 0
        while k + GEMV_LANES <= K:
            for l in range(GEMV_LANES):
                s[l] = s[l] + a[k + l] * w[k + l]
            k += GEMV_LANES
        t = 0
        for l in range(GEMV_LANES):
            t = t + s[l]
        while k < K:
            t = t + a[k] * w[k]
            k += 1
        c[j] = alpha * t


cdef void _gemv_axpy(int N, int K, floating alpha, const floating *a, Py_ssize_t csa,
                     const floating *B, Py_ssize_t rsb, floating *c) noexcept nogil:
    """c[j] = alpha * sum_k a[k] B[k, j], B's rows contiguous: c += a[k] * B[k, :] for
    k = 0, 1, ..."""
    cdef int j, k
    cdef floating ak
    cdef const floating *brow
    for j in range(N):
        c[j] = 0
    for k in range(K):
        ak = a[<Py_ssize_t>k * csa]
        brow = B + <Py_ssize_t>k * rsb
        for j in range(N):
            c[j] = c[j] + ak * brow[j]
    for j in range(N):
        c[j] = alpha * c[j]


cdef int gemm_native(int M, int N, int K, floating alpha,
                     const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                     const floating *B, Py_ssize_t rsb, Py_ssize_t csb,
                     floating beta, floating *C, Py_ssize_t rsc,
                     const floating *bias, int act, floating slope,
                     int n_threads) noexcept nogil:
    """C[M,N] = act(alpha * A[M,K] @ B[K,N] + beta * C + bias), element strides given.
    C has unit column stride.  beta == 0 never reads C.  Returns 0 or -1 (out of memory)."""
    if M <= 0 or N <= 0:
        return 0
    if K <= 0 or alpha == 0:
        scale_bias_act(M, N, C, rsc, beta, bias, act, slope)
        return 0

    cdef int i
    if M <= GEMV_MAX_M and beta == 0 and ((rsb == 1 and csa == 1) or csb == 1):
        for i in range(M):
            if rsb == 1 and csa == 1:
                _gemv_dot(N, K, alpha, A + <Py_ssize_t>i * rsa, B, csb,
                          C + <Py_ssize_t>i * rsc)
            else:
                _gemv_axpy(N, K, alpha, A + <Py_ssize_t>i * rsa, csa, B, rsb,
                           C + <Py_ssize_t>i * rsc)
        bias_act(M, N, C, rsc, bias, act, slope, 1)
        return 0

    cdef int mr, nr
    if floating is float:
        mr = kern_s().mr; nr = kern_s().nr
    else:
        mr = kern_d().mr; nr = kern_d().nr
    cdef int nt = gemm_threads(M, N, K, n_threads)
    if nt == 1:
        return _gemm_cell(0, M, 0, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc,
                          bias, act, slope)

    cdef int mu = <int>_cdiv(M, mr), nu = <int>_cdiv(N, nr), gm, gn
    _choose_grid(M, N, mu, nu, mr, nr, nt, &gm, &gn)
    cdef int cells = gm * gn, cell, err = 0, m0, m1, n0, n1, gi, gj
    if cells == 1:
        return _gemm_cell(0, M, 0, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc,
                          bias, act, slope)
    for cell in prange(cells, nogil=True, num_threads=cells, schedule='static', chunksize=1):
        gi = cell // gn
        gj = cell % gn
        m0 = min(M, (gi * mu // gm) * mr)
        m1 = min(M, ((gi + 1) * mu // gm) * mr)
        n0 = min(N, (gj * nu // gn) * nr)
        n1 = min(N, ((gj + 1) * nu // gn) * nr)
        if m1 > m0 and n1 > n0:
            err += _gemm_cell(m0, m1, n0, n1, K, alpha, A, rsa, csa, B, rsb, csb, beta,
                              C, rsc, bias, act, slope)
    return -1 if err != 0 else 0


def _bench_gemm(const floating[:, :] A, const floating[:, :] B, floating[:, :] C,
                double beta, const floating[::1] bias, int act, int n_threads, long reps):
    """Tuning hook (bench/tiny.py): mean ns per gemm_native call over `reps` calls made in
    one nogil C loop, so small GEMMs are timed without the Python call overhead.  A (M,K) and
    B (K,N) any strides (pass transposed views for the layouts dense.pyx uses), C (M,N) unit
    column stride; an empty bias means none."""
    cdef int M = <int>C.shape[0], N = <int>C.shape[1], K = <int>A.shape[1], err = 0
    cdef long r
    cdef timespec t0, t1
    cdef const floating *pa = &A[0, 0] if A.shape[0] > 0 and A.shape[1] > 0 else NULL
    cdef const floating *pb = &B[0, 0] if B.shape[0] > 0 and B.shape[1] > 0 else NULL
    cdef floating *pc = &C[0, 0] if C.shape[0] > 0 and C.shape[1] > 0 else NULL
    cdef const floating *pbias = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t it = sizeof(floating)
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        for r in range(reps):
            err |= gemm_native(M, N, K, <floating>1, pa, A.strides[0] // it, A.strides[1] // it,
                               pb, B.strides[0] // it, B.strides[1] // it, <floating>beta,
                               pc, C.strides[0] // it, pbias, act, <floating>0, n_threads)
        clock_gettime(CLOCK_MONOTONIC, &t1)
    if err:
        raise MemoryError("fastnn gemm: could not allocate its packing workspace")
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / max(reps, 1)
