# Shared state and elementwise kernels of fastnn's compiled core.
from cython cimport floating

# The table of codes lives in fnn_types.h; each is declared here once as a cpdef enum,
# visible in Python as an IntEnum of this module (fastnn._kernels._core.Activation, ...),
# and used under those scoped names by the kernels (Activation.IDENTITY, Engine.BLAS, ...).
cdef extern from "fnn_types.h" nogil:
    cpdef enum Activation "fnn_act":
        IDENTITY "FNN_ACT_IDENTITY"
        RELU "FNN_ACT_RELU"
        LEAKY_RELU "FNN_ACT_LEAKY_RELU"
        SIGMOID "FNN_ACT_SIGMOID"
        TANH "FNN_ACT_TANH"
        GELU "FNN_ACT_GELU"
        GELU_TANH "FNN_ACT_GELU_TANH"
        SILU "FNN_ACT_SILU"
        SOFTPLUS "FNN_ACT_SOFTPLUS"
        ELU "FNN_ACT_ELU"
    cpdef enum Engine "fnn_engine":
        NATIVE "FNN_ENGINE_NATIVE"
        BLAS "FNN_ENGINE_BLAS"
    cpdef enum GateOp "fnn_gate":
        ADD "FNN_GATE_ADD"
        MUL "FNN_GATE_MUL"
        MAX "FNN_GATE_MAX"
        CONCAT "FNN_GATE_CONCAT"
        SPLIT "FNN_GATE_SPLIT"
    cpdef enum LossKind "fnn_loss":
        MSE "FNN_LOSS_MSE"
        XENT "FNN_LOSS_XENT"
        SVM "FNN_LOSS_SVM"
        L1 "FNN_LOSS_L1"
        HUBER "FNN_LOSS_HUBER"
        SMOOTH_L1 "FNN_LOSS_SMOOTH_L1"
        BCE_LOGITS "FNN_LOSS_BCE_LOGITS"
    cpdef enum OptKind "fnn_opt":
        SGD "FNN_OPT_SGD"
        ADAM "FNN_OPT_ADAM"
        ADAMW "FNN_OPT_ADAMW"
        RMSPROP "FNN_OPT_RMSPROP"
    cpdef enum OpKind "fnn_op":
        LINEAR "FNN_OP_LINEAR"
        ACT "FNN_OP_ACT"
        GATE "FNN_OP_GATE"
        DROPOUT "FNN_OP_DROPOUT"
        LAYERNORM "FNN_OP_LAYERNORM"
        BATCHNORM "FNN_OP_BATCHNORM"
        SOFTMAX "FNN_OP_SOFTMAX"
        LOGSOFTMAX "FNN_OP_LOGSOFTMAX"
    # internal, not an activation (the softmax's exponential in act_fwd)
    enum:
        FNN_ACT_EXP_NEG

cdef extern from "fnn_types.h" nogil:
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
    ctypedef struct fnn_adam_args:
        double sign, wd, decay, w1, beta2, c2, bc2_sqrt, eps, neg_step
        int amsgrad
    ctypedef struct fnn_rmsprop_args:
        double sign, wd, alpha, c, eps, momentum, neg_lr
        int centered
    ctypedef void (*fnn_adam_s_t)(long, float *, const float *, float *, float *, float *,
                                  const fnn_adam_args *) noexcept nogil
    ctypedef void (*fnn_adam_d_t)(long, double *, const double *, double *, double *,
                                  double *, const fnn_adam_args *) noexcept nogil
    ctypedef void (*fnn_rmsprop_s_t)(long, float *, const float *, float *, float *, float *,
                                     const fnn_rmsprop_args *) noexcept nogil
    ctypedef void (*fnn_rmsprop_d_t)(long, double *, const double *, double *, double *,
                                     double *, const fnn_rmsprop_args *) noexcept nogil
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
        fnn_adam_s_t adam
        fnn_rmsprop_s_t rmsprop
    ctypedef struct fnn_kern_d:
        int mr, nr, kc, mc, nc
        fnn_ukr_d_t ukr
        fnn_ukrd_d_t ukr_strided
        fnn_pack_d_t pack_t
        fnn_actf_d_t act_fwd
        fnn_actb_d_t act_bwd
        fnn_sgd_d_t sgd
        fnn_adam_d_t adam
        fnn_rmsprop_d_t rmsprop


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
# the kernel variant in use (FNN_VARIANT_GENERIC / AVX2 / AVX512), for kernels that keep
# their own per-variant code outside the tables (dropout.pyx)
cdef int current_variant() noexcept nogil

# The engine/threads rule, decided here once: with the BLAS engine our own loops stay on one
# thread (two thread pools would fight over the cores); otherwise n_threads, or the current
# setting when n_threads <= 0.
cdef inline int loop_threads(int engine, int n_threads) noexcept nogil:
    if engine == Engine.BLAS:
        return 1
    return n_threads if n_threads > 0 else current_threads()

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
