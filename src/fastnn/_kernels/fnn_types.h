/* fastnn's C types: activation codes, kernel-table entries, variant ids.  Light: any module
 * may include it.  The kernels themselves are compiled once, in _core (fnn_simd.h). */
#ifndef FASTNN_TYPES_H
#define FASTNN_TYPES_H
#include <stddef.h>

/* ---- the table of codes: every code that crosses between Python and the kernels, once.
 * _core.pxd declares each as a `cpdef enum`, so Python sees them as IntEnums
 * (fastnn._kernels._core.Activation, Engine, GateOp, LossKind, OptKind, OpKind). */
typedef enum fnn_act {              /* activations (fused into the GEMM writeback) */
    FNN_ACT_IDENTITY = 0,
    FNN_ACT_RELU = 1,
    FNN_ACT_LEAKY_RELU = 2,
    FNN_ACT_SIGMOID = 3,
    FNN_ACT_TANH = 4,
    /* internal, not an activation: exp(x) for x <= 0 (act_fwd only), the softmax's exponential */
    FNN_ACT_EXP_NEG = 5,
    /* these five apply in the GEMM writeback too; the backward of GELU, GELU_TANH, SILU and
     * SOFTPLUS reads the saved *input* (act_bwd's y argument holds it), ELU's the output.
     * The activation parameter `slope`: LEAKY_RELU's negative slope, SOFTPLUS's beta (its
     * threshold is 20, torch's default), ELU's alpha. */
    FNN_ACT_GELU = 6,               /* x Phi(x), Phi via erf */
    FNN_ACT_GELU_TANH = 7,          /* GELU's tanh approximation */
    FNN_ACT_SILU = 8,               /* x sigmoid(x) */
    FNN_ACT_SOFTPLUS = 9,
    FNN_ACT_ELU = 10
} fnn_act;

typedef enum fnn_engine {              /* GEMM engines */
    FNN_ENGINE_NATIVE = 0,
    FNN_ENGINE_BLAS = 1
} fnn_engine;

typedef enum fnn_gate {              /* graph gates */
    FNN_GATE_ADD = 0,
    FNN_GATE_MUL = 1,
    FNN_GATE_MAX = 2,
    FNN_GATE_CONCAT = 3,
    FNN_GATE_SPLIT = 4
} fnn_gate;

typedef enum fnn_loss {              /* losses of the compiled step */
    FNN_LOSS_MSE = 0,
    FNN_LOSS_XENT = 1,
    FNN_LOSS_SVM = 2,
    FNN_LOSS_L1 = 3,
    FNN_LOSS_HUBER = 4,
    FNN_LOSS_SMOOTH_L1 = 5,
    FNN_LOSS_BCE_LOGITS = 6
} fnn_loss;

typedef enum fnn_opt {             /* optimizer updates (optim.opt_update) */
    FNN_OPT_SGD = 0,
    FNN_OPT_ADAM = 1,
    FNN_OPT_ADAMW = 2,
    FNN_OPT_RMSPROP = 3
} fnn_opt;

typedef enum fnn_op {              /* ops of the compiled step's program */
    FNN_OP_LINEAR = 0,      /* Linear + fused activation */
    FNN_OP_ACT = 1,         /* an activation on its own */
    FNN_OP_GATE = 2,        /* a gate (fnn_gate) */
    FNN_OP_DROPOUT = 3,     /* Dropout (counter-based mask) */
    FNN_OP_LAYERNORM = 4,   /* LayerNorm over the last axis */
    FNN_OP_BATCHNORM = 5,   /* BatchNorm1d over the batch axis */
    FNN_OP_SOFTMAX = 6,     /* Softmax(dim=1) */
    FNN_OP_LOGSOFTMAX = 7   /* LogSoftmax(dim=1) */
} fnn_op;

/* ---- kernel tables ---- */
typedef void (*fnn_ukr_s_t)(long, const float *, const float *, float *, long, int, int, float,
                            float, const float *, int, float);
typedef void (*fnn_ukr_d_t)(long, const double *, const double *, double *, long, int, int,
                            double, double, const double *, int, double);
typedef void (*fnn_ukrd_s_t)(long, const float *, long, long, const float *, long, float *, long,
                             int, int, float, float, const float *, int, float);
typedef void (*fnn_ukrd_d_t)(long, const double *, long, long, const double *, long, double *,
                             long, int, int, double, double, const double *, int, double);
typedef void (*fnn_pack_s_t)(long, long, const float *, long, float *, long);
typedef void (*fnn_pack_d_t)(long, long, const double *, long, double *, long);
typedef void (*fnn_actf_s_t)(long, const float *, float *, int, float);
typedef void (*fnn_actf_d_t)(long, const double *, double *, int, double);
typedef void (*fnn_actb_s_t)(long, const float *, const float *, float *, int, float);
typedef void (*fnn_actb_d_t)(long, const double *, const double *, double *, int, double);
/* sgd(n, p, g, buf, lr, momentum, 1 - dampening, weight_decay, sign, flags) */
typedef void (*fnn_sgd_s_t)(long, float *, const float *, float *, float, float, float, float,
                            float, int);
typedef void (*fnn_sgd_d_t)(long, double *, const double *, double *, double, double, double,
                            double, double, int);
#define FNN_SGD_WD 1
#define FNN_SGD_MOMENTUM 2
#define FNN_SGD_FIRST 4
#define FNN_SGD_NESTEROV 8

/* adam(n, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, args): torch.optim.Adam / AdamW.
 * The scalars of one update, computed once per call by optim.pyx (in double, as torch
 * computes them in Python floats). */
typedef struct {
    double sign;          /* -1 with maximize */
    double wd;            /* L2 weight decay added to the gradient (Adam), or 0 */
    double decay;         /* 1 - lr * weight_decay (AdamW's decoupled decay), or 1 */
    double w1;            /* 1 - beta1, exp_avg.lerp_(g, w1) */
    double beta2, c2;     /* exp_avg_sq = beta2 * exp_avg_sq + c2 * g * g, c2 = 1 - beta2 */
    double bc2_sqrt;      /* (1 - beta2**t) ** 0.5 */
    double eps;
    double neg_step;      /* -lr / (1 - beta1**t) */
    int amsgrad;
} fnn_adam_args;
typedef void (*fnn_adam_s_t)(long, float *, const float *, float *, float *, float *,
                             const fnn_adam_args *);
typedef void (*fnn_adam_d_t)(long, double *, const double *, double *, double *, double *,
                             const fnn_adam_args *);

/* rmsprop(n, p, g, square_avg, grad_avg, momentum_buffer, args): torch.optim.RMSprop */
typedef struct {
    double sign, wd;      /* as Adam's */
    double alpha, c;      /* square_avg = alpha * square_avg + c * g * g, c = 1 - alpha */
    double eps, momentum;
    double neg_lr;        /* -lr */
    int centered;
} fnn_rmsprop_args;
typedef void (*fnn_rmsprop_s_t)(long, float *, const float *, float *, float *, float *,
                                const fnn_rmsprop_args *);
typedef void (*fnn_rmsprop_d_t)(long, double *, const double *, double *, double *, double *,
                                const fnn_rmsprop_args *);

typedef struct {
    int mr, nr, kc, mc, nc;
    fnn_ukr_s_t ukr;
    fnn_ukrd_s_t ukr_strided;
    fnn_pack_s_t pack_t;
    fnn_actf_s_t act_fwd;
    fnn_actb_s_t act_bwd;
    fnn_sgd_s_t sgd;
    fnn_adam_s_t adam;
    fnn_rmsprop_s_t rmsprop;
} fnn_kern_s;
typedef struct {
    int mr, nr, kc, mc, nc;
    fnn_ukr_d_t ukr;
    fnn_ukrd_d_t ukr_strided;
    fnn_pack_d_t pack_t;
    fnn_actf_d_t act_fwd;
    fnn_actb_d_t act_bwd;
    fnn_sgd_d_t sgd;
    fnn_adam_d_t adam;
    fnn_rmsprop_d_t rmsprop;
} fnn_kern_d;

#define FNN_VARIANT_GENERIC 0
#define FNN_VARIANT_AVX2 1
#define FNN_VARIANT_AVX512 2
#define FNN_N_VARIANTS 3

#endif
