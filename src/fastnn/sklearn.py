"""scikit-learn drop-ins: ``MLPClassifier`` and ``MLPRegressor`` on fastnn's kernels.

Change one import (``from fastnn.sklearn import MLPClassifier``) and keep your pipelines,
grid searches and pickles.  The estimators subclass scikit-learn's own, so parameter
validation, label handling, early stopping, ``warm_start``, ``partial_fit``, the convergence
rules and ``ConvergenceWarning`` are scikit-learn's code; what is replaced is the numerical
core: every minibatch's forward and backward pass runs on fastnn's fused GEMM kernels
(bias and activation in the GEMM epilogue, nogil), the parameters live in ONE flat buffer
that ``coefs_`` / ``intercepts_`` view (scikit-learn's (in, out) layout), and the Adam / SGD
updates are scikit-learn's exact rules applied once to that buffer.  ``lbfgs`` minimizes with
``scipy.optimize.minimize(method="L-BFGS-B")`` over one fused loss-and-gradient call with no
packing or unpacking.

Extra keyword arguments (defaults = scikit-learn's behaviour; the full list is in the
README section "From scikit-learn"): ``n_threads`` (kernel threads;
None = ``fastnn.get_num_threads()``), ``dtype`` (None keeps float32 / float64 input as
scikit-learn does; "float32" / "float64" casts), ``class_weight`` (classifier: None,
"balanced" or a {class: weight} dict, folded into sample_weight), and ``to_fastnn()``
returning the trained network as a ``fastnn.Sequential``.  Sparse input is accepted and
converted to a dense array (fastnn's kernels are dense).

scikit-learn is an optional dependency: ``pip install fastnn[sklearn]``.
"""
from __future__ import annotations

_NEEDS = ("fastnn.sklearn needs scikit-learn >= 1.6 (an optional dependency): "
          "pip install fastnn[sklearn]")
try:
    from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
    from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
    from sklearn.utils.validation import validate_data
except ImportError as _e:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(_NEEDS) from _e

import warnings

import numpy as np
import scipy.optimize
import scipy.sparse
from scipy.special import expit
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.utils import gen_batches, shuffle as _sk_shuffle
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.optimize import _check_optimize_result

from ._kernels import dense as _dense
from ._kernels import optim as _optim
from ._kernels._core import Activation, OptKind

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's hidden activation names -> fastnn's kernel codes; beyond scikit-learn:
# "leaky_relu" (negative slope 0.01) and, when this fastnn build has them, "gelu" / "silu"
_ACT = {"identity": int(Activation.IDENTITY), "logistic": int(Activation.SIGMOID),
        "tanh": int(Activation.TANH), "relu": int(Activation.RELU),
        "leaky_relu": int(Activation.LEAKY_RELU)}
_OPTIONAL_ACT = ("gelu", "silu")
_SLOPE = 0.01


def _saves_input():
    """Kernel codes whose backward reads the saved pre-activation instead of the output
    (fastnn.ops.SAVES_INPUT_CODES: gelu, silu, ... in builds that have them)."""
    from . import ops
    return getattr(ops, "SAVES_INPUT_CODES", frozenset())
_DTYPES = {None: None, "float32": np.float32, "float64": np.float64}


class _FlatAdam(AdamOptimizer):
    """scikit-learn's Adam on one flat buffer in one fused pass of fastnn's Adam kernel.

    scikit-learn: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); p -= lr_t m / (sqrt(v) + eps)
    (eps outside the bias correction).  fastnn's (torch's) kernel computes
    p -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps'); with eps' = eps/sqrt(1 - b2^t)
    that is scikit-learn's update exactly (up to rounding)."""

    def update_params(self, params, grads):
        p, = params
        g, = grads
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        self.learning_rate = (self.learning_rate_init * np.sqrt(1 - b2 ** self.t)
                              / (1 - b1 ** self.t))
        eps = self.epsilon / (1.0 - b2 ** self.t) ** 0.5
        hyper = (float(self.learning_rate_init), float(b1), float(b2), float(eps), 0.0, 0.0,
                 0.0)
        _optim._update(int(OptKind.ADAM), hyper, self.t, p, g, (self.ms[0], self.vs[0], None),
                       False, self._n_threads)


class _FlatSGD(SGDOptimizer):
    """scikit-learn's SGD velocity form (v = mu v - lr g; p += v; nesterov: p += mu v - lr g)
    on one flat buffer in one pass of fastnn's SGD kernel: it keeps buf = -v, fed with the
    gradient scaled by the current learning rate (torch's buf = mu buf + g'; p -= g' + mu buf
    for nesterov, else p -= buf), so a changing learning rate (invscaling, adaptive) stays
    scikit-learn's."""

    def update_params(self, params, grads):
        p, = params
        g, = grads
        g *= self.learning_rate
        hyper = (1.0, float(self.momentum), 0.0, 0.0,
                 1.0 if (self.nesterov and self.momentum) else 0.0, 0.0)
        _optim._update(int(OptKind.SGD), hyper, 1, p, g, (self.velocities[0],), False,
                       self._n_threads)


class _FastMLPMixin:
    """The numerical core shared by both estimators; scikit-learn's base class keeps the
    bookkeeping.  Parameters: ``self._flat`` holds every layer's weight in fastnn's
    (out, in) row-major layout, then the intercepts; ``coefs_[i]`` (scikit-learn's (in, out)
    shape) is the transposed view of layer i's block and ``intercepts_[i]`` a view too."""

    # ---- input ----------------------------------------------------------------------
    def _fnn_dtype(self):
        # None, a name or anything numpy.dtype() understands (np.float32, np.dtype("f8"))
        dt = self.dtype
        if dt is not None:
            try:
                dt = np.dtype(dt).name
            except TypeError:
                pass
        if not isinstance(dt, (str, type(None))) or dt not in _DTYPES:
            raise ValueError(f"{type(self).__name__}: dtype must be None, 'float32' or "
                             f"'float64' (or np.float32 / np.float64), got {self.dtype!r}")
        return _DTYPES[dt]

    def _fnn_threads(self):
        n = self.n_threads
        if n is None:
            return -1
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{type(self).__name__}: n_threads must be None or an int "
                             f">= 1, got {n!r}")
        return int(n)

    def _fnn_codes(self):
        """Kernel codes of the hidden layers: `activation` is one name (scikit-learn's) or
        a list, one name per hidden layer."""
        act = self.activation
        who = type(self).__name__
        sizes = self.hidden_layer_sizes
        n_hidden = len(list(sizes)) if hasattr(sizes, "__iter__") else 1
        names = [act] * n_hidden if isinstance(act, str) else list(act)
        if len(names) != n_hidden:
            raise ValueError(f"{who}: activation lists one name per hidden layer: expected "
                             f"{n_hidden}, got {len(names)} ({act!r})")
        from .ops import ACTIVATIONS
        codes = []
        for a in names:
            if a in _ACT:
                codes.append(_ACT[a])
            elif a in _OPTIONAL_ACT and a in ACTIVATIONS:
                codes.append(int(ACTIVATIONS[a]))
            elif a in _OPTIONAL_ACT:
                raise ValueError(f"{who}: activation {a!r} needs fastnn's {a.upper()} "
                                 "kernel, which this fastnn build does not have")
            else:
                raise ValueError(f"{who}: activation must be one of "
                                 f"{sorted(_ACT) + list(_OPTIONAL_ACT)} or a list of them "
                                 f"(one per hidden layer), got {a!r}")
        return codes

    def _fnn_dropout(self):
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) \
                or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be a float in [0, 1), "
                             f"got {p!r}")
        if p and self.solver == "lbfgs":
            raise ValueError(f"{type(self).__name__}: dropout needs a stochastic solver "
                             "('sgd' or 'adam'), got solver='lbfgs'")
        return float(p)

    def _init_coef(self, fan_in, fan_out, dtype):
        if isinstance(self.activation, str):
            return super()._init_coef(fan_in, fan_out, dtype)
        # a list: scikit-learn's Glorot bound, factor 2 only when every layer is logistic
        factor = 2.0 if all(a == "logistic" for a in self.activation) else 6.0
        bound = np.sqrt(factor / (fan_in + fan_out))
        coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
        intercept = self._random_state.uniform(-bound, bound, fan_out)
        return coef.astype(dtype, copy=False), intercept.astype(dtype, copy=False)

    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._codes = self._fnn_codes()      # a bad activation fails before any work
        self._fnn_dropout()
        return super()._fit(X, y, sample_weight=sample_weight, incremental=incremental)

    def _dense_input(self, X):
        dt = self._fnn_dtype()
        if scipy.sparse.issparse(X):
            X = X.toarray()
        if dt is not None and X.dtype != dt:
            X = X.astype(dt)
        return np.ascontiguousarray(X)

    def _validate_input(self, X, y, incremental, reset):
        X, y = super()._validate_input(X, y, incremental, reset)
        return self._dense_input(X), y

    # ---- parameters -----------------------------------------------------------------
    def _fnn_bind(self, dtype):
        """Pack coefs_/intercepts_ into one flat buffer (unless they already view it) and
        rebind them as views of it."""
        flat = getattr(self, "_flat", None)
        coefs, ints = self.coefs_, self.intercepts_
        sizes = [c.size for c in coefs] + [b.size for b in ints]
        ok = (flat is not None and flat.dtype == dtype and flat.size == sum(sizes)
              and all(c.base is flat for c in coefs) and all(b.base is flat for b in ints))
        if ok:
            return flat
        flat = np.concatenate([c.T.ravel() for c in coefs] + [b.ravel() for b in ints])
        flat = flat.astype(dtype, copy=False)
        self._fnn_views(flat, [c.shape for c in coefs])
        return flat

    def _fnn_views(self, flat, shapes):
        self._flat = flat
        self.coefs_, self.intercepts_ = [], []
        start = 0
        for shp in shapes:
            end = start + shp[0] * shp[1]
            self.coefs_.append(flat[start:end].reshape(shp[1], shp[0]).T)
            start = end
        self._n_coef = start
        for shp in shapes:
            end = start + shp[1]
            self.intercepts_.append(flat[start:end])
            start = end

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_flat", None)      # coefs_/intercepts_ pickle as plain arrays
        state.pop("_fnn_work", None)  # minibatch work arrays: rebuilt on demand
        return state

    # ---- forward / backward ---------------------------------------------------------
    def _fnn_buffers(self, n, dtype):
        """Per-batch-size work arrays (activations, deltas), reused across minibatches."""
        cache = self.__dict__.setdefault("_fnn_work", {})
        key = (n, np.dtype(dtype).char, tuple(c.shape for c in self.coefs_))
        w = cache.get(key)
        if w is None:
            if len(cache) > 4:
                cache.clear()
            outs = [np.empty((n, c.shape[1]), dtype) for c in self.coefs_]
            deltas = [np.empty((n, c.shape[0]), dtype) for c in self.coefs_]
            dz = [np.empty((n, c.shape[1]), dtype) for c in self.coefs_]
            zs = [np.empty((n, c.shape[1]), dtype) for c in self.coefs_]
            w = cache[key] = (outs, deltas, (np.empty((0, 0), dtype), dz, zs))
        return w

    def _fnn_forward(self, X, outs=None, masks=None, ins=None, zs=None):
        """Each layer one fused kernel call (x W^T + b and the hidden activation); the output
        activation as scikit-learn computes it.  Returns the list of layer outputs.
        Training with dropout: masks[i] (0 or 1/(1-p)) multiplies hidden output i into the
        next layer's input, recorded in `ins` (outs keeps the activation for its
        derivative).  An activation whose derivative needs its input (gelu, silu) runs
        after the GEMM on its own, and its pre-activation is kept in zs[i]."""
        codes, nt = self.__dict__.get("_codes") or self._fnn_codes(), self._fnn_threads()
        saves_input = _saves_input()
        n_layers = self.n_layers_
        if outs is None:
            outs = [np.empty((X.shape[0], c.shape[1]), X.dtype) for c in self.coefs_]
        a = X
        for i in range(n_layers - 1):
            out = outs[i]
            code = 0 if i == n_layers - 2 else codes[i]
            if code in saves_input:
                z = np.empty_like(out) if zs is None else zs[i]
                _dense._linear_forward(a, self.coefs_[i].T, self.intercepts_[i], 0, _SLOPE,
                                       z, -1, nt)
                _dense._activation_forward(z, out, code, _SLOPE, nt)
            else:
                _dense._linear_forward(a, self.coefs_[i].T, self.intercepts_[i], code,
                                       _SLOPE, out, -1, nt)
            a = out
            if masks is not None and i < n_layers - 2:
                a = out * masks[i]
            if ins is not None:
                ins.append(a)
        oa = self.out_activation_
        if oa == "softmax":
            a -= a.max(axis=1, keepdims=True)
            np.exp(a, out=a)
            a /= a.sum(axis=1, keepdims=True)
        elif oa == "logistic":
            expit(a, out=a)
        elif oa == "exp":
            np.exp(a, out=a)
        return outs

    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        X = self._dense_input(X)
        if X.dtype != self.coefs_[0].dtype:
            X = X.astype(self.coefs_[0].dtype)
        return self._fnn_forward(X)[-1]

    def _fnn_loss(self, y, p, sample_weight, sw_sum):
        """scikit-learn's loss (sklearn.neural_network._base.LOSS_FUNCTIONS) on the output
        p: log-loss with p clipped to [eps, 1-eps], half squared error averaged over the
        outputs, half Poisson deviance; sample weights as np.average's."""
        oa = self.out_activation_
        if oa == "softmax" or oa == "logistic":
            eps = np.finfo(p.dtype).eps
            q = np.clip(p, eps, 1 - eps)
            if oa == "softmax":   # y is one-hot: only the true class's term is non-zero
                per = np.log(q[y.astype(bool)])
            else:
                per = y * np.log(q)
                per += (1 - y) * np.log(1 - q)
                per = per.sum(axis=1)
            return -(per.sum() if sample_weight is None else
                     np.dot(sample_weight, per)) / sw_sum
        if oa == "exp":
            from sklearn.neural_network._base import LOSS_FUNCTIONS
            return LOSS_FUNCTIONS[self.loss](y, p, sample_weight)
        d = y - p
        per = np.einsum("ij,ij->i", d, d)
        tot = per.sum() if sample_weight is None else np.dot(sample_weight, per)
        return 0.5 * tot / sw_sum / p.shape[1]

    def _fnn_backprop(self, X, y, sample_weight, grad, masks=None):
        """Loss and its gradient w.r.t. the flat parameters (written into `grad`), with
        scikit-learn's L2 term alpha/(2 sw_sum) sum ||W||^2.  Per layer one fused backward
        call (activation derivative, grad_W, grad_b and grad_x).  `masks`: the dropout
        masks of the hidden layers (None: no dropout)."""
        outs, deltas, work = self._fnn_buffers(X.shape[0], X.dtype)
        ins = [] if masks is not None else None
        self._fnn_forward(X, outs, masks, ins, work[2])
        saves_input = _saves_input()
        p = outs[-1]
        sw_sum = X.shape[0] if sample_weight is None else sample_weight.sum()
        loss = self._fnn_loss(y, p, sample_weight, sw_sum)
        n_coef = self._n_coef
        wc = self._flat[:n_coef]
        loss += (0.5 * self.alpha) * np.dot(wc, wc) / sw_sum
        codes, nt = self._codes, self._fnn_threads()
        # delta = (p - y) * sw / sw_sum: the 1/sw_sum of _compute_loss_grad taken up front
        delta = p
        delta -= y
        if sample_weight is None:
            delta /= sw_sum
        else:
            delta *= (sample_weight / sw_sum).reshape(-1, 1)
        gstart = 0
        blocks = []
        for c in self.coefs_:
            blocks.append(gstart)
            gstart += c.size
        bstart = gstart
        grad_out = delta
        for i in range(self.n_layers_ - 2, -1, -1):
            W = self.coefs_[i].T                    # (out, in), row-major
            gW = grad[blocks[i]:blocks[i] + W.size].reshape(W.shape)
            b0 = bstart + sum(c.shape[1] for c in self.coefs_[:i])
            gb = grad[b0:b0 + W.shape[0]]
            a_in = X if i == 0 else (outs[i - 1] if ins is None else ins[i - 1])
            act = 0 if i == self.n_layers_ - 2 else codes[i]
            if masks is not None and i < self.n_layers_ - 2:
                grad_out *= masks[i]         # through the dropout after hidden layer i
            gx = deltas[i] if i > 0 else work[0]
            saved = (work[2][i] if act in saves_input else outs[i]) if act else work[0]
            _dense._linear_backward(grad_out, a_in, W, saved, act, _SLOPE,
                                    gx, gW, gb, False, work[1][i] if act else work[0],
                                    i > 0, True, -1, nt)
            grad_out = gx
        if self.alpha:
            grad[:n_coef] += (self.alpha / sw_sum) * wc
        return float(loss)

    def _fnn_full_loss(self, X, Y, sample_weight):
        """The loss on (X, Y) as lbfgs minimizes it: the data loss plus
        alpha/(2 sw_sum) sum ||W||^2."""
        p = self._fnn_forward(X)[-1]
        sw_sum = X.shape[0] if sample_weight is None else sample_weight.sum()
        wc = self._flat[:self._n_coef]
        return float(self._fnn_loss(Y, p, sample_weight, sw_sum)
                     + (0.5 * self.alpha) * np.dot(wc, wc) / sw_sum)

    # ---- lbfgs ----------------------------------------------------------------------
    def _fit_lbfgs(self, X, y, sample_weight, activations, deltas, coef_grads,
                   intercept_grads, layer_units):
        flat = self._fnn_bind(X.dtype)
        shapes = [c.shape for c in self.coefs_]
        grad = np.empty_like(flat)
        self.validation_loss_curve_ = None
        y = np.asarray(y, dtype=X.dtype)

        def fun(packed):
            flat[...] = packed
            loss = self._fnn_backprop(X, y, sample_weight, grad)
            return loss, grad.astype(np.float64)

        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol}
        try:
            from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
            options.update(_get_additional_lbfgs_options_dict("iprint", iprint))
        except ImportError:  # pragma: no cover
            pass
        res = scipy.optimize.minimize(fun, flat.astype(np.float64), method="L-BFGS-B",
                                      jac=True, options=options)
        self.n_iter_ = _check_optimize_result("lbfgs", res, self.max_iter)
        self.loss_ = res.fun
        flat[...] = res.x
        self._fnn_views(flat, shapes)

    # ---- sgd / adam -----------------------------------------------------------------
    def _fit_stochastic(self, X, y, sample_weight, activations, deltas, coef_grads,
                        intercept_grads, layer_units, incremental):
        flat = self._fnn_bind(X.dtype)
        opt = getattr(self, "_optimizer", None)
        if (not incremental or opt is None or not isinstance(opt, (_FlatAdam, _FlatSGD))
                or (opt.ms[0] if isinstance(opt, _FlatAdam) else opt.velocities[0]).shape
                != flat.shape):
            if self.solver == "sgd":
                self._optimizer = _FlatSGD([flat], self.learning_rate_init,
                                           self.learning_rate, self.momentum,
                                           self.nesterovs_momentum, self.power_t)
            else:
                self._optimizer = _FlatAdam([flat], self.learning_rate_init, self.beta_1,
                                            self.beta_2, self.epsilon)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X, y, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
                sample_weight_train = sample_weight_val = None
            else:
                (X_train, X_val, y_train, y_val, sample_weight_train,
                 sample_weight_val) = train_test_split(
                    X, y, sample_weight, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            Y_val = np.asarray(y_val, dtype=X.dtype)
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            if not self.validation_scores_ or self.__dict__.get(
                    "validation_loss_curve_") is None:      # reset with scikit-learn's lists
                self.validation_loss_curve_ = []
        else:
            X_train, y_train, sample_weight_train = X, y, sample_weight
            X_val = y_val = sample_weight_val = None
            self.validation_loss_curve_ = None
        y_train = np.asarray(y_train, dtype=X.dtype)
        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than "
                              "sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        grad = np.empty_like(flat)
        params, grads = [flat], [grad]
        self._optimizer._n_threads = self._fnn_threads()
        restore = self.restore_best_weights and not early_stopping and not incremental
        p_drop = self._fnn_dropout()
        # dropout masks from their own stream, seeded from random_state only when used (so
        # dropout=0 keeps scikit-learn's random stream)
        drop_rng = (np.random.default_rng(self._random_state.randint(2 ** 31 - 1))
                    if p_drop else None)
        best = (np.inf, None)
        from tqdm.auto import tqdm
        bar = tqdm(total=self.max_iter, desc=type(self).__name__, unit="epoch",
                   disable=not self.progress or incremental)
        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                if self.shuffle:
                    sample_idx = _sk_shuffle(sample_idx, random_state=self._random_state)
                accumulated_loss = 0.0
                for batch_slice in gen_batches(n_samples, batch_size):
                    if self.shuffle:
                        batch_idx = sample_idx[batch_slice]
                        X_batch = X_train.take(batch_idx, axis=0)
                        y_batch = y_train.take(batch_idx, axis=0)
                    else:
                        batch_idx = batch_slice
                        X_batch = X_train[batch_slice]
                        y_batch = y_train[batch_slice].copy()
                    sw_batch = (None if sample_weight_train is None
                                else sample_weight_train[batch_idx])
                    masks = None
                    if p_drop:
                        masks = [(drop_rng.random((X_batch.shape[0], c.shape[1])) >= p_drop)
                                 * X.dtype.type(1.0 / (1.0 - p_drop))
                                 for c in self.coefs_[:-1]]
                        masks = [m.astype(X.dtype, copy=False) for m in masks]
                    batch_loss = self._fnn_backprop(X_batch, y_batch, sw_batch, grad, masks)
                    accumulated_loss += batch_loss * (batch_slice.stop - batch_slice.start)
                    self._optimizer.update_params(params, grads)
                self.n_iter_ += 1
                self.loss_ = accumulated_loss / X_train.shape[0]
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if restore and self.loss_ < best[0]:
                    best = (self.loss_, flat.copy())
                bar.update(1)
                bar.set_postfix(loss=f"{self.loss_:.4g}", refresh=False)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                if early_stopping:
                    self.validation_loss_curve_.append(
                        self._fnn_full_loss(X_val, Y_val, sample_weight_val))
                self._update_no_improvement_count(early_stopping, X_val, y_val,
                                                  sample_weight_val)
                self._optimizer.iteration_ends(self.t_)
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    if self._optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached "
                                  "and the optimization hasn't converged yet."
                                  % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            bar.close()
        if restore and best[1] is not None:
            flat[...] = best[1]     # the weights at the end of the best-loss epoch
        if early_stopping:
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    # ---- extras ---------------------------------------------------------------------
    def to_fastnn(self):
        """The trained network as a ``fastnn.Sequential`` of Linear layers (weights in
        fastnn's (out, in) layout) and activations; the output activation (softmax /
        logistic) is left to the loss, so the Sequential returns logits."""
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self)
        import fastnn
        from .nn import LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Tanh
        acts = {"logistic": Sigmoid, "tanh": Tanh, "relu": ReLU,
                "leaky_relu": lambda: LeakyReLU(_SLOPE)}
        for name, cls in (("gelu", "GELU"), ("silu", "SiLU")):
            if hasattr(fastnn, cls):
                acts[name] = getattr(fastnn, cls)
        names = self.activation
        if isinstance(names, str):
            names = [names] * (len(self.coefs_) - 1)
        layers = []
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            lin = Linear(W.shape[0], W.shape[1])
            lin.to(W.dtype)
            lin.weight.data = W.T
            lin.bias.data = b
            layers.append(lin)
            if i < len(self.coefs_) - 1 and names[i] != "identity":
                layers.append(acts[names[i]]())
        return Sequential(*layers)


def _store_params(est, params):
    """__init__ as scikit-learn wants it: every constructor argument stored unchanged."""
    for k, v in params.items():
        if k not in ("self", "__class__"):
            setattr(est, k, v)


_EXTRA_DOC = """
    Extra fastnn parameters: ``n_threads`` (None = fastnn's default), ``dtype`` (None keeps
    the input's float32/float64 as scikit-learn does; "float32"/"float64" casts),
    ``activation`` may be a list (one name per hidden layer; also "leaky_relu", and "gelu" /
    "silu" when fastnn has those kernels), ``restore_best_weights`` (sgd/adam without
    early_stopping: end with the weights of the epoch with the lowest training loss),
    ``progress`` (a tqdm bar over the epochs), ``dropout`` (inverted dropout after every
    hidden layer, sgd/adam); ``validation_loss_curve_`` (the validation
    loss per epoch with early_stopping) and ``to_fastnn()``."""


class MLPClassifier(_FastMLPMixin, _SkMLPClassifier):
    __doc__ = ("scikit-learn's MLPClassifier on fastnn's kernels (same parameters, "
               "defaults and attributes).\n" + _EXTRA_DOC +
               "\n    ``class_weight``: None, 'balanced' or {class: weight}, multiplied "
               "into sample_weight.\n")

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, class_weight=None, n_threads=None,
                 dtype=None, restore_best_weights=False, progress=False, dropout=0.0):
        _store_params(self, locals())
        self.loss = "log_loss"

    _parameter_constraints: dict = {
        **_SkMLPClassifier._parameter_constraints,
        "activation": "no_validation",       # one name or a list: _fnn_codes checks it
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "n_threads": "no_validation",
        "dtype": "no_validation",
        "restore_best_weights": ["boolean"],
        "progress": ["boolean"],
        "dropout": "no_validation",          # checked by _fnn_dropout
    }

    def _class_weighted(self, y, sample_weight):
        if self.class_weight is None:
            return sample_weight
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 and not (y_arr.ndim == 2 and y_arr.shape[1] == 1):
            raise ValueError("MLPClassifier: class_weight needs a single-output target, "
                             f"got y of shape {y_arr.shape}")
        cw = compute_sample_weight(self.class_weight, y_arr.ravel())
        return cw if sample_weight is None else cw * np.asarray(sample_weight, float)

    def fit(self, X, y, sample_weight=None):
        return super().fit(X, y, sample_weight=self._class_weighted(y, sample_weight))


class MLPRegressor(_FastMLPMixin, _SkMLPRegressor):
    __doc__ = ("scikit-learn's MLPRegressor on fastnn's kernels (same parameters, "
               "defaults and attributes).\n" + _EXTRA_DOC + "\n")

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, n_threads=None, dtype=None,
                 restore_best_weights=False, progress=False, dropout=0.0):
        _store_params(self, locals())

    _parameter_constraints: dict = {
        **_SkMLPRegressor._parameter_constraints,
        "activation": "no_validation",       # one name or a list: _fnn_codes checks it
        "n_threads": "no_validation",
        "dtype": "no_validation",
        "restore_best_weights": ["boolean"],
        "progress": ["boolean"],
        "dropout": "no_validation",          # checked by _fnn_dropout
    }
