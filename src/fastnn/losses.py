"""Losses: ``loss = loss_fn(pred, target)`` returns a Python float, ``loss_fn.backward()``
the gradient w.r.t. ``pred`` (same shape and dtype).

Each forward is one fused kernel call that computes the value and the gradient together;
the gradient lives in a buffer the loss reuses while the shape repeats (the next forward
overwrites it).  Reductions sum per-row values in a fixed order, so the value is identical
for any thread count.
"""
import numpy as np

from . import _checks as C
from ._checks import DTYPES, rowmajor, specialized
from ._kernels import losses as _kl

__all__ = ["Loss", "MSELoss", "CrossEntropyLoss", "SVMLoss"]

_REDUCTIONS = ("mean", "sum")
_MSE = specialized(_kl._mse)
_XENT = specialized(_kl._xent)
_SVM = specialized(_kl._svm)


class Loss:
    """Base class: ``forward(pred, target) -> float`` and ``backward() -> grad``."""

    def __init__(self, reduction="mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._grad = None        # the gradient of the last forward, or None
        self._gbuf = None        # reusable gradient buffer
        self._rows = None        # reusable per-row loss buffer (float64)

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def backward(self):
        """The gradient of the last forward's loss w.r.t. its pred (a reused buffer)."""
        if self._grad is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._grad

    def extra_repr(self):
        return f"reduction={self.reduction!r}"

    def __repr__(self):
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

    def _buffers(self, shape2, dtype):
        g = self._gbuf
        if g is None or g.shape != shape2 or g.dtype != dtype:
            g = self._gbuf = np.empty(shape2, dtype)
        r = self._rows
        if r is None or r.shape[0] != shape2[0]:
            r = self._rows = np.empty(shape2[0], np.float64)
        return g, r


class MSELoss(Loss):
    """Squared error: sum((pred - target)**2), divided by pred.size for reduction="mean"
    (PyTorch's default) -- the CS231n two-layer network uses reduction="sum".  pred and
    target have the same shape (any, at least 1-D) and dtype."""

    def forward(self, pred, target):
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
        p2 = rowmajor(pred.reshape(shape2))
        t2 = rowmajor(target.reshape(shape2))
        g, rows = self._buffers(shape2, pred.dtype)
        scale = 1.0 / pred.size if self.reduction == "mean" else 1.0
        loss = _MSE[p2.dtype](p2, t2, g, rows, scale)
        self._grad = g.reshape(pred.shape) if pred.ndim != 2 else g
        return loss


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


class CrossEntropyLoss(_Classification):
    """Softmax cross-entropy of logits (batch, classes) against integer class labels
    (batch,): -log softmax(scores)[label], averaged over the batch (reduction="mean", as
    PyTorch) or summed.  The log-softmax subtracts each row's maximum, so large logits do
    not overflow."""

    def forward(self, pred, target):
        s, y = self._inputs(pred, target)
        g, rows = self._buffers(s.shape, s.dtype)
        scale = 1.0 / s.shape[0] if self.reduction == "mean" else 1.0
        loss = _XENT[s.dtype](s, y, g, rows, scale)
        self._grad = g
        return loss


class SVMLoss(_Classification):
    """Multiclass hinge (CS231n's SVM loss): for each row, sum over j != label of
    max(0, s_j - s_label + margin), averaged over the batch (or summed).  Its subgradient
    counts a term as active only when it is > 0."""

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction)
        try:
            m = float(margin)
        except (TypeError, ValueError):
            raise TypeError(f"SVMLoss: margin must be a number, got {margin!r}") from None
        if not np.isfinite(m):
            raise ValueError(f"SVMLoss: margin must be finite, got {m}")
        self.margin = m

    def extra_repr(self):
        return f"margin={self.margin}, reduction={self.reduction!r}"

    def forward(self, pred, target):
        s, y = self._inputs(pred, target)
        g, rows = self._buffers(s.shape, s.dtype)
        scale = 1.0 / s.shape[0] if self.reduction == "mean" else 1.0
        loss = _SVM[s.dtype](s, y, g, rows, self.margin, scale)
        self._grad = g
        return loss
