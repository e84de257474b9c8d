# Shared state and elementwise kernels of fastnn's compiled core.
from cython cimport floating

cdef extern from "fnn_types.h" nogil:
    int FNN_ACT_IDENTITY
    int FNN_ACT_RELU
    int FNN_ACT_LEAKY_RELU
    int FNN_ACT_SIGMOID
    int FNN_ACT_TANH
    int FNN_ACT_EXP_NEG
    int FNN_N_VARIANTS
    int FNN_VARIANT_GENERIC
    int FNN_VARIANT_AVX2
    int FNN_VARIANT_AVX512

    ctypedef void (*fnn_ukr_s_t)(long, const float *, const float *, float *, long, int, int,
                                 float, float, const float *, int, float) noexcept nogil
    ctypedef void (*fnn_ukr_d_t)(long, const double *, const double *, double *, long, int, int,
                                 double, double, const double *, int, double) noexcept nogil
    ctypedef void (*fnn_ukrd_s_t)(long, const float *, long, long, const float *, long, float *,
                                  long, int, int, float, float, const float *, int,
                                  float) noexcept nogil
    ctypedef void (*fnn_ukrd_d_t)(long, const double *, long, long, const double *, long,
                                  double *, long, int, int, double, double, const double *, int,
                                  double) noexcept nogil
    ctypedef void (*fnn_pack_s_t)(long, long, const float *, long, float *, long) noexcept nogil
    ctypedef void (*fnn_pack_d_t)(long, long, const double *, long, double *,
                                  long) noexcept nogil
    ctypedef void (*fnn_actf_s_t)(long, const float *, float *, int, float) noexcept nogil
    ctypedef void (*fnn_actf_d_t)(long, const double *, double *, int, double) noexcept nogil
    ctypedef void (*fnn_actb_s_t)(long, const float *, const float *, float *, int, float) noexcept nogil
    ctypedef void (*fnn_actb_d_t)(long, const double *, const double *, double *, int, double) noexcept nogil
    ctypedef void (*fnn_sgd_s_t)(long, float *, const float *, float *, float, float, float,
                                 float, float, int) noexcept nogil
    ctypedef void (*fnn_sgd_d_t)(long, double *, const double *, double *, double, double,
                                 double, double, double, int) noexcept nogil
    int FNN_SGD_WD
    int FNN_SGD_MOMENTUM
    int FNN_SGD_FIRST
    int FNN_SGD_NESTEROV

    ctypedef struct fnn_kern_s:
        int mr, nr, kc, mc, nc
        fnn_ukr_s_t ukr
        fnn_ukrd_s_t ukr_strided
        fnn_pack_s_t pack_t
        fnn_actf_s_t act_fwd
        fnn_actb_s_t act_bwd
        fnn_sgd_s_t sgd
    ctypedef struct fnn_kern_d:
        int mr, nr, kc, mc, nc
        fnn_ukr_d_t ukr
        fnn_ukrd_d_t ukr_strided
        fnn_pack_d_t pack_t
        fnn_actf_d_t act_fwd
        fnn_actb_d_t act_bwd
        fnn_sgd_d_t sgd


cdef enum:
    ENGINE_NATIVE = 0
    ENGINE_BLAS = 1

# Work below this many elements runs on one thread (a parallel region costs a few us).
cdef enum:
    ELEMWISE_PARALLEL_MIN = 65536

# Threads for elementwise work on m rows x n values: one below ELEMWISE_PARALLEL_MIN values,
# then at least ELEMWISE_PARALLEL_MIN / 2 values per thread.
cdef inline int elem_threads(Py_ssize_t m, Py_ssize_t n, int n_threads) noexcept nogil:
    if n_threads <= 1 or m < 2 or m * n < ELEMWISE_PARALLEL_MIN:
        return 1
    cdef Py_ssize_t t = (m * n) // (ELEMWISE_PARALLEL_MIN // 2)
    if t < n_threads:
        return <int>t
    return n_threads

cdef int current_engine() noexcept nogil
cdef int current_threads() noexcept nogil
cdef const fnn_kern_s *kern_s() noexcept nogil
cdef const fnn_kern_d *kern_d() noexcept nogil
# 64-byte aligned scratch of at least nbytes owned by the calling OS thread (grow-only,
# freed at thread exit); NULL when out of memory.
cdef void *workspace(size_t nbytes) noexcept nogil

cdef void act_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                      floating *y, Py_ssize_t rsy, int act, floating slope,
                      int n_threads) noexcept nogil
cdef void act_backward(Py_ssize_t m, Py_ssize_t n, const floating *g, Py_ssize_t rsg,
                       const floating *y, Py_ssize_t rsy, floating *dz, Py_ssize_t rsdz,
                       int act, floating slope, int n_threads) noexcept nogil
cdef void bias_act(Py_ssize_t m, Py_ssize_t n, floating *c, Py_ssize_t rsc,
                   const floating *bias, int act, floating slope, int n_threads) noexcept nogil
cdef void scale_bias_act(Py_ssize_t m, Py_ssize_t n, floating *c, Py_ssize_t rsc,
                         floating beta, const floating *bias, int act,
                         floating slope) noexcept nogil
cdef void col_sums(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                   floating *out, bint accumulate, int n_threads) noexcept nogil
