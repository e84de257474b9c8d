# cython: language_level=3
"""The compiled training step: forward, loss, backward and the SGD update of a chain of
Linear(+activation) layers in one nogil call, on workspaces allocated once.

It calls the very kernels the module path calls (dense.gemm_any with the same operands and
strides, act_backward, col_sums, the loss kernels, sgd_update), in the same order, so after
any number of steps the parameters are bitwise identical to zero_grad / forward / loss /
backward / step through the modules.  fastnn/train.py plans the network, validates the
model and owns every array this object points into; `_StepKernel` only checks, per call,
that nothing it points into has been replaced since (otherwise train.py re-plans).

`run_batches` adds minibatch gathering (rows of X picked by a permutation) and per-step loss
and accuracy bookkeeping, so a whole epoch runs without Python work per step.
"""
from cython cimport floating
from libc.stdlib cimport free, calloc
from libc.string cimport memcpy
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint64_t
cimport numpy as cnp
from numpy import (dtype as np_dtype, empty_like as np_empty_like,
                   ascontiguousarray as np_ascontiguousarray, int64 as np_int64)

from ._core cimport (current_engine, current_threads, act_backward, col_sums,
                     ENGINE_BLAS, FNN_ACT_IDENTITY)
from .dense cimport gemm_any
from .losses cimport mse_loss, xent_loss, svm_loss
from .optim cimport sgd_update

cnp.import_array()

cdef enum:
    LOSS_MSE = 0
    LOSS_XENT = 1
    LOSS_SVM = 2

# error codes of _core
cdef enum:
    ERR_NONE = 0
    ERR_NOMEM = -1
    ERR_NONFINITE = 1


cdef struct Layer:
    int K, N, act
    double slope
    void *W          # (N, K) row-major
    void *b          # (N,) or NULL
    void *gW
    void *gb         # NULL when there is no bias
    bint accW        # add into gW (the Parameter already got this step's gradient
    bint accb        # from a later layer: it is shared), else overwrite; same for gb
    void *out        # (cap, N): this layer's output
    void *work       # (cap, N): act'(y) * grad_out, NULL for identity
    void *gx         # (cap, K): gradient w.r.t. this layer's input, NULL for layer 0


cdef struct Param:
    Py_ssize_t n
    void *p
    void *g
    void *buf        # momentum buffer or NULL
    bint first       # the buffer is new: this step initialises it (SGD's first step)


cdef struct Hyper:
    double lr, momentum, dampening, weight_decay
    bint nesterov, maximize


cdef double _core(Layer *L, int nl, Param *P, int np_, Hyper *h, int loss_kind,
                  bint mean, double margin, int M, const floating *x, Py_ssize_t rsx,
                  const floating *t, const int64_t *y, floating *gl, double *rows,
                  bint check_finite, int64_t *correct, int *err) noexcept nogil:
    """One step on M rows; returns the loss.  x is (M, K0) with row stride rsx, t (M, Nout)
    contiguous targets (MSE) or y (M,) labels.  err: ERR_NONFINITE stops before backward."""
    cdef int engine = current_engine(), nt = current_threads()
    cdef int et = 1 if engine == ENGINE_BLAS else nt      # elementwise threads
    cdef int i, j, N, K, e = 0, c
    cdef const floating *inp
    cdef Py_ssize_t rsin, r
    cdef const floating *dz
    cdef const floating *g
    cdef floating *o
    cdef floating mx
    cdef floating one = 1, zero = 0
    cdef double loss, scale
    err[0] = ERR_NONE
    # ---- forward: out_i = act(in_i @ W_i^T + b_i), the same gemm_any call as linear_forward
    inp = x
    rsin = rsx
    for i in range(nl):
        N = L[i].N
        K = L[i].K
        e = gemm_any(engine, nt, M, N, K, one, inp, rsin, 1, <const floating *>L[i].W, 1, K,
                     zero, <floating *>L[i].out, N, <const floating *>L[i].b, L[i].act,
                     <floating>L[i].slope)
        if e:
            err[0] = ERR_NOMEM
            return 0
        inp = <const floating *>L[i].out
        rsin = N
    # ---- loss value and its gradient (gl), the kernels the Loss modules call
    N = L[nl - 1].N
    o = <floating *>L[nl - 1].out
    if loss_kind == LOSS_MSE:
        scale = 1.0 / (<double>M * N) if mean else 1.0
        loss = mse_loss(M, N, o, N, t, N, gl, N, scale, rows, et)
    elif loss_kind == LOSS_XENT:
        scale = 1.0 / M if mean else 1.0
        loss = xent_loss(M, N, o, N, y, gl, N, scale, rows, et)
    else:
        scale = 1.0 / M if mean else 1.0
        loss = svm_loss(M, N, o, N, y, gl, N, margin, scale, rows, et)
    if correct != NULL and loss_kind != LOSS_MSE:
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
    # ---- backward, layer by layer (dense.linear_backward's calls)
    g = gl
    i = nl - 1
    while i >= 0:
        N = L[i].N
        K = L[i].K
        if i > 0:
            inp = <const floating *>L[i - 1].out
            rsin = K
        else:
            inp = x
            rsin = rsx
        if L[i].act == FNN_ACT_IDENTITY:
            dz = g
        else:
            act_backward(M, N, g, N, <const floating *>L[i].out, N, <floating *>L[i].work, N,
                         L[i].act, <floating>L[i].slope, et)
            dz = <const floating *>L[i].work
        # grad_W (N,K) (+)= dz^T @ in
        e = gemm_any(engine, nt, N, K, M, one, dz, 1, N, inp, rsin, 1,
                     one if L[i].accW else zero, <floating *>L[i].gW, K, <floating *>NULL,
                     FNN_ACT_IDENTITY, zero)
        if L[i].gb != NULL:
            col_sums(M, N, dz, N, <floating *>L[i].gb, L[i].accb, et)
        if i > 0 and e == 0:
            # grad_in (M,K) = dz @ W
            e = gemm_any(engine, nt, M, K, N, one, dz, N, 1, <const floating *>L[i].W, K, 1,
                         zero, <floating *>L[i].gx, K, <floating *>NULL, FNN_ACT_IDENTITY,
                         zero)
            g = <const floating *>L[i].gx
        if e:
            err[0] = ERR_NOMEM
            return 0
        i -= 1
    # ---- SGD, parameter by parameter (optim.sgd_update, PyTorch's order)
    for i in range(np_):
        sgd_update(P[i].n, <floating *>P[i].p, <const floating *>P[i].g, <floating *>P[i].buf,
                   <floating>h.lr, <floating>h.momentum, <floating>h.dampening,
                   <floating>h.weight_decay, h.nesterov, h.maximize, P[i].first, et)
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


cdef class _StepKernel:
    """Pointers into the arrays train.py planned; see the module docstring."""
    cdef Layer *L
    cdef Param *P
    cdef int nl, np_, loss_kind, dbl, typenum
    cdef bint mean
    cdef double margin
    cdef Hyper h
    cdef Py_ssize_t cap, K0, Nout
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
    cdef object optbufs                # opt._bufs when planned, and its entries
    cdef object bufs_seen
    cdef object version_box
    cdef Py_ssize_t version

    def __cinit__(self):
        self.L = NULL
        self.P = NULL

    def __dealloc__(self):
        free(self.L)
        free(self.P)

    def setup(self, object model, list layers, list params, list mparams, object opt,
              object loss_fn, int loss_kind, Py_ssize_t cap, object dtype, list scratch,
              object version_box, Py_ssize_t version):
        """layers: dicts with K, N, act, slope, W, b, gW, gb, acc, out, work, gx (arrays or
        None); params: Parameters in the optimizer's order; scratch: gl (cap, Nout),
        rows (cap,) float64, xbuf (cap, K0), tbuf (cap, Nout), ybuf (cap,) int64."""
        cdef int i
        free(self.L)
        free(self.P)
        self.L = NULL
        self.P = NULL
        self.nl = len(layers)
        self.np_ = len(params)
        self.L = <Layer *>calloc(max(self.nl, 1), sizeof(Layer))
        self.P = <Param *>calloc(max(self.np_, 1), sizeof(Param))
        if self.L == NULL or self.P == NULL:
            raise MemoryError("compile_step: out of memory")
        keep = []
        for i, d in enumerate(layers):
            self.L[i].K = d["K"]
            self.L[i].N = d["N"]
            self.L[i].act = d["act"]
            self.L[i].slope = d["slope"]
            self.L[i].accW = d["accW"]
            self.L[i].accb = d["accb"]
            for key in ("W", "b", "gW", "gb", "out", "work", "gx"):
                if d[key] is not None:
                    keep.append(d[key])
            self.L[i].W = _ptr(d["W"])
            self.L[i].b = _ptr(d["b"])
            self.L[i].gW = _ptr(d["gW"])
            self.L[i].gb = _ptr(d["gb"])
            self.L[i].out = _ptr(d["out"])
            self.L[i].work = _ptr(d["work"])
            self.L[i].gx = _ptr(d["gx"])
        for i, p in enumerate(params):
            self.P[i].n = p._flat.shape[0]
            self.P[i].p = _ptr(p._flat)
            self.P[i].g = _ptr(p._gflat)
            self.P[i].buf = NULL
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
        self.params = params
        self.datas = [p._data for p in params]
        self.mparams = mparams
        self.opt = opt
        self.optbufs = None
        self.bufs_seen = [None] * len(params)
        self.model = model
        self.loss_fn = loss_fn
        self.loss_kind = loss_kind
        self.cap = cap
        self.K0 = layers[0]["K"]
        self.Nout = layers[len(layers) - 1]["N"]
        self.dbl = np_dtype(dtype) == np_dtype("float64")
        self.typenum = cnp.NPY_FLOAT64 if self.dbl else cnp.NPY_FLOAT32
        self.version_box = version_box
        self.version = version

    property capacity:
        def __get__(self):
            return self.cap

    property n_layers:
        def __get__(self):
            return self.nl

    cpdef bint valid(self):
        """False when the model's structure, a parameter's array or the optimizer's parameter
        list changed since setup (the step must be re-planned)."""
        cdef int i
        if self.version_box[0] != self.version or self.opt.params is not self.params:
            return False
        for i in range(self.np_):
            if self.params[i]._data is not self.datas[i]:
                return False
        return True

    cdef int _sync_opt(self) except -1:
        """Read the loss's reduction (and margin) and the optimizer's hyperparameters; point at
        its momentum buffers, creating them (first step) as SGD.step does."""
        lf = self.loss_fn
        self.mean = lf.reduction == "mean"
        if self.loss_kind == LOSS_SVM:
            self.margin = lf.margin
        opt = self.opt
        h = &self.h
        h.lr = opt._lr
        h.momentum = opt._momentum
        h.dampening = opt._dampening
        h.weight_decay = opt._weight_decay
        h.nesterov = opt._nesterov
        h.maximize = bool(opt.maximize)
        cdef int i
        for i in range(self.np_):
            self.P[i].first = False
            self.P[i].buf = NULL
        if h.momentum == 0:
            return 0
        bufs = opt._bufs
        seen = self.bufs_seen
        for i in range(self.np_):
            b = bufs[i]
            if b is None or (b is not seen[i] and (b.shape[0] != self.P[i].n or
                                                   b.dtype != self.params[i]._flat.dtype)):
                b = bufs[i] = np_empty_like(self.params[i]._flat)
                self.P[i].first = True
            seen[i] = b
            self.P[i].buf = _ptr(b)
        return 0

    cdef _finish(self, int steps, int err):
        """Bookkeeping after `steps` completed steps.  A step stopped by a non-finite loss (or
        out of memory) applied no update: the gradients then read as zero, as after the
        module path's zero_grad, and momentum buffers created for it (uninitialised) are
        dropped, so the optimizer's state is that of the last completed step."""
        cdef int i
        cdef bint aborted = err != ERR_NONE
        for p in self.mparams:
            p._stale = aborted
        if aborted and steps == 0:
            bufs = self.opt._bufs
            for i in range(self.np_):
                if self.P[i].first:
                    bufs[i] = None
                    self.bufs_seen[i] = None
        self.opt.steps += steps

    def step(self, x, y, bint check_finite=False):
        """One step on a batch: x (M, K0) of the model's dtype, y labels (M,) any int dtype
        or targets (M, Nout).  Checked here, run unchecked.  Returns the loss (float), or
        None when train.py must re-plan first (the model or optimizer changed, or the batch
        exceeds the workspaces)."""
        cdef cnp.ndarray xa, ya
        cdef int M, err = 0
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
            xa = np_ascontiguousarray(xa)
        if self.loss_kind == LOSS_MSE:
            if not cnp.PyArray_Check(y) or cnp.PyArray_TYPE(<cnp.ndarray>y) != self.typenum \
                    or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>y):
                raise TypeError(f"compiled step: MSELoss targets must be a numpy.ndarray of "
                                f"dtype {'float64' if self.dbl else 'float32'}, got "
                                f"{getattr(y, 'dtype', type(y).__name__)}")
            ya = <cnp.ndarray>y
            if cnp.PyArray_NDIM(ya) != 2 or cnp.PyArray_DIMS(ya)[0] != M or \
                    cnp.PyArray_DIMS(ya)[1] != self.Nout:
                raise ValueError(f"compiled step: targets must have the output's shape "
                                 f"({M}, {self.Nout}), got {y.shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(ya) or not cnp.PyArray_ISALIGNED(ya):
                ya = np_ascontiguousarray(ya)
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
            return None          # train.py re-plans with a larger capacity
        self._sync_opt()
        with nogil:
            if self.dbl:
                loss = _core[double](self.L, self.nl, self.P, self.np_, &self.h, self.loss_kind,
                                     self.mean, self.margin, M,
                                     <const double *>cnp.PyArray_DATA(xa), self.K0,
                                     <const double *>cnp.PyArray_DATA(ya),
                                     <const int64_t *>cnp.PyArray_DATA(ya),
                                     <double *>self.gl, self.rows, check_finite, NULL, &err)
            else:
                loss = _core[float](self.L, self.nl, self.P, self.np_, &self.h, self.loss_kind,
                                    self.mean, self.margin, M,
                                    <const float *>cnp.PyArray_DATA(xa), self.K0,
                                    <const float *>cnp.PyArray_DATA(ya),
                                    <const int64_t *>cnp.PyArray_DATA(ya),
                                    <float *>self.gl, self.rows, check_finite, NULL, &err)
        if err != ERR_NONE:
            self._finish(0, err)
            if err == ERR_NOMEM:
                raise MemoryError("compiled step: could not allocate the GEMM packing "
                                  "workspace")
            return loss
        self._finish(1, err)
        return loss

    def run_batches(self, cnp.ndarray X, cnp.ndarray Y, const int64_t[::1] perm,
                    Py_ssize_t first, Py_ssize_t n_steps, Py_ssize_t batch_size,
                    double[::1] losses, int64_t[::1] correct):
        """Steps first .. first+n_steps-1 of an epoch over X (C-contiguous, the model's
        dtype) and Y (int64 labels in range, or contiguous targets) -- both validated once
        by the Trainer.  Batch s holds rows perm[s*batch_size : (s+1)*batch_size].  Writes
        each step's loss (and correct count) at index s.  Stops before the update of a step
        whose loss is not finite; returns the number of steps completed."""
        cdef Py_ssize_t s, lo, hi, n = perm.shape[0], done = 0
        cdef int q
        cdef int M, err = 0
        cdef Py_ssize_t kx = self.K0 * (8 if self.dbl else 4)
        cdef Py_ssize_t ky = self.Nout * (8 if self.dbl else 4) if self.loss_kind == LOSS_MSE \
            else 8
        cdef const char *xs = <const char *>cnp.PyArray_DATA(X)
        cdef const char *ys = <const char *>cnp.PyArray_DATA(Y)
        cdef double loss
        cdef bint clf = self.loss_kind != LOSS_MSE
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
        if self.loss_kind == LOSS_MSE:
            ok = (cnp.PyArray_NDIM(Y) == 2 and cnp.PyArray_DIMS(Y)[0] == n and
                  cnp.PyArray_DIMS(Y)[1] == self.Nout and cnp.PyArray_TYPE(Y) == self.typenum)
        else:
            ok = (cnp.PyArray_NDIM(Y) == 1 and cnp.PyArray_DIMS(Y)[0] == n and
                  cnp.PyArray_TYPE(Y) == cnp.NPY_INT64)
        if not ok or not cnp.PyArray_ISNOTSWAPPED(Y) or not cnp.PyArray_IS_C_CONTIGUOUS(Y):
            raise TypeError(f"compiled step: targets of dtype {Y.dtype} and shape {(<object>Y).shape} do "
                            "not fit this model and loss")
        if first < 0 or n_steps < 0 or (first + n_steps) * batch_size - batch_size >= n \
                and n_steps > 0 or losses.shape[0] < first + n_steps or \
                correct.shape[0] < first + n_steps:
            raise ValueError("run_batches: steps out of range")
        cdef Py_ssize_t bad
        if self.loss_kind != LOSS_MSE:
            bad = _bad_label(n, <const int64_t *>cnp.PyArray_DATA(Y), self.Nout)
            if bad >= 0:
                raise ValueError(f"compiled step: labels must be in [0, {self.Nout}) for "
                                 f"{self.Nout} classes; labels[{bad}] = {Y[bad]}")
        self._sync_opt()
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
                    loss = _core[double](self.L, self.nl, self.P, self.np_, &self.h,
                                         self.loss_kind, self.mean, self.margin, M,
                                         <const double *>self.xbuf, self.K0,
                                         <const double *>self.tbuf, self.ybuf,
                                         <double *>self.gl, self.rows, True,
                                         &correct[s] if clf else NULL, &err)
                else:
                    loss = _core[float](self.L, self.nl, self.P, self.np_, &self.h,
                                        self.loss_kind, self.mean, self.margin, M,
                                        <const float *>self.xbuf, self.K0,
                                        <const float *>self.tbuf, self.ybuf,
                                        <float *>self.gl, self.rows, True,
                                        &correct[s] if clf else NULL, &err)
                losses[s] = loss
                if err != ERR_NONE:
                    break
                for q in range(self.np_):
                    self.P[q].first = False
                done += 1
                s += 1
        self._finish(<int>done, err)
        if err == ERR_NOMEM:
            raise MemoryError("compiled step: could not allocate the GEMM packing workspace")
        return done

