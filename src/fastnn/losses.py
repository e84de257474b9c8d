"""Losses: ``loss = loss_fn(pred, target)`` returns a Python float, ``loss_fn.backward()``
the gradient w.r.t. ``pred`` (same shape and dtype).

Each forward is one fused kernel call that computes the value and the gradient together;
the gradient lives in a buffer the loss reuses while the shape repeats (the next forward
overwrites it).  Reductions sum per-row values in a fixed order, so the value is identical
for any thread count.

Regression / elementwise (pred and target of one shape and dtype): MSELoss, L1Loss,
HuberLoss(delta), SmoothL1Loss(beta), BCELoss (probabilities), BCEWithLogitsLoss(pos_weight)
(logits; binary or multilabel).  Classification (scores (batch, classes), integer labels
(batch,)): CrossEntropyLoss(weight, label_smoothing), NLLLoss(weight) (log-probabilities),
SVMLoss(margin).  All follow PyTorch's formulas and names.

Per-sample weights: ``loss(pred, target, sample_weight=w)``, w of shape (batch,) (one per
row of pred), finite and >= 0.  Row i's loss and gradient are multiplied by w_i; with
reduction="mean" the sum is divided by sum(w) (as scikit-learn) -- for an elementwise loss
by sum(w) times the number of elements per row, so all-ones weights give the unweighted
mean.  With class weights too (CrossEntropyLoss / NLLLoss ``weight=``), the mean divides by
sum_i w_i * weight[label_i], which is torch's normalization when w is all ones.
"""
from __future__ import annotations

import numpy as np

from . import _checks as C
from ._checks import DTYPES, rowmajor, specialized
from ._kernels import losses as _kl
from ._typing import Array, ArrayLike

__all__ = ["Loss", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss",
           "BCEWithLogitsLoss", "CrossEntropyLoss", "NLLLoss", "SVMLoss"]

_REDUCTIONS = ("mean", "sum")
_MSE = specialized(_kl._mse)
_XENT = specialized(_kl._xent)
_SVM = specialized(_kl._svm)
_PW = specialized(_kl._pointwise)
_XENT_W = specialized(_kl._xent_w)
_NLL = specialized(_kl._nll)
_SVM_W = specialized(_kl._svm_w)
_K = _kl.PointwiseLoss
_NOW = np.empty(0, np.float64)        # "no weights" for the kernels


class Loss:
    """Base class: ``forward(pred, target) -> float`` and ``backward() -> grad``.

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._grad = None        # the gradient of the last forward, or None
        self._gbuf = None        # reusable gradient buffer
        self._rows = None        # reusable per-row loss buffer (float64)

    def __call__(self, pred: ArrayLike, target: ArrayLike,
                 sample_weight: ArrayLike | None = None) -> float:
        """The loss of ``pred`` against ``target`` (``forward``).

        Parameters
        ----------
        pred : numpy.ndarray
            The model's output (float32 or float64).
        target : numpy.ndarray
            Integer labels (classification losses) or targets of pred's shape and dtype.
        sample_weight : numpy.ndarray, optional
            Per-row weights (batch,), finite and >= 0; with reduction="mean" the loss is
            divided by their sum.

        Returns
        -------
        float
            The loss; ``backward()`` then gives its gradient w.r.t. pred.
        """
        if sample_weight is None:
            return self.forward(pred, target)
        return self.forward(pred, target, sample_weight=sample_weight)

    def backward(self) -> Array:
        """The gradient of the last forward's loss w.r.t. its pred (a reused buffer)."""
        if self._grad is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._grad

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def _who(self):
        return C.Named(self)

    def _pred(self, pred):
        who = self._who()
        if not isinstance(pred, np.ndarray):
            raise TypeError(f"{who}: pred must be a numpy.ndarray, got {type(pred).__name__}")
        if pred.dtype not in DTYPES:
            raise TypeError(f"{who}: pred must have dtype float32 or float64, got "
                            f"{pred.dtype}")
        return pred

    def _sample_weight(self, sample_weight, n):
        return _NOW if sample_weight is None else \
            C.sample_weight(self._who(), sample_weight, n)

    def _mean_scale(self, total, what="sample_weight"):
        """1 / total for reduction="mean" (total: the sum the mean divides by), else 1."""
        if self.reduction != "mean":
            return 1.0
        if not total > 0:
            raise ValueError(f"{self._who()}: {what} sums to {total} over this batch; "
                             "reduction='mean' divides by that sum")
        return 1.0 / total

    def _buffers(self, shape2, dtype):
        g = self._gbuf
        if g is None or g.shape != shape2 or g.dtype != dtype:
            g = self._gbuf = np.empty(shape2, dtype)
        r = self._rows
        if r is None or r.shape[0] != shape2[0]:
            r = self._rows = np.empty(shape2[0], np.float64)
        return g, r


class _Elementwise(Loss):
    """pred and target of one shape (any, at least 1-D) and dtype; one fused kernel
    (_kernels.losses.pointwise_loss) per forward."""
    _KIND = None

    def _pair(self, pred, target):
        """(pred, target) as (rows, elements per row) arrays the kernels read, and that
        shape."""
        who = self._who()
        pred = self._pred(pred)
        if not isinstance(target, np.ndarray):
            raise TypeError(f"{who}: target must be a numpy.ndarray, got "
                            f"{type(target).__name__}")
        if target.dtype != pred.dtype:
            raise TypeError(f"{who}: target has dtype {target.dtype} but pred has "
                            f"{pred.dtype}; convert it with .astype(np.{pred.dtype})")
        if target.shape != pred.shape:
            raise ValueError(f"{who}: target has shape {target.shape} but pred has "
                             f"{pred.shape}; they must match")
        if pred.ndim == 0 or pred.size == 0:
            raise ValueError(f"{who}: pred must be a non-empty array of at least 1 "
                             f"dimension, got shape {pred.shape}")
        shape2 = (pred.shape[0], pred.size // pred.shape[0]) if pred.ndim != 1 \
            else (pred.shape[0], 1)
        return rowmajor(pred.reshape(shape2)), rowmajor(target.reshape(shape2)), shape2

    def _param(self):
        return 0.0

    def _pos_weight(self, pred):
        return _NOW

    def _check_values(self, p2):
        pass

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: ArrayLike | None = None) -> float:
        p2, t2, shape2 = self._pair(pred, target)
        self._check_values(p2)
        sw = self._sample_weight(sample_weight, shape2[0])
        if sw.size:
            scale = self._mean_scale(shape2[1] * float(sw.sum()))
        else:
            scale = 1.0 / p2.size if self.reduction == "mean" else 1.0
        pw = self._pos_weight(pred)
        g, rows = self._buffers(shape2, p2.dtype)
        loss = _PW[p2.dtype](self._KIND, p2, t2, sw, pw, g, rows, self._param(), scale)
        self._grad = g.reshape(pred.shape) if pred.ndim != 2 else g
        return loss


class MSELoss(_Elementwise):
    """Squared error: sum((pred - target)**2), divided by pred.size for reduction="mean"
    (PyTorch's default) -- the CS231n two-layer network uses reduction="sum".  pred and
    target have the same shape (any, at least 1-D) and dtype.

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    """
    _KIND = _K.PW_MSE

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: ArrayLike | None = None) -> float:
        if sample_weight is not None:
            return super().forward(pred, target, sample_weight)
        p2, t2, shape2 = self._pair(pred, target)
        g, rows = self._buffers(shape2, pred.dtype)
        scale = 1.0 / pred.size if self.reduction == "mean" else 1.0
        loss = _MSE[p2.dtype](p2, t2, g, rows, scale)
        self._grad = g.reshape(pred.shape) if pred.ndim != 2 else g
        return loss


class L1Loss(_Elementwise):
    """Absolute error: sum |pred - target| (mean over elements for reduction="mean"); its
    subgradient is sign(pred - target), 0 where they are equal (as torch).

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    """
    _KIND = _K.PW_L1


class HuberLoss(_Elementwise):
    """Huber loss (torch.nn.HuberLoss): with d = pred - target, 0.5 d**2 where |d| < delta,
    else delta (|d| - 0.5 delta); delta > 0.

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    delta : float, optional
        The threshold between the quadratic and the linear part (> 0).
    """
    _KIND = _K.PW_HUBER

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        d = C.real(type(self).__name__, "delta", delta)
        if not d > 0:
            raise ValueError(f"{type(self).__name__}: delta must be > 0, got {delta!r}")
        self.delta = d

    def _param(self):
        return self.delta

    def extra_repr(self) -> str:
        return f"delta={self.delta}, reduction={self.reduction!r}"


class SmoothL1Loss(_Elementwise):
    """Smooth L1 (torch.nn.SmoothL1Loss): with d = pred - target, 0.5 d**2 / beta where
    |d| < beta, else |d| - 0.5 beta; beta >= 0 (beta = 0 is L1Loss).  HuberLoss(delta) ==
    delta * SmoothL1Loss(beta=delta).

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    beta : float, optional
        The threshold between the quadratic and the linear part (>= 0).
    """
    _KIND = _K.PW_SMOOTH_L1

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = C.real(type(self).__name__, "beta", beta)

    def _param(self):
        return self.beta

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: ArrayLike | None = None) -> float:
        # beta == 0 is the L1 loss (torch dispatches to it as well)
        self._KIND = _K.PW_L1 if self.beta == 0 else _K.PW_SMOOTH_L1
        return super().forward(pred, target, sample_weight)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"


class BCELoss(_Elementwise):
    """Binary cross-entropy of probabilities: -[t log p + (1 - t) log(1 - p)], each log
    clamped at -100 as torch (so p = 0 or 1 gives a finite loss); pred must lie in [0, 1].
    The gradient is torch's, (p - t) / max(p (1 - p), 1e-12).  Prefer BCEWithLogitsLoss on
    logits (numerically stable).

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    """
    _KIND = _K.PW_BCE

    def _check_values(self, p2):
        lo, hi = p2.min(), p2.max()
        if not (lo >= 0 and hi <= 1):       # NaN fails too
            bad = np.flatnonzero(~((p2 >= 0) & (p2 <= 1)).reshape(-1))[0]
            raise ValueError(f"{self._who()}: all elements of pred must be probabilities in "
                             f"[0, 1]; element {int(bad)} (flat index) is "
                             f"{p2.reshape(-1)[bad]!r}")


class BCEWithLogitsLoss(_Elementwise):
    """Sigmoid + binary cross-entropy of logits x against targets t in one numerically
    stable formula (torch.nn.BCEWithLogitsLoss):
    l = (1 - t) x + (1 + (pw - 1) t) (log(1 + exp(-|x|)) + max(-x, 0)), gradient
    sigmoid(x) (1 + (pw - 1) t) - pw t.  Binary (pred (batch,)) or multilabel (pred
    (batch, labels)); ``pos_weight`` (None: 1) weighs the positive term per label and must
    broadcast to pred's shape without its batch axis (e.g. shape (labels,)).

    Parameters
    ----------
    pos_weight : array_like, optional
        The weight of the positive term, per label.
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    """
    _KIND = _K.PW_BCE_LOGITS

    def __init__(self, *, pos_weight: ArrayLike | None = None,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        if pos_weight is not None and np.ndim(pos_weight) == 0:
            pos_weight = [pos_weight]           # a number: one weight for every label
        self._pw = None if pos_weight is None else \
            C.weights("BCEWithLogitsLoss", "pos_weight", pos_weight)
        self._pw_cache = None

    @property
    def pos_weight(self) -> Array | None:
        """The positive weights (a read-only float64 array), or None."""
        if self._pw is None:
            return None
        v = self._pw.view()
        v.flags.writeable = False
        return v

    def _pos_weight(self, pred):
        return self._pos_weight_row(pred.shape[1:] if pred.ndim > 1 else (1,))

    def _pos_weight_row(self, tail):
        """pos_weight broadcast to one row of pred (`tail`: pred's shape without the batch
        axis), flattened; the empty array without pos_weight."""
        pw = self._pw
        if pw is None:
            return _NOW
        tail = tuple(tail)
        c = self._pw_cache
        if c is not None and c[0] == tail:
            return c[1]
        try:
            b = np.broadcast_to(pw, tail)
        except ValueError:
            raise ValueError(f"{self._who()}: pos_weight of shape {pw.shape} does not "
                             f"broadcast to pred's shape without its batch axis, "
                             f"{tail}") from None
        b = np.ascontiguousarray(b).reshape(-1)
        self._pw_cache = (tail, b)
        return b

    def extra_repr(self) -> str:
        if self._pw is None:
            return super().extra_repr()
        return f"pos_weight={self._pw.tolist()}, reduction={self.reduction!r}"


class _Classification(Loss):
    def _inputs(self, scores, labels):
        who = self._who()
        scores = self._pred(scores)
        if scores.ndim != 2:
            raise ValueError(f"{who}: scores must be 2-D (batch, classes), got {scores.ndim}-D "
                             f"with shape {scores.shape}")
        n, c = scores.shape
        if n == 0 or c == 0:
            raise ValueError(f"{who}: scores must have at least one row and one class, got "
                             f"shape {scores.shape}")
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"{who}: labels must be a numpy.ndarray of integers, got "
                            f"{type(labels).__name__}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{who}: labels must have an integer dtype (class indices), got "
                            f"{labels.dtype}")
        if labels.shape != (n,):
            raise ValueError(f"{who}: labels must have shape ({n},) (one class index per row "
                             f"of scores {scores.shape}), got {labels.shape}")
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= c:
            bad = int(np.flatnonzero((labels < 0) | (labels >= c))[0])
            raise ValueError(f"{who}: labels must be in [0, {c}) for {c} classes; "
                             f"labels[{bad}] = {int(labels[bad])}")
        if labels.dtype != np.int64 or not labels.flags.c_contiguous:
            labels = labels.astype(np.int64)
        return rowmajor(scores), labels


class _Weighted(_Classification):
    """A classification loss with optional class weights ``weight`` (classes,)."""

    def _init_weight(self, weight):
        if weight is None:
            self._weight = None
            return
        w = C.weights(type(self).__name__, "weight", weight)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"{type(self).__name__}: weight must be a non-empty 1-D array "
                             f"(one weight per class), got shape {w.shape}")
        self._weight = w

    @property
    def weight(self) -> Array | None:
        """The class weights (a read-only float64 array), or None."""
        if self._weight is None:
            return None
        v = self._weight.view()
        v.flags.writeable = False
        return v

    def _weights(self, y, c, sample_weight):
        """(class weights or "none", sample weights or "none", scale) for a batch."""
        cw = self._weight
        if cw is None:
            cw = _NOW
        elif cw.shape[0] != c:
            raise ValueError(f"{self._who()}: weight has {cw.shape[0]} entries but scores "
                             f"have {c} classes")
        sw = self._sample_weight(sample_weight, y.shape[0])
        if cw.size:
            picked = cw[y]
            if sw.size:
                picked = picked * sw
            scale = self._mean_scale(float(picked.sum()),
                                     "the weight of the labels (times sample_weight)"
                                     if sw.size else "the weight of the labels")
        elif sw.size:
            scale = self._mean_scale(float(sw.sum()))
        else:
            scale = 1.0 / y.shape[0] if self.reduction == "mean" else 1.0
        return cw, sw, scale

    def _weight_repr(self):
        return "" if self._weight is None else f"weight={self._weight.tolist()}, "


class CrossEntropyLoss(_Weighted):
    """Softmax cross-entropy of logits (batch, classes) against integer class labels
    (batch,): -log softmax(scores)[label], averaged over the batch (reduction="mean", as
    PyTorch) or summed.  The log-softmax subtracts each row's maximum, so large logits do
    not overflow.

    As torch.nn.CrossEntropyLoss: ``weight`` (classes,) weighs each row by the weight of its
    label, and reduction="mean" then divides by the sum of those weights;
    ``label_smoothing`` eps in [0, 1] mixes the one-hot target with the uniform
    distribution, (1 - eps) onehot + eps / classes (with weights, the smoothing term of row
    i is (eps / classes) sum_c weight[c] (-log p_ic), normalized as above).

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    weight : array_like, optional
        One weight per class (classes,).
    label_smoothing : float, optional
        The smoothing eps, in [0, 1].
    """

    def __init__(self, reduction: str = "mean", *, weight: ArrayLike | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self._init_weight(weight)
        self._eps = C.fraction("CrossEntropyLoss", "label_smoothing", label_smoothing)

    @property
    def label_smoothing(self) -> float:
        return self._eps

    def extra_repr(self) -> str:
        s = self._weight_repr()
        if self._eps:
            s += f"label_smoothing={self._eps}, "
        return s + f"reduction={self.reduction!r}"

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: ArrayLike | None = None) -> float:
        s, y = self._inputs(pred, target)
        g, rows = self._buffers(s.shape, s.dtype)
        if self._weight is None and not self._eps and sample_weight is None:
            scale = 1.0 / s.shape[0] if self.reduction == "mean" else 1.0
            loss = _XENT[s.dtype](s, y, g, rows, scale)
        else:
            cw, sw, scale = self._weights(y, s.shape[1], sample_weight)
            loss = _XENT_W[s.dtype](s, y, cw, sw, self._eps, g, rows, scale)
        self._grad = g
        return loss


class NLLLoss(_Weighted):
    """Negative log-likelihood of log-probabilities (batch, classes) -- e.g. a log-softmax
    output -- against integer labels (batch,): -weight[label] * pred[i, label], reduction
    "mean" dividing by the sum of the labels' weights (the batch size without ``weight``),
    as torch.nn.NLLLoss.

    Parameters
    ----------
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    weight : array_like, optional
        One weight per class (classes,).
    """

    def __init__(self, reduction: str = "mean", *,
                 weight: ArrayLike | None = None) -> None:
        super().__init__(reduction)
        self._init_weight(weight)

    def extra_repr(self) -> str:
        return self._weight_repr() + f"reduction={self.reduction!r}"

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: ArrayLike | None = None) -> float:
        s, y = self._inputs(pred, target)
        cw, sw, scale = self._weights(y, s.shape[1], sample_weight)
        g, rows = self._buffers(s.shape, s.dtype)
        loss = _NLL[s.dtype](s, y, cw, sw, g, rows, scale)
        self._grad = g
        return loss


class SVMLoss(_Classification):
    """Multiclass hinge (CS231n's SVM loss): for each row, sum over j != label of
    max(0, s_j - s_label + margin), averaged over the batch (or summed).  Its subgradient
    counts a term as active only when it is > 0.

    Parameters
    ----------
    margin : float, optional
        The hinge's margin.
    reduction : {"mean", "sum"}, optional
        Average (default) or sum the per-element (per-row) losses.
    """

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        try:
            m = float(margin)
        except (TypeError, ValueError):
            raise TypeError(f"SVMLoss: margin must be a number, got {margin!r}") from None
        if not np.isfinite(m):
            raise ValueError(f"SVMLoss: margin must be finite, got {m}")
        self.margin = m

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: ArrayLike | None = None) -> float:
        s, y = self._inputs(pred, target)
        g, rows = self._buffers(s.shape, s.dtype)
        if sample_weight is None:
            scale = 1.0 / s.shape[0] if self.reduction == "mean" else 1.0
            loss = _SVM[s.dtype](s, y, g, rows, self.margin, scale)
        else:
            sw = self._sample_weight(sample_weight, s.shape[0])
            scale = self._mean_scale(float(sw.sum()))
            loss = _SVM_W[s.dtype](s, y, sw, g, rows, self.margin, scale)
        self._grad = g
        return loss
