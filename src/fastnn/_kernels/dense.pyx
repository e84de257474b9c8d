# cython: language_level=3
"""Dense-layer kernels over either GEMM engine, each one nogil call.

These entry points trust their arguments: shapes, dtypes, strides and aliasing are checked
once in fastnn/ops.py (the public boundary).  Strides are element strides; every output and
every array an elementwise pass reads has a unit column stride.
"""
from ._core cimport (current_engine, current_threads, act_forward, act_backward, col_sums,
                     Engine, Activation, loop_threads)
from ._views cimport cptr2, ptr2, cptr1, row_stride, col_stride
from .gemm cimport gemm_native
from .blas cimport gemm_blas


cdef int gemm_any(int engine, int n_threads, int M, int N, int K, floating alpha,
                  const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                  const floating *B, Py_ssize_t rsb, Py_ssize_t csb,
                  floating beta, floating *C, Py_ssize_t rsc,
                  const floating *bias, int act, floating slope) noexcept nogil:
    if engine == Engine.BLAS:
        return gemm_blas(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, bias, act,
                         slope)
    return gemm_native(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, bias, act,
                       slope, n_threads)


cdef inline void _resolve(int *engine, int *n_threads) noexcept nogil:
    if engine[0] < 0:
        engine[0] = current_engine()
    if n_threads[0] <= 0:
        n_threads[0] = current_threads()


def _gemm(const floating[:, :] A, const floating[:, :] B, floating[:, :] C,
          double alpha, double beta, const floating[::1] bias, int act, double slope,
          int engine=-1, int n_threads=-1):
    """C = act(alpha * A @ B + beta * C + bias); A (M,K), B (K,N), C (M,N) any strides for
    A/B, unit column stride for C.  Pass an empty bias for none."""
    _resolve(&engine, &n_threads)
    cdef int M = <int>C.shape[0], N = <int>C.shape[1], K = <int>A.shape[1], err
    with nogil:
        err = gemm_any(engine, n_threads, M, N, K, <floating>alpha, cptr2(A), row_stride(A), col_stride(A),
                       cptr2(B), row_stride(B), col_stride(B), <floating>beta, ptr2(C), row_stride(C),
                       cptr1(bias), act, <floating>slope)
    if err:
        raise MemoryError("fastnn gemm: could not allocate its packing workspace")


def _linear_forward(const floating[:, :] x, const floating[:, :] W, const floating[::1] b,
                    int act, double slope, floating[:, :] out, int engine=-1,
                    int n_threads=-1):
    """out = act(x @ W.T + b); x (M,K), W (N,K), out (M,N)."""
    _resolve(&engine, &n_threads)
    cdef int M = <int>x.shape[0], K = <int>x.shape[1], N = <int>W.shape[0], err
    with nogil:
        # B = W^T: element (k, j) is W[j, k]  ->  row stride = W's column stride
        err = gemm_any(engine, n_threads, M, N, K, <floating>1, cptr2(x), row_stride(x), col_stride(x),
                       cptr2(W), col_stride(W), row_stride(W), <floating>0, ptr2(out), row_stride(out),
                       cptr1(b), act, <floating>slope)
    if err:
        raise MemoryError("fastnn linear_forward: could not allocate its packing workspace")


def _activation_forward(const floating[:, :] x, floating[:, :] out, int act, double slope,
                        int n_threads=-1):
    cdef int engine = -1
    _resolve(&engine, &n_threads)
    if engine == Engine.BLAS:
        n_threads = 1
    with nogil:
        act_forward(x.shape[0], x.shape[1], cptr2(x), row_stride(x), ptr2(out), row_stride(out), act,
                    <floating>slope, n_threads)


def _activation_backward(const floating[:, :] grad_out, const floating[:, :] y,
                         floating[:, :] grad_in, int act, double slope, int n_threads=-1):
    cdef int engine = -1
    _resolve(&engine, &n_threads)
    if engine == Engine.BLAS:
        n_threads = 1
    with nogil:
        act_backward(grad_out.shape[0], grad_out.shape[1], cptr2(grad_out), row_stride(grad_out),
                     cptr2(y), row_stride(y), ptr2(grad_in), row_stride(grad_in), act, <floating>slope,
                     n_threads)


def _linear_backward(const floating[:, :] grad_out, const floating[:, :] x,
                     const floating[:, :] W, const floating[:, :] y, int act, double slope,
                     floating[:, :] grad_x, floating[:, :] grad_W, floating[::1] grad_b,
                     bint accumulate, floating[:, :] work, bint want_grad_x,
                     bint want_grad_b, int engine=-1, int n_threads=-1):
    """Backward of out = act(x @ W.T + b) given y = out (saved) and grad_out (M,N):
        dz = grad_out * act'(y)                      (into `work`, unless identity)
        grad_W (+)= dz.T @ x,  grad_b (+)= sum_rows(dz),  grad_x = dz @ W
    `accumulate` adds into grad_W / grad_b instead of overwriting; grad_x is overwritten."""
    _resolve(&engine, &n_threads)
    cdef int M = <int>x.shape[0], K = <int>x.shape[1], N = <int>W.shape[0], err = 0
    cdef int et = loop_threads(engine, n_threads)   # our own elementwise loops
    cdef const floating *dz
    cdef Py_ssize_t rsdz
    cdef floating zero = 0, one = 1
    with nogil:
        if act == Activation.IDENTITY:
            dz = cptr2(grad_out)
            rsdz = row_stride(grad_out)
        else:
            act_backward(M, N, cptr2(grad_out), row_stride(grad_out), cptr2(y), row_stride(y), ptr2(work),
                         row_stride(work), act, <floating>slope, et)
            dz = ptr2(work)
            rsdz = row_stride(work)
        # grad_W (N,K) = dz^T (N,M) @ x (M,K)
        err = gemm_any(engine, n_threads, N, K, M, one, dz, 1, rsdz, cptr2(x), row_stride(x), col_stride(x),
                       one if accumulate else zero, ptr2(grad_W), row_stride(grad_W), <floating *>NULL,
                       Activation.IDENTITY, zero)
        if want_grad_b and N > 0:
            col_sums(M, N, dz, rsdz, &grad_b[0], accumulate, et)
        if want_grad_x and err == 0:
            # grad_x (M,K) = dz (M,N) @ W (N,K)
            err = gemm_any(engine, n_threads, M, K, N, one, dz, rsdz, 1, cptr2(W), row_stride(W),
                           col_stride(W), zero, ptr2(grad_x), row_stride(grad_x), <floating *>NULL,
                           Activation.IDENTITY, zero)
    if err:
        raise MemoryError("fastnn linear_backward: could not allocate its packing workspace")
