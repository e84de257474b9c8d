# cython: language_level=3
"""Second GEMM engine: row-major wrappers over scipy.linalg.cython_blas (the BLAS SciPy
ships, OpenBLAS in the wheels), with the same contract as the native engine.  Used as a
fallback on CPUs without AVX2/FMA and as an independent test oracle.

Row-major C = A @ B is column-major C^T = B^T @ A^T, so the operands are swapped.  An operand
with no unit stride (e.g. x[::2, ::2]) is copied into a contiguous buffer first.  The bias +
activation epilogue is a separate single-threaded pass: OpenBLAS's thread pool and our
OpenMP pool never run at the same time.
"""
from libc.stdlib cimport malloc, free
from scipy.linalg.cython_blas cimport sgemm, dgemm

from ._core cimport bias_act, scale_bias_act


cdef bint _blas_layout(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t rs, Py_ssize_t cs,
                       char *trans, int *ld) noexcept nogil:
    """Describe row-major rows x cols (strides rs, cs) to column-major BLAS as op(X^T):
    'N' with ld=rs when rows are contiguous, 'T' with ld=cs when columns are."""
    if cols <= 1:
        cs = 1
    if rows <= 1:
        rs = cols if cs == 1 else 1
        if rs < 1:
            rs = 1
    if cs == 1 and rs >= max(1, cols) and rs < 2147483647:
        trans[0] = b'N'
        ld[0] = <int>rs
        return True
    if rs == 1 and cs >= max(1, rows) and cs < 2147483647:
        trans[0] = b'T'
        ld[0] = <int>cs
        return True
    return False


cdef floating *_contiguous_copy(Py_ssize_t rows, Py_ssize_t cols, const floating *X,
                                Py_ssize_t rs, Py_ssize_t cs) noexcept nogil:
    cdef floating *out = <floating *>malloc(max(1, rows * cols) * sizeof(floating))
    cdef Py_ssize_t i, j
    if out != NULL:
        for i in range(rows):
            for j in range(cols):
                out[i * cols + j] = X[i * rs + j * cs]
    return out


cdef int gemm_blas(int M, int N, int K, floating alpha,
                   const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                   const floating *B, Py_ssize_t rsb, Py_ssize_t csb,
                   floating beta, floating *C, Py_ssize_t rsc,
                   const floating *bias, int act, floating slope) noexcept nogil:
    """Same contract as gemm_native (C unit column stride, beta == 0 never reads C).
    Returns 0, or -1 when a temporary copy cannot be allocated."""
    if M <= 0 or N <= 0:
        return 0
    if K <= 0 or alpha == 0:
        scale_bias_act(M, N, C, rsc, beta, bias, act, slope)
        return 0

    cdef char ta, tb
    cdef int lda, ldb, ldc
    cdef floating *acopy = NULL
    cdef floating *bcopy = NULL
    if not _blas_layout(M, K, rsa, csa, &ta, &lda):
        acopy = _contiguous_copy(M, K, A, rsa, csa)
        if acopy == NULL:
            return -1
        A = acopy
        _blas_layout(M, K, K, 1, &ta, &lda)
    if not _blas_layout(K, N, rsb, csb, &tb, &ldb):
        bcopy = _contiguous_copy(K, N, B, rsb, csb)
        if bcopy == NULL:
            free(acopy)
            return -1
        B = bcopy
        _blas_layout(K, N, N, 1, &tb, &ldb)
    ldc = <int>(rsc if M > 1 else max(1, N))

    cdef int m_ = N, n_ = M, k_ = K
    if floating is float:
        sgemm(&tb, &ta, &m_, &n_, &k_, &alpha, <float *>B, &ldb, <float *>A, &lda, &beta,
              C, &ldc)
    else:
        dgemm(&tb, &ta, &m_, &n_, &k_, &alpha, <double *>B, &ldb, <double *>A, &lda, &beta,
              C, &ldc)
    free(acopy)
    free(bcopy)
    bias_act(M, N, C, rsc, bias, act, slope, 1)
    return 0
