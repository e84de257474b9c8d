# cython: language_level=3
"""The compiled training step: forward, loss, backward and the optimizer's update of a whole
network in one nogil call, on workspaces allocated once.

The network is a *program* (fastnn/training/compiled.py builds it from the one planner's
plan): value slots (one per value of the network, each a (batch, n) row-major buffer) and
ops in execution order -- a Linear with its fused activation, an activation, or a gate
(add, multiply, maximum, concat, split) -- each reading and writing slots.  Backward runs
the ops in reverse; where a value branches, its gradient contributions are summed into the
slot's buffer in the order they arrive, as Graph.backward does.

Every op calls the very kernels the module path calls (dense.gemm_any with the same operands
and strides, act_forward/act_backward, col_sums, the gate kernels, the loss kernels, with
clip_grad_norm= clip.total_norm / clip_coef / clip_scale over the optimizer's parameters as
fastnn.clip_grad_norm_, optim.opt_update), in the same order, so after any number of steps the parameters are bitwise
identical to zero_grad / forward / loss / backward / step through the modules.
compiled.py validates the model and owns every array this object points into; `StepKernel`
checks, per call, that nothing it points into has been replaced since (otherwise
compiled.py re-plans), and talks to the optimizer and the parameters only through their
contracts (Optimizer._kind, _hyper, steps, _prepare_state, _state_version, _drop_state,
_count_steps -- never which optimizer it is; Parameter's set_written and its kernel views
_flat / _gflat).

`run_batches` adds minibatch gathering (rows of X picked by a permutation) and per-step loss
and accuracy bookkeeping, so a whole epoch runs without Python work per step.
"""
from cython cimport floating
from libc.stdlib cimport free, calloc
from libc.string cimport memcpy, memset
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint64_t
cimport numpy as cnp
from numpy import (dtype as np_dtype, ascontiguousarray as np_ascontiguousarray,
                   int64 as np_int64)

from ._core cimport (current_engine, current_threads, act_forward, act_backward, col_sums,
                     Engine, Activation, GateOp, LossKind, OpKind, loop_threads)
from .dense cimport gemm_any
from .gates cimport binary_forward, binary_backward, copy_rows
from .losses cimport (mse_loss, xent_loss, svm_loss, pointwise_loss, PW_L1, PW_HUBER,
                     PW_SMOOTH_L1, PW_BCE_LOGITS, softmax_forward, softmax_backward)
from .optim cimport opt_update, OptHyper, OPT_MAX_STATE, OPT_MAX_HYPER
from .clip cimport GradView, total_norm, clip_coef, clip_scale
from .norm cimport layernorm_forward, layernorm_backward, batchnorm_forward, batchnorm_backward
from .dropout cimport dropout_key, dropout_apply
from libc.stdint cimport uint32_t

cnp.import_array()

_set_written = None      # fastnn.nn.parameter.set_written, bound at the first setup()

# error codes
cdef enum:
    ERR_NONE = 0
    ERR_NOMEM = -1
    ERR_NONFINITE = 1

cdef struct Slot:
    int n               # width: the value is (M, n), row-major
    void *val           # (cap, n); the input slot points at the batch on each call
    Py_ssize_t rs       # row stride of val (elements)
    void *gsum          # (cap, n): sum of several gradient contributions, or NULL
    const void *g       # during backward: the gradient so far (NULL: none yet)


cdef struct Op:
    int kind, gop, act    # OpKind, GateOp, Activation (fnn_types.h)
    double slope
    int nin, nout
    int *ins            # slot indices
    int *outs
    bint run            # backward runs this op (a gradient reaches an output)
    bint want           # it computes input gradients
    bint *needs         # per input: the input's value needs a gradient
    void **gin          # per input: the buffer its gradient is written to (cap, width), NULL
    int K, N            # Linear: in and out features
    void *W             # (N, K) row-major
    void *b             # (N,) or NULL
    void *gW
    void *gb            # NULL when there is no bias
    bint accW           # add into gW (the Parameter already got this step's gradient
    bint accb           # from an op later in the network: it is shared), else overwrite
    void *work          # (cap, N): act'(y) * grad_out, NULL for identity; a norm's scratch
    # LayerNorm / BatchNorm1d (fastnn/_kernels/norm.pyx); W, b, gW, gb are weight and bias
    double eps
    double momentum     # BatchNorm1d: < 0 for None (cumulative average); synced per call
    bint train          # BatchNorm1d: training mode (synced per call from the module)
    bint batch          # BatchNorm1d: the last forward used the batch's statistics
    void *xhat          # (cap, N) the normalized input, NULL: not kept (inference)
    void *st1           # LayerNorm: rstd (cap,); BatchNorm1d: the batch mean (N,)
    void *st2           # BatchNorm1d: invstd (N,)
    void *sums          # BatchNorm1d: backward scratch (3N,)
    void *rm            # BatchNorm1d: running_mean, running_var (N,), NULL when untracked
    void *rv
    int64_t *nbt        # BatchNorm1d: num_batches_tracked
    # Dropout: the mask of forward number ctr of a module seeded with seed; ctr advances
    # with each forward (read from / written back to the module by StepKernel), key is the
    # last forward's, which backward regenerates the mask from
    uint64_t seed, ctr, key
    uint32_t thresh
    double scale
    void *z             # (cap, N): a Linear's pre-activation x W^T + b when its activation
                        # saves its input (GELU, SiLU, Softplus; training only), else NULL
    bint saves_input    # the activation's backward reads its input, not its output


cdef struct Param:
    Py_ssize_t n
    void *p
    void *g
    void *state[OPT_MAX_STATE]   # the optimizer's state buffers for p (NULL: unused)
    bint first       # the state is new: this step initialises it (e.g. SGD's first step)


cdef inline void _contribute(Slot *s, const floating *g, Py_ssize_t M) noexcept nogil:
    """Add a gradient contribution to a value: the first is used as is, later ones are
    summed into the slot's buffer (cur + g, in arrival order, as Graph._accumulate)."""
    cdef Py_ssize_t i, n = M * s.n
    cdef const floating *cur = <const floating *>s.g
    cdef floating *dst
    if cur == NULL:
        s.g = g
        return
    dst = <floating *>s.gsum
    for i in range(n):
        dst[i] = cur[i] + g[i]
    s.g = dst


cdef int _forward_op(Op *op, Slot *S, int M, int engine, int nt, int et,
                     floating dummy) noexcept nogil:
    cdef Slot *x = &S[op.ins[0]]
    cdef Slot *y = &S[op.outs[0]]
    cdef floating one = 1, zero = 0
    cdef int j, off
    cdef int e
    if op.kind == OpKind.LINEAR and op.z != NULL:
        # z = in @ W^T + b, then out = act(z): Linear._forward_act's two calls in training
        e = gemm_any(engine, nt, M, op.N, op.K, one, <const floating *>x.val, x.rs, 1,
                     <const floating *>op.W, 1, op.K, zero, <floating *>op.z, op.N,
                     <const floating *>op.b, Activation.IDENTITY, zero)
        if e == 0:
            act_forward(M, op.N, <const floating *>op.z, op.N, <floating *>y.val, y.rs,
                        op.act, <floating>op.slope, et)
        return e
    if op.kind == OpKind.LINEAR:
        # out = act(in @ W^T + b), the same gemm_any call as linear_forward
        return gemm_any(engine, nt, M, op.N, op.K, one, <const floating *>x.val, x.rs, 1,
                        <const floating *>op.W, 1, op.K, zero, <floating *>y.val, op.N,
                        <const floating *>op.b, op.act, <floating>op.slope)
    if op.kind == OpKind.ACT:
        act_forward(M, x.n, <const floating *>x.val, x.rs, <floating *>y.val, y.rs, op.act,
                    <floating>op.slope, et)
        return 0
    if op.kind == OpKind.LAYERNORM or op.kind == OpKind.BATCHNORM:
        _norm_forward(op, x, y, M, et, dummy)
        return 0
    if op.kind == OpKind.DROPOUT:
        # Dropout._fwd's key and kernel, and its counter's advance
        op.key = dropout_key(op.seed, op.ctr)
        op.ctr += 1
        dropout_apply(M, x.n, <const floating *>x.val, x.rs, <floating *>y.val, y.rs, op.key,
                      op.thresh, <floating>op.scale, et)
        return 0
    if op.kind == OpKind.SOFTMAX or op.kind == OpKind.LOGSOFTMAX:
        softmax_forward(M, x.n, <const floating *>x.val, x.rs, <floating *>y.val, y.rs,
                        op.kind == OpKind.LOGSOFTMAX, et)
        return 0
    if op.gop == GateOp.CONCAT:
        off = 0
        for j in range(op.nin):
            x = &S[op.ins[j]]
            copy_rows(M, x.n, <const floating *>x.val, x.rs, <floating *>y.val + off, y.rs,
                      et)
            off += x.n
    elif op.gop == GateOp.SPLIT:
        off = 0
        for j in range(op.nout):
            y = &S[op.outs[j]]
            copy_rows(M, y.n, <const floating *>x.val + off, x.rs, <floating *>y.val, y.rs,
                      et)
            off += y.n
    else:
        binary_forward(M, x.n, <const floating *>x.val, x.rs,
                       <const floating *>S[op.ins[1]].val, S[op.ins[1]].rs,
                       <floating *>y.val, y.rs, op.gop, et)
    return 0


cdef void _norm_forward(Op *op, Slot *x, Slot *y, int M, int et,
                        floating dummy) noexcept nogil:
    """A LayerNorm / BatchNorm1d op's forward: the kernels and the running-statistics
    bookkeeping of fastnn/nn/norm.py's _fwd, in its order."""
    cdef bint update
    cdef double factor = 0
    if op.kind == OpKind.LAYERNORM:
        layernorm_forward(M, x.n, <const floating *>x.val, x.rs, <const floating *>op.W,
                          <const floating *>op.b, op.eps, <floating *>y.val,
                          <floating *>op.xhat, <floating *>op.st1, et)
        return
    op.batch = op.train or op.rm == NULL
    update = op.train and op.rm != NULL
    if update:
        op.nbt[0] += 1
        factor = op.momentum if op.momentum >= 0 else 1.0 / <double>op.nbt[0]
    batchnorm_forward(M, x.n, <const floating *>x.val, x.rs, <const floating *>op.W,
                      <const floating *>op.b, op.eps, <floating *>y.val, <floating *>op.xhat,
                      <floating *>op.st1, <floating *>op.st2,
                      <floating *>op.rm if update or not op.batch else <floating *>NULL,
                      <floating *>op.rv if update or not op.batch else <floating *>NULL,
                      op.batch, factor, et)


cdef int _backward_op(Op *op, Slot *S, int M, int engine, int nt, int et,
                      floating dummy) noexcept nogil:
    cdef Slot *x = &S[op.ins[0]]
    cdef Slot *y = &S[op.outs[0]]
    cdef const floating *dy = <const floating *>y.g
    cdef const floating *dz
    cdef const floating *gj
    cdef floating *gx
    cdef floating one = 1, zero = 0
    cdef int j, off, e = 0, N, K
    cdef Py_ssize_t r
    if op.kind == OpKind.LINEAR:
        N = op.N
        K = op.K
        if op.act == Activation.IDENTITY:
            dz = dy
        else:
            # the saved value act' reads: the pre-activation z, or the output
            act_backward(M, N, dy, N,
                         <const floating *>(op.z if op.z != NULL else y.val), N,
                         <floating *>op.work, N, op.act, <floating>op.slope, et)
            dz = <const floating *>op.work
        # grad_W (N,K) (+)= dz^T @ in  (dense.linear_backward's calls)
        e = gemm_any(engine, nt, N, K, M, one, dz, 1, N, <const floating *>x.val, x.rs, 1,
                     one if op.accW else zero, <floating *>op.gW, K, <floating *>NULL,
                     Activation.IDENTITY, zero)
        if op.gb != NULL:
            col_sums(M, N, dz, N, <floating *>op.gb, op.accb, et)
        if op.gin[0] != NULL and e == 0:
            # grad_in (M,K) = dz @ W
            e = gemm_any(engine, nt, M, K, N, one, dz, N, 1, <const floating *>op.W, K, 1,
                         zero, <floating *>op.gin[0], K, <floating *>NULL, Activation.IDENTITY,
                         zero)
            _contribute(x, <const floating *>op.gin[0], M)
        return e
    if op.kind == OpKind.LAYERNORM:
        layernorm_backward(M, x.n, dy, <const floating *>op.xhat, <const floating *>op.st1,
                           <const floating *>op.W, <floating *>op.gin[0], <floating *>op.gW,
                           <floating *>op.gb, op.accW, op.accb, <floating *>op.work, et)
        if op.gin[0] != NULL:
            _contribute(x, <const floating *>op.gin[0], M)
        return 0
    if op.kind == OpKind.BATCHNORM:
        batchnorm_backward(M, x.n, dy, <const floating *>op.xhat, <const floating *>op.st2,
                           <const floating *>op.W, op.batch, <floating *>op.gin[0],
                           <floating *>op.gW, <floating *>op.gb, op.accW, op.accb,
                           <floating *>op.sums, <floating *>op.work, et)
        if op.gin[0] != NULL:
            _contribute(x, <const floating *>op.gin[0], M)
        return 0
    if not op.want:
        return 0
    if op.kind == OpKind.ACT:
        if op.gin[0] != NULL:
            act_backward(M, x.n, dy, x.n,
                         <const floating *>(x.val if op.saves_input else y.val),
                         x.rs if op.saves_input else y.rs,
                         <floating *>op.gin[0], x.n, op.act, <floating>op.slope, et)
            _contribute(x, <const floating *>op.gin[0], M)
        return 0
    if op.kind == OpKind.DROPOUT:
        if op.gin[0] != NULL:
            # the same bits as the forward (the key of this step)
            dropout_apply(M, x.n, dy, x.n, <floating *>op.gin[0], x.n, op.key, op.thresh,
                          <floating>op.scale, et)
            _contribute(x, <const floating *>op.gin[0], M)
        return 0
    if op.kind == OpKind.SOFTMAX or op.kind == OpKind.LOGSOFTMAX:
        if op.gin[0] != NULL:
            softmax_backward(M, x.n, dy, x.n, <const floating *>y.val, y.rs,
                             <floating *>op.gin[0], x.n, op.kind == OpKind.LOGSOFTMAX, et)
            _contribute(x, <const floating *>op.gin[0], M)
        return 0
    if op.gop == GateOp.ADD:
        # the add gate distributes: both inputs receive dy itself
        for j in range(2):
            if op.needs[j]:
                _contribute(&S[op.ins[j]], dy, M)
    elif op.gop == GateOp.CONCAT:
        off = 0
        for j in range(op.nin):
            x = &S[op.ins[j]]
            if op.gin[j] != NULL:
                copy_rows(M, x.n, dy + off, y.n, <floating *>op.gin[j], x.n, et)
                _contribute(x, <const floating *>op.gin[j], M)
            off += x.n
    elif op.gop == GateOp.SPLIT:
        gx = <floating *>op.gin[0]
        if gx == NULL:
            return 0
        off = 0
        for j in range(op.nout):
            y = &S[op.outs[j]]
            gj = <const floating *>y.g
            if gj == NULL:          # an output without a gradient counts as zero
                for r in range(M):
                    memset(gx + r * x.n + off, 0, y.n * sizeof(floating))
            else:
                copy_rows(M, y.n, gj, y.n, gx + off, x.n, et)
            off += y.n
        _contribute(x, <const floating *>gx, M)
    else:
        # multiply swaps, maximum routes; both input gradients, as the module path
        binary_backward(M, x.n, dy, x.n, <const floating *>x.val, x.rs,
                        <const floating *>S[op.ins[1]].val, S[op.ins[1]].rs,
                        <floating *>op.gin[0], x.n, <floating *>op.gin[1], x.n, op.gop, et)
        for j in range(2):
            if op.needs[j]:
                _contribute(&S[op.ins[j]], <const floating *>op.gin[j], M)
    return 0


cdef inline bint _regression(int kind) noexcept nogil:
    """A loss of float targets of the output's shape (else integer labels)."""
    return kind != LossKind.XENT and kind != LossKind.SVM


cdef inline int _pointwise_kind(int kind, double param) noexcept nogil:
    # the PointwiseLoss code of an elementwise LossKind (SmoothL1Loss with beta 0 is L1Loss,
    # as in losses.SmoothL1Loss)
    if kind == LossKind.L1 or (kind == LossKind.SMOOTH_L1 and param == 0):
        return PW_L1
    if kind == LossKind.HUBER:
        return PW_HUBER
    if kind == LossKind.SMOOTH_L1:
        return PW_SMOOTH_L1
    return PW_BCE_LOGITS


cdef double _train_step(Op *ops, int nops, Slot *S, int nslots, int s_in, int s_out, Param *P,
                        int np_, OptHyper *h, int loss_kind, bint mean, double margin,
                        const double *pw, int M,
                        const floating *x, Py_ssize_t rsx, const floating *t, const int64_t *y,
                        floating *gl, double *rows, bint check_finite, int64_t *correct,
                        const GradView *G, bint clip, double max_norm, double *gnorm,
                        int *err) noexcept nogil:
    """One step on M rows; returns the loss.  x is (M, K0) with row stride rsx, t (M, Nout)
    contiguous targets (MSE) or y (M,) labels.  err: ERR_NONFINITE stops before backward.
    clip: scale the gradients G (the optimizer's parameters, its order) to a total 2-norm of
    at most max_norm before the update, writing the total norm to gnorm."""
    cdef int engine = current_engine(), nt = current_threads()
    cdef int et = loop_threads(engine, nt)      # elementwise threads
    cdef int i, j, N, k, e = 0, c
    cdef Py_ssize_t r
    cdef floating *o
    cdef floating mx
    cdef floating dummy = 0
    cdef double loss, scale
    err[0] = ERR_NONE
    # ---- forward, op by op
    S[s_in].val = <void *>x
    S[s_in].rs = rsx
    for k in range(nops):
        if _forward_op(&ops[k], S, M, engine, nt, et, dummy):
            err[0] = ERR_NOMEM
            return 0
    # ---- loss value and its gradient (gl), the kernels the Loss modules call
    N = S[s_out].n
    o = <floating *>S[s_out].val
    if loss_kind == LossKind.MSE:
        scale = 1.0 / (<double>M * N) if mean else 1.0
        loss = mse_loss(M, N, o, N, t, N, gl, N, scale, rows, et)
    elif _regression(loss_kind):
        # the elementwise losses (margin holds delta / beta): pointwise_loss, as the modules
        scale = 1.0 / (<double>M * N) if mean else 1.0
        loss = pointwise_loss(_pointwise_kind(loss_kind, margin), M, N, o, N, t, N, NULL, pw,
                              gl, N, margin, scale, rows, et)
    elif loss_kind == LossKind.XENT:
        scale = 1.0 / M if mean else 1.0
        loss = xent_loss(M, N, o, N, y, gl, N, scale, rows, et)
    else:
        scale = 1.0 / M if mean else 1.0
        loss = svm_loss(M, N, o, N, y, gl, N, margin, scale, rows, et)
    if correct != NULL and not _regression(loss_kind):
        c = 0
        for r in range(M):       # argmax, first maximum on ties (as numpy.argmax)
            mx = o[r * N]
            j = 0
            for i in range(1, N):
                if o[r * N + i] > mx:
                    mx = o[r * N + i]
                    j = i
            if j == y[r]:
                c += 1
        correct[0] = c
    if check_finite and not isfinite(loss):
        err[0] = ERR_NONFINITE
        return loss
    # ---- backward, ops in reverse order
    for k in range(nslots):
        S[k].g = NULL
    S[s_out].g = gl
    k = nops - 1
    while k >= 0:
        if ops[k].run:
            if _backward_op(&ops[k], S, M, engine, nt, et, dummy):
                err[0] = ERR_NOMEM
                return 0
        k -= 1
    # ---- gradient clipping: fastnn.clip_grad_norm_(optimizer.params, max_norm)'s calls
    if clip:
        gnorm[0] = total_norm(G, np_, 2.0, et)
        clip_scale(G, np_, clip_coef(max_norm, gnorm[0]), et)
    # ---- the optimizer's update, parameter by parameter in its order (optim.opt_update,
    # the dispatch Optimizer.step() calls too)
    for i in range(np_):
        opt_update(h, P[i].n, <floating *>P[i].p, <const floating *>P[i].g, P[i].state,
                   P[i].first, et)
    return loss


cdef Py_ssize_t _bad_label(Py_ssize_t m, const int64_t *y, int64_t n_classes) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(m):
        if y[i] < 0 or y[i] >= n_classes:
            return i
    return -1


cdef void _gather(Py_ssize_t m, Py_ssize_t k, const char *src, Py_ssize_t rs,
                  const int64_t *idx, char *dst) noexcept nogil:
    """dst row r = src row idx[r]; rows of k bytes, src row stride rs bytes."""
    cdef Py_ssize_t r
    for r in range(m):
        memcpy(dst + r * k, src + idx[r] * rs, k)


# ------------------------------------------------------------------ shuffling (seeded)
cdef inline uint64_t _splitmix(uint64_t *s) noexcept nogil:
    s[0] += <uint64_t>0x9E3779B97F4A7C15
    cdef uint64_t z = s[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


def shuffle(int64_t[::1] perm, uint64_t seed, uint64_t epoch):
    """perm = a permutation of 0..n-1 drawn from (seed, epoch): Fisher-Yates with SplitMix64
    and an unbiased bounded draw (rejection), identical on every platform."""
    cdef Py_ssize_t n = perm.shape[0], i, j
    cdef uint64_t st = seed * <uint64_t>0x632BE59BD9B4E019 + epoch, r, bound, lim
    cdef int64_t tmp
    with nogil:
        for i in range(n):
            perm[i] = i
        i = n - 1
        while i > 0:
            bound = <uint64_t>(i + 1)
            lim = (<uint64_t>0 - bound) % bound      # 2**64 mod bound: reject below it
            r = _splitmix(&st)
            while r < lim:
                r = _splitmix(&st)
            j = <Py_ssize_t>(r % bound)
            tmp = perm[i]
            perm[i] = perm[j]
            perm[j] = tmp
            i -= 1



cdef inline void *_ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a) if a is not None else NULL


cdef bint _unchanged(object version_box, Py_ssize_t version, object model, object graph_plan,
                     object params, object datas):
    """Whether what a planned program points into is as it was planned: the model's
    structure (modules' version counter), a graph's plan, every parameter's array.
    Shared by StepKernel.valid and InferKernel.valid."""
    cdef Py_ssize_t i
    if version_box[0] != version:
        return False
    if graph_plan is not None and model._plan is not graph_plan:
        return False
    for i in range(len(datas)):
        if params[i]._data is not datas[i]:
            return False
    return True


cdef int _forward_fields(Op *op, dict d, int *ipool, int ni) except -1:
    """Fill what an op's forward reads from its planned dict (compiled.py's program): kind,
    gate, activation, its slots (taken from ipool at ni) and the Linear's K, N, W, b.
    Returns the next free ipool index.  Shared by StepKernel and InferKernel."""
    cdef int j
    op.kind = d["kind"]
    op.gop = d["gop"]
    op.act = d["act"]
    op.slope = d["slope"]
    op.nin = len(d["ins"])
    op.nout = len(d["outs"])
    op.ins = &ipool[ni]
    for j, s in enumerate(d["ins"]):
        op.ins[j] = s
    ni += op.nin
    op.outs = &ipool[ni]
    for j, s in enumerate(d["outs"]):
        op.outs[j] = s
    ni += op.nout
    op.K = d["K"]
    op.N = d["N"]
    op.W = _ptr(d["W"])
    op.b = _ptr(d["b"])
    # LayerNorm / BatchNorm1d (absent for other ops)
    op.eps = d.get("eps", 0.0)
    op.momentum = -1.0
    op.train = False
    op.xhat = _ptr(d.get("xhat"))
    op.st1 = _ptr(d.get("st1"))
    op.st2 = _ptr(d.get("st2"))
    op.rm = _ptr(d.get("rm"))
    op.rv = _ptr(d.get("rv"))
    op.nbt = <int64_t *>_ptr(d.get("nbt"))
    op.z = _ptr(d.get("z"))
    op.saves_input = d.get("saves_input", False)
    return ni


cdef class StepKernel:
    """The program compiled.py planned, as C structs pointing into its arrays; see the
    module docstring."""
    cdef Op *ops
    cdef Slot *S
    cdef Param *P
    cdef GradView *G                   # the optimizer's gradients, for clipping
    cdef bint clip, have_norm
    cdef double max_norm, last_norm
    cdef int *ipool
    cdef bint *bpool
    cdef void **gpool
    cdef int nops, nslots, s_in, s_out, np_, loss_kind, dbl, typenum
    cdef bint mean, have_state
    cdef double margin
    cdef const double *pw              # BCEWithLogitsLoss's pos_weight (Nout,), or NULL
    cdef object pw_keep
    cdef OptHyper h
    cdef Py_ssize_t cap, K0, Nout, state_version
    cdef void *gl
    cdef double *rows
    cdef void *xbuf
    cdef void *tbuf
    cdef int64_t *ybuf
    cdef readonly object keep          # every array pointed into
    cdef object params                 # Parameters, optimizer order
    cdef object datas                  # their data arrays when planned
    cdef object mparams                # Parameters whose grads this step writes
    cdef object opt
    cdef object loss_fn
    cdef object model
    cdef object graph_plan             # a Graph's plan when planned (None for a chain)
    cdef object state                  # the optimizer's state buffers pointed at
    cdef object version_box
    cdef Py_ssize_t version
    cdef object norms                  # [(op index, BatchNorm1d)]: mode synced per call
    cdef int min_rows                  # 2 when an op normalizes over the batch, else 0
    cdef list drops                    # (op index, Dropout module) of the DROPOUT ops

    def __cinit__(self):
        self.ops = NULL
        self.S = NULL
        self.P = NULL
        self.G = NULL
        self.ipool = NULL
        self.bpool = NULL
        self.gpool = NULL
        self.clip = False
        self.have_norm = False

    cdef void _free(self) noexcept:
        free(self.ops)
        free(self.S)
        free(self.P)
        free(self.G)
        free(self.ipool)
        free(self.bpool)
        free(self.gpool)
        self.ops = NULL
        self.S = NULL
        self.P = NULL
        self.G = NULL
        self.ipool = NULL
        self.bpool = NULL
        self.gpool = NULL

    def __dealloc__(self):
        self._free()

    def setup(self, object model, object graph_plan, list slots, list ops, int s_in,
              int s_out, list params, list mparams, object opt, object loss_fn,
              int loss_kind, Py_ssize_t cap, object dtype, list scratch, object version_box,
              Py_ssize_t version):
        """slots: dicts n, val, gsum (arrays (cap, n) or None); ops: dicts kind, gop, act,
        slope, ins, outs, run, want, needs, gin, K, N, W, b, gW, gb, accW, accb, work;
        params: Parameters in the optimizer's order; scratch: gl (cap, Nout), rows (cap,)
        float64, xbuf (cap, K0), tbuf (cap, Nout), ybuf (cap,) int64."""
        global _set_written
        if _set_written is None:        # imported here: fastnn.nn imports this module
            from ..nn.parameter import set_written as _set_written

        cdef int i, j, ni = 0, nb = 0, ng = 0
        cdef Op *op
        self._free()
        self.nops = len(ops)
        self.nslots = len(slots)
        self.np_ = len(params)
        for d in ops:
            ni += len(d["ins"]) + len(d["outs"])
            nb += len(d["ins"])
        ng = nb
        self.ops = <Op *>calloc(max(self.nops, 1), sizeof(Op))
        self.S = <Slot *>calloc(max(self.nslots, 1), sizeof(Slot))
        self.P = <Param *>calloc(max(self.np_, 1), sizeof(Param))
        self.G = <GradView *>calloc(max(self.np_, 1), sizeof(GradView))
        self.ipool = <int *>calloc(max(ni, 1), sizeof(int))
        self.bpool = <bint *>calloc(max(nb, 1), sizeof(bint))
        self.gpool = <void **>calloc(max(ng, 1), sizeof(void *))
        if self.ops == NULL or self.S == NULL or self.P == NULL or self.G == NULL or \
                self.ipool == NULL or self.bpool == NULL or self.gpool == NULL:
            self._free()
            raise MemoryError("compile_step: out of memory")
        keep = []
        for i, d in enumerate(slots):
            self.S[i].n = d["n"]
            self.S[i].rs = d["n"]
            self.S[i].val = _ptr(d["val"])
            self.S[i].gsum = _ptr(d["gsum"])
            keep += [a for a in (d["val"], d["gsum"]) if a is not None]
        ni = 0
        nb = 0
        for i, d in enumerate(ops):
            op = &self.ops[i]
            ni = _forward_fields(op, d, self.ipool, ni)
            op.needs = &self.bpool[nb]
            op.gin = &self.gpool[nb]
            for j in range(op.nin):
                op.needs[j] = d["needs"][j]
                op.gin[j] = _ptr(d["gin"][j])
            nb += op.nin
            op.run = d["run"]
            op.want = d["want"]
            op.accW = d["accW"]
            op.accb = d["accb"]
            op.gW = _ptr(d["gW"])
            op.gb = _ptr(d["gb"])
            op.work = _ptr(d["work"])
            op.sums = _ptr(d.get("sums"))
            keep += [d[k] for k in ("W", "b", "gW", "gb", "work") if d[k] is not None]
            keep += [d[k] for k in ("xhat", "st1", "st2", "sums", "rm", "rv", "nbt", "z")
                     if d.get(k) is not None]
            keep += [a for a in d["gin"] if a is not None]
        self.drops = [(i, d["drop"]) for i, d in enumerate(ops) if d["drop"] is not None]
        for i, m in self.drops:
            self.ops[i].thresh = m._thresh      # fixed: a Dropout's p cannot change
            self.ops[i].scale = m._scale
        for i, p in enumerate(params):
            self.P[i].n = p._flat.shape[0]
            self.P[i].p = _ptr(p._flat)
            self.P[i].g = _ptr(p._gflat)
            for j in range(OPT_MAX_STATE):
                self.P[i].state[j] = NULL
            self.G[i].n = self.P[i].n
            self.G[i].g = self.P[i].g
            self.G[i].dbl = p._gflat.dtype == np_dtype("float64")
            keep.append(p._flat)
            keep.append(p._gflat)
        gl, rows, xbuf, tbuf, ybuf = scratch
        keep += scratch
        self.gl = _ptr(gl)
        self.rows = <double *>_ptr(rows)
        self.xbuf = _ptr(xbuf)
        self.tbuf = _ptr(tbuf)
        self.ybuf = <int64_t *>_ptr(ybuf)
        self.keep = keep
        self.s_in = s_in
        self.s_out = s_out
        self.params = params
        self.datas = [p._data for p in params]
        self.mparams = mparams
        self.opt = opt
        self.have_state = False
        self.state = None
        self.model = model
        self.graph_plan = graph_plan
        self.loss_fn = loss_fn
        self.loss_kind = loss_kind
        self.cap = cap
        self.K0 = self.S[s_in].n
        self.Nout = self.S[s_out].n
        self.dbl = np_dtype(dtype) == np_dtype("float64")
        self.typenum = cnp.NPY_FLOAT64 if self.dbl else cnp.NPY_FLOAT32
        self.version_box = version_box
        self.version = version
        self.norms = [(i, d["norm"]) for i, d in enumerate(ops)
                      if d["kind"] == OpKind.BATCHNORM or d["kind"] == OpKind.LAYERNORM]
        self.min_rows = 0

    property capacity:
        def __get__(self):
            return self.cap

    property n_ops:
        def __get__(self):
            return self.nops

    property clip_grad_norm:
        """max_norm of the gradient clipping before each update (None: off); read by every
        step."""
        def __get__(self):
            return self.max_norm if self.clip else None

        def __set__(self, value):
            # checked by the caller (compiled.py: _checks.clip_option)
            self.clip = value is not None
            self.max_norm = float(value) if value is not None else 0.0

    property last_grad_norm:
        """The total gradient 2-norm (before clipping) of the last step that clipped, or
        None."""
        def __get__(self):
            return self.last_norm if self.have_norm else None

    cpdef bint valid(self):
        """False when the model's structure (a graph's nodes), a parameter's array or the
        optimizer's parameter list changed since setup (the step must be re-planned)."""
        return self.opt.params is self.params and _unchanged(
            self.version_box, self.version, self.model, self.graph_plan, self.params,
            self.datas)

    cdef int _sync(self, bint with_opt=True) except -1:
        """Read the loss's reduction (and margin) and the optimizer's contract: its kind and
        hyperparameters, the number of the next update, and its state buffers (asked for
        again only when they changed).  with_opt=False: the loss only (a step without the
        update must not create the optimizer's state)."""
        cdef int i, j
        cdef Op *op
        for i, m in self.drops:         # each Dropout's seed and step counter, now
            self.ops[i].seed = m._seed
            self.ops[i].ctr = m._counter
        lf = self.loss_fn
        self.mean = lf.reduction == "mean"
        # BatchNorm1d ops: mode, momentum and eps as the module has them now
        self.min_rows = 0
        for i, bn in self.norms:
            op = &self.ops[i]
            op.eps = bn.eps
            if op.kind != OpKind.BATCHNORM:
                continue
            op.train = bn.training
            op.momentum = bn.momentum if bn.momentum is not None else -1.0
            if op.train or op.rm == NULL:
                self.min_rows = 2
        if self.loss_kind == LossKind.SVM:
            self.margin = lf.margin
        elif self.loss_kind == LossKind.HUBER:
            self.margin = lf.delta
        elif self.loss_kind == LossKind.SMOOTH_L1:
            self.margin = lf.beta
        elif self.loss_kind == LossKind.BCE_LOGITS:
            # the module's own broadcast of pos_weight to one row of the output (checked when
            # the step was planned), or NULL
            pwa = lf._pos_weight_row((self.Nout,))
            self.pw_keep = pwa
            self.pw = <const double *>cnp.PyArray_DATA(<cnp.ndarray>pwa) if pwa.size else NULL
        if not with_opt:
            return 0
        opt = self.opt
        hyper = opt._hyper
        h = &self.h
        h.kind = opt._kind
        for j in range(OPT_MAX_HYPER):
            h.v[j] = hyper[j] if j < len(hyper) else 0.0
        h.t = opt.steps + 1
        for i in range(self.np_):
            self.P[i].first = False
        if not self.have_state or opt._state_version != self.state_version:
            state, firsts = opt._prepare_state()
            for i in range(self.np_):
                for j in range(OPT_MAX_STATE):
                    self.P[i].state[j] = _ptr(state[i][j]) if j < len(state[i]) else NULL
                self.P[i].first = firsts[i]
            self.state = state
            self.state_version = opt._state_version
            self.have_state = True
        return 0

    cdef _few_rows(self, Py_ssize_t M):
        for i, bn in self.norms:
            if self.ops[i].kind == OpKind.BATCHNORM and (bn.training or bn.running_mean is None):
                raise ValueError(f"compiled step: {bn!r}: expected more than 1 value per "
                                 f"channel when training, got a batch of {M} row(s)")

    cdef _finish(self, int steps, int err):
        """Bookkeeping after `steps` completed steps.  A step stopped by a non-finite loss (or
        out of memory) applied no update: the gradients then read as zero, as after the
        module path's zero_grad, and state buffers created for it (uninitialised) are
        dropped, so the optimizer's state is that of the last completed step."""
        # A KeyboardInterrupt that came during the nogil call is raised at the first Python
        # call made here, after the update was applied: finish the bookkeeping (each part
        # may run twice), then re-raise -- the step count always matches the parameters.
        target = self.opt.steps + steps
        try:
            self._record(steps, err, target)
        except KeyboardInterrupt:
            self._record(steps, err, target)
            raise

    cdef _drops_back(self):
        cdef int i
        for i, m in self.drops:         # the forwards run advanced the counters
            object.__setattr__(m, "_counter", self.ops[i].ctr)

    cdef _record(self, int steps, int err, target):
        cdef int i
        cdef bint aborted = err != ERR_NONE
        self._drops_back()
        _set_written(self.mparams, not aborted)
        if aborted and steps == 0:
            created = [i for i in range(self.np_) if self.P[i].first]
            if created:
                self.opt._drop_state(created)
                self.have_state = False
        if target > self.opt.steps:
            self.opt._count_steps(target - self.opt.steps)
        if steps and self.clip:
            self.have_norm = True


    def step(self, x, y, bint check_finite=False, bint update=True, int64_t[::1] correct=None):
        """One step on a batch: x (M, K0) of the model's dtype, y labels (M,) any int dtype
        or targets (M, Nout).  Checked here, run unchecked.  Returns the loss (float), or
        None when compiled.py must re-plan first (the model or optimizer changed, or the batch
        exceeds the workspaces).  update=False: forward, loss and backward only (no clipping,
        no update, the optimizer untouched): the gradients are left for the caller (e.g. to
        all-reduce them across processes before optimizer.step()).  correct (int64 (1,)):
        receives the number of rows whose argmax is the label (classification losses)."""
        cdef cnp.ndarray xa, ya
        cdef int M, err = 0
        cdef int np_ = self.np_ if update else 0
        cdef bint clip = self.clip and update
        cdef int64_t *pc = NULL
        cdef Py_ssize_t bad
        cdef double loss
        cdef int64_t n_classes
        if not self.valid():
            return None
        if not self.model.training:
            raise RuntimeError("compiled step: the model is in eval mode; a training step "
                               "needs model.train() (as the module path's backward does)")
        if not cnp.PyArray_Check(x):
            raise TypeError(f"compiled step: x must be a numpy.ndarray, got "
                            f"{type(x).__name__}")
        xa = <cnp.ndarray>x
        if cnp.PyArray_TYPE(xa) != self.typenum or not cnp.PyArray_ISNOTSWAPPED(xa):
            raise TypeError(f"compiled step: x has dtype {x.dtype} but the model computes in "
                            f"{'float64' if self.dbl else 'float32'}; convert it with "
                            f".astype(np.{'float64' if self.dbl else 'float32'})")
        if cnp.PyArray_NDIM(xa) != 2 or cnp.PyArray_DIMS(xa)[1] != self.K0 or \
                cnp.PyArray_DIMS(xa)[0] < 1:
            raise ValueError(f"compiled step: x must have shape (batch >= 1, {self.K0}), got "
                             f"{x.shape}")
        if cnp.PyArray_DIMS(xa)[0] > 2147483647:
            raise ValueError("compiled step: batch exceeds 2**31-1")
        M = <int>cnp.PyArray_DIMS(xa)[0]
        if not cnp.PyArray_IS_C_CONTIGUOUS(xa) or not cnp.PyArray_ISALIGNED(xa):
            xa = xa.copy()     # (C order; np.ascontiguousarray keeps an unaligned array)
        if _regression(self.loss_kind):
            if not cnp.PyArray_Check(y) or cnp.PyArray_TYPE(<cnp.ndarray>y) != self.typenum \
                    or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>y):
                raise TypeError(f"compiled step: {type(self.loss_fn).__name__} targets must "
                                f"be a numpy.ndarray of "
                                f"dtype {'float64' if self.dbl else 'float32'}, got "
                                f"{getattr(y, 'dtype', type(y).__name__)}")
            ya = <cnp.ndarray>y
            if cnp.PyArray_NDIM(ya) != 2 or cnp.PyArray_DIMS(ya)[0] != M or \
                    cnp.PyArray_DIMS(ya)[1] != self.Nout:
                raise ValueError(f"compiled step: targets must have the output's shape "
                                 f"({M}, {self.Nout}), got {y.shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(ya) or not cnp.PyArray_ISALIGNED(ya):
                ya = ya.copy()
        else:
            if not cnp.PyArray_Check(y) or not cnp.PyArray_ISINTEGER(<cnp.ndarray>y):
                raise TypeError(f"compiled step: labels must be a numpy.ndarray of integer "
                                f"class indices, got {getattr(y, 'dtype', type(y).__name__)}")
            ya = <cnp.ndarray>y
            if cnp.PyArray_NDIM(ya) != 1 or cnp.PyArray_DIMS(ya)[0] != M:
                raise ValueError(f"compiled step: labels must have shape ({M},) (one per row "
                                 f"of x), got {y.shape}")
            if cnp.PyArray_TYPE(ya) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(ya) \
                    or not cnp.PyArray_ISNOTSWAPPED(ya) or not cnp.PyArray_ISALIGNED(ya):
                ya = ya.astype(np_int64)
            n_classes = self.Nout
            bad = _bad_label(M, <const int64_t *>cnp.PyArray_DATA(ya), n_classes)
            if bad >= 0:
                raise ValueError(f"compiled step: labels must be in [0, {n_classes}) for "
                                 f"{n_classes} classes; labels[{bad}] = {ya[bad]}")
        if M > self.cap:
            return None          # compiled.py re-plans with a larger capacity
        if correct is not None and correct.shape[0] >= 1 and not _regression(self.loss_kind):
            pc = &correct[0]
        self._sync(update)
        if M < self.min_rows:
            self._few_rows(M)
        with nogil:
            if self.dbl:
                loss = _train_step[double](self.ops, self.nops, self.S, self.nslots, self.s_in,
                                           self.s_out, self.P, np_, &self.h, self.loss_kind,
                                           self.mean, self.margin, self.pw, M,
                                           <const double *>cnp.PyArray_DATA(xa), self.K0,
                                           <const double *>cnp.PyArray_DATA(ya),
                                           <const int64_t *>cnp.PyArray_DATA(ya),
                                           <double *>self.gl, self.rows, check_finite, pc,
                                           self.G, clip, self.max_norm, &self.last_norm,
                                           &err)
            else:
                loss = _train_step[float](self.ops, self.nops, self.S, self.nslots, self.s_in,
                                          self.s_out, self.P, np_, &self.h, self.loss_kind,
                                          self.mean, self.margin, self.pw, M,
                                          <const float *>cnp.PyArray_DATA(xa), self.K0,
                                          <const float *>cnp.PyArray_DATA(ya),
                                          <const int64_t *>cnp.PyArray_DATA(ya),
                                          <float *>self.gl, self.rows, check_finite, pc,
                                          self.G, clip, self.max_norm, &self.last_norm,
                                          &err)
        if not update:
            # the gradients are this call's (or, when it stopped early, read as zero)
            self._drops_back()
            _set_written(self.mparams, err == ERR_NONE)
        elif err != ERR_NONE:
            self._finish(0, err)
        else:
            self._finish(1, err)
        if err == ERR_NOMEM:
            raise MemoryError("compiled step: could not allocate the GEMM packing workspace")
        return loss

    def run_batches(self, cnp.ndarray X, cnp.ndarray Y, const int64_t[::1] perm,
                    Py_ssize_t first, Py_ssize_t n_steps, Py_ssize_t batch_size,
                    double[::1] losses, int64_t[::1] correct):
        """Steps first .. first+n_steps-1 of an epoch over X (C-contiguous, the model's
        dtype) and Y (int64 labels in range, or contiguous targets) -- both validated once
        by the caller.  Batch s holds rows perm[s*batch_size : (s+1)*batch_size].  Writes
        each step's loss (and correct count) at index s.  Stops before the update of a step
        whose loss is not finite; returns the number of steps completed."""
        cdef Py_ssize_t s, lo, hi, n = perm.shape[0], done = 0
        cdef int q
        cdef int M, err = 0
        cdef Py_ssize_t kx = self.K0 * (8 if self.dbl else 4)
        cdef Py_ssize_t ky = self.Nout * (8 if self.dbl else 4) if _regression(self.loss_kind) \
            else 8
        cdef const char *xs = <const char *>cnp.PyArray_DATA(X)
        cdef const char *ys = <const char *>cnp.PyArray_DATA(Y)
        cdef double loss
        cdef bint clf = not _regression(self.loss_kind)
        # the Trainer validated the data against the model it planned; re-check what this
        # kernel relies on (cheap, once per call), in case the model changed since
        if batch_size < 1 or batch_size > self.cap:
            raise ValueError("run_batches: batch_size exceeds the planned capacity")
        if cnp.PyArray_NDIM(X) != 2 or cnp.PyArray_DIMS(X)[1] != self.K0 or \
                cnp.PyArray_DIMS(X)[0] != n or cnp.PyArray_TYPE(X) != self.typenum or \
                not cnp.PyArray_ISNOTSWAPPED(X) or not cnp.PyArray_IS_C_CONTIGUOUS(X):
            raise TypeError(f"compiled step: X must be a C-contiguous "
                            f"{'float64' if self.dbl else 'float32'} array of shape ({n}, "
                            f"{self.K0}) for this model, got {X.dtype} {(<object>X).shape}")
        if _regression(self.loss_kind):
            ok = (cnp.PyArray_NDIM(Y) == 2 and cnp.PyArray_DIMS(Y)[0] == n and
                  cnp.PyArray_DIMS(Y)[1] == self.Nout and cnp.PyArray_TYPE(Y) == self.typenum)
        else:
            ok = (cnp.PyArray_NDIM(Y) == 1 and cnp.PyArray_DIMS(Y)[0] == n and
                  cnp.PyArray_TYPE(Y) == cnp.NPY_INT64)
        if not ok or not cnp.PyArray_ISNOTSWAPPED(Y) or not cnp.PyArray_IS_C_CONTIGUOUS(Y):
            raise TypeError(f"compiled step: targets of dtype {Y.dtype} and shape "
                            f"{(<object>Y).shape} do not fit this model and loss")
        if first < 0 or n_steps < 0 or (first + n_steps) * batch_size - batch_size >= n \
                and n_steps > 0 or losses.shape[0] < first + n_steps or \
                correct.shape[0] < first + n_steps:
            raise ValueError("run_batches: steps out of range")
        cdef Py_ssize_t bad
        if not _regression(self.loss_kind):
            bad = _bad_label(n, <const int64_t *>cnp.PyArray_DATA(Y), self.Nout)
            if bad >= 0:
                raise ValueError(f"compiled step: labels must be in [0, {self.Nout}) for "
                                 f"{self.Nout} classes; labels[{bad}] = {Y[bad]}")
        self._sync()
        if self.min_rows and n_steps > 0 and (batch_size < self.min_rows or
                                              n - (first + n_steps - 1) * batch_size == 1):
            self._few_rows(1)
        with nogil:
            s = first
            while s < first + n_steps:
                lo = s * batch_size
                hi = lo + batch_size
                if hi > n:
                    hi = n
                M = <int>(hi - lo)
                _gather(M, kx, xs, kx, &perm[lo], <char *>self.xbuf)
                if clf:
                    _gather(M, ky, ys, ky, &perm[lo], <char *>self.ybuf)
                else:
                    _gather(M, ky, ys, ky, &perm[lo], <char *>self.tbuf)
                if self.dbl:
                    loss = _train_step[double](self.ops, self.nops, self.S, self.nslots, self.s_in,
                                               self.s_out, self.P, self.np_, &self.h,
                                               self.loss_kind, self.mean, self.margin, self.pw, M,
                                               <const double *>self.xbuf, self.K0,
                                               <const double *>self.tbuf, self.ybuf,
                                               <double *>self.gl, self.rows, True,
                                               &correct[s] if clf else NULL, self.G,
                                               self.clip, self.max_norm, &self.last_norm,
                                               &err)
                else:
                    loss = _train_step[float](self.ops, self.nops, self.S, self.nslots, self.s_in,
                                              self.s_out, self.P, self.np_, &self.h,
                                              self.loss_kind, self.mean, self.margin, self.pw, M,
                                              <const float *>self.xbuf, self.K0,
                                              <const float *>self.tbuf, self.ybuf,
                                              <float *>self.gl, self.rows, True,
                                              &correct[s] if clf else NULL, self.G,
                                              self.clip, self.max_norm, &self.last_norm,
                                              &err)
                losses[s] = loss
                if err != ERR_NONE:
                    break
                for q in range(self.np_):
                    self.P[q].first = False
                self.h.t += 1
                done += 1
                s += 1
        self._finish(<int>done, err)
        if err == ERR_NOMEM:
            raise MemoryError("compiled step: could not allocate the GEMM packing workspace")
        return done



# ------------------------------------------------------------------ inference (forward only)
cdef int _infer(Op *ops, int nops, Slot *S, int s_in, int M, const void *x,
                Py_ssize_t rsx, bint dbl) noexcept nogil:
    """The program's forward on M rows of x (row stride rsx): the ops of the training step's
    forward, in order.  Returns nonzero when a GEMM workspace could not be allocated."""
    cdef int engine = current_engine(), nt = current_threads()
    cdef int et = loop_threads(engine, nt)
    cdef int k
    cdef float df = 0
    cdef double dd = 0
    S[s_in].val = <void *>x
    S[s_in].rs = rsx
    for k in range(nops):
        if dbl:
            if _forward_op[double](&ops[k], S, M, engine, nt, et, dd):
                return 1
        else:
            if _forward_op[float](&ops[k], S, M, engine, nt, et, df):
                return 1
    return 0


cdef class InferKernel:
    """A forward-only program (the training step's Slot and Op structs, forward fields
    only): ``run(x)`` runs the eval-mode forward of the planned model in one nogil call and
    returns the output slot's rows (a view of a preallocated buffer, overwritten by the next
    call), or None when fastnn/inference.py must re-plan (the model changed, or the batch
    exceeds the workspaces)."""
    cdef Op *ops
    cdef Slot *S
    cdef int *ipool
    cdef int nops, nslots, s_in, s_out, typenum
    cdef bint dbl
    cdef Py_ssize_t cap, K0, Nout, view_m, version
    cdef readonly object keep
    cdef object out              # (cap, Nout), the output slot's buffer
    cdef object view             # out[:view_m]
    cdef object params, datas, model, graph_plan, version_box
    cdef readonly str who

    def __cinit__(self):
        self.ops = NULL
        self.S = NULL
        self.ipool = NULL

    cdef void _free(self) noexcept:
        free(self.ops)
        free(self.S)
        free(self.ipool)
        self.ops = NULL
        self.S = NULL
        self.ipool = NULL

    def __dealloc__(self):
        self._free()

    def setup(self, str who, object model, object graph_plan, list slots, list ops,
              int s_in, int s_out, list params, Py_ssize_t cap, object dtype,
              object version_box, Py_ssize_t version):
        """slots: dicts n, val ((cap, n) arrays; None for the input slot); ops: dicts kind,
        gop, act, slope, ins, outs, K, N, W, b (the training program's forward fields)."""
        cdef int i, j, ni = 0
        cdef Op *op
        self._free()
        self.nops = len(ops)
        self.nslots = len(slots)
        for d in ops:
            ni += len(d["ins"]) + len(d["outs"])
        self.ops = <Op *>calloc(max(self.nops, 1), sizeof(Op))
        self.S = <Slot *>calloc(max(self.nslots, 1), sizeof(Slot))
        self.ipool = <int *>calloc(max(ni, 1), sizeof(int))
        if self.ops == NULL or self.S == NULL or self.ipool == NULL:
            self._free()
            raise MemoryError("compile_inference: out of memory")
        keep = []
        for i, d in enumerate(slots):
            self.S[i].n = d["n"]
            self.S[i].rs = d["n"]
            self.S[i].val = _ptr(d["val"])
            if d["val"] is not None:
                keep.append(d["val"])
        ni = 0
        for i, d in enumerate(ops):
            op = &self.ops[i]
            ni = _forward_fields(op, d, self.ipool, ni)
            if d["W"] is not None:
                keep.append(d["W"])
            if d["b"] is not None:
                keep.append(d["b"])
            keep += [d[k] for k in ("st2", "rm", "rv") if d.get(k) is not None]
        self.keep = keep
        self.who = who
        self.s_in = s_in
        self.s_out = s_out
        self.cap = cap
        self.K0 = self.S[s_in].n
        self.Nout = self.S[s_out].n
        self.out = slots[s_out]["val"]
        self.view = self.out
        self.view_m = cap
        self.dbl = np_dtype(dtype) == np_dtype("float64")
        self.typenum = cnp.NPY_FLOAT64 if self.dbl else cnp.NPY_FLOAT32
        self.params = params
        self.datas = [p._data for p in params]
        self.model = model
        self.graph_plan = graph_plan
        self.version_box = version_box
        self.version = version

    property capacity:
        def __get__(self):
            return self.cap

    property n_ops:
        def __get__(self):
            return self.nops

    cpdef bint valid(self):
        """False when the model's structure, a graph's plan or a parameter's array changed
        since setup (the program must be re-planned)."""
        return _unchanged(self.version_box, self.version, self.model, self.graph_plan,
                          self.params, self.datas)

    cdef _bad_input(self, x):
        dt = "float64" if self.dbl else "float32"
        if not cnp.PyArray_Check(x):
            raise TypeError(f"{self.who}: x must be a numpy.ndarray of shape (batch, "
                            f"{self.K0}) and dtype {dt}, got {type(x).__name__}")
        if cnp.PyArray_TYPE(<cnp.ndarray>x) != self.typenum or \
                not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x):
            raise TypeError(f"{self.who}: x has dtype {x.dtype} but the model computes in "
                            f"{dt}; convert it with .astype(np.{dt})")
        raise ValueError(f"{self.who}: x must have shape (batch, {self.K0}), got shape "
                         f"{x.shape}")

    def run(self, x):
        """The output for x (batch, K0) of the model's dtype, or None (re-plan first)."""
        cdef cnp.ndarray xa
        cdef Py_ssize_t M
        cdef int e
        cdef const void *px
        cdef bint dbl = self.dbl
        if not self.valid():
            return None
        if not cnp.PyArray_Check(x):
            self._bad_input(x)
        xa = <cnp.ndarray>x
        if cnp.PyArray_TYPE(xa) != self.typenum or not cnp.PyArray_ISNOTSWAPPED(xa) or \
                cnp.PyArray_NDIM(xa) != 2 or cnp.PyArray_DIMS(xa)[1] != self.K0:
            self._bad_input(x)
        M = cnp.PyArray_DIMS(xa)[0]
        if M > self.cap:
            return None
        if M == 0:
            return self.out[:0].copy()
        if not cnp.PyArray_IS_C_CONTIGUOUS(xa) or not cnp.PyArray_ISALIGNED(xa):
            xa = xa.copy()     # (C order; np.ascontiguousarray keeps an unaligned array)
        px = cnp.PyArray_DATA(xa)
        with nogil:
            e = _infer(self.ops, self.nops, self.S, self.s_in, <int>M, px, self.K0, dbl)
        if e:
            raise MemoryError(f"{self.who}: could not allocate the GEMM packing workspace")
        if M != self.view_m:
            self.view = self.out[:M]
            self.view_m = M
        return self.view
