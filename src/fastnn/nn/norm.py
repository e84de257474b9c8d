"""The normalization layers: ``LayerNorm`` (over the last axis) and ``BatchNorm1d`` (over
the batch, for (N, C) input), with PyTorch's semantics and names.

Both normalize with the *biased* variance; BatchNorm1d's running variance is updated with
the *unbiased* one (m/(m-1)), ``running = momentum * batch + (1 - momentum) * running``
(``momentum=None``: the cumulative average, factor 1/num_batches_tracked), and in eval mode
it normalizes with the running statistics (with ``track_running_stats=False``, always with
the batch's).  Each forward and backward is one kernel call (fastnn/_kernels/norm.pyx).
Like Linear, each keeps its per-use state in the ``Ctx`` it is handed (``_fwd(ctx, ...)``,
``_bwd(ctx, ...)``), so the planner runs them as steps (fastnn.nn.plan.NormStep) and the
compiled step as LAYERNORM / BATCHNORM ops.

A BatchNorm1d in eval mode (frozen statistics) can be backpropagated, as in PyTorch: its
forward then keeps the normalized input (a fresh array) for backward, which computes the
affine parameters' gradients and grad_in = grad_out * weight / sqrt(running_var + eps).
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import _checks as C
from .._kernels import norm as _norm
from .module import Module, buf, not_run
from .parameter import Parameter
from .._typing import Array, DTypeLike

__all__ = ["LayerNorm", "BatchNorm1d"]

_F32 = C.DTYPES[0]
_LN_FWD = C.specialized(_norm._layernorm_forward)
_LN_BWD = C.specialized(_norm._layernorm_backward)
_BN_FWD = C.specialized(_norm._batchnorm_forward)
_BN_BWD = C.specialized(_norm._batchnorm_backward)


def _features(who, name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 or v > C.INT_MAX:
        raise ValueError(f"{who}: {name} must be an int in [1, 2**31-1], got {v!r}")
    return int(v)


class _Norm(Module):
    """What LayerNorm and BatchNorm1d share: the affine parameters and their gradients'
    lazy-zero claims, the input checks and the dtype in repr."""

    def _affine(self, n, weight, bias, dt):
        self.weight = Parameter(np.ones(n, dt)) if weight else None
        self.bias = Parameter(np.zeros(n, dt)) if bias else None

    @property
    def _dt(self):
        return self.__dict__["_dtype"]

    def _set_dtype(self, dt):
        object.__setattr__(self, "_dtype", np.dtype(dt))

    def _convert_state(self, dt):
        super()._convert_state(dt)
        self._set_dtype(dt)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dt

    def _wb(self):
        dt = self._dt
        return (self.weight._data if self.weight is not None else C.EMPTY1[dt],
                self.bias._data if self.bias is not None else C.EMPTY1[dt])

    def _grads(self):
        """(gw, gb, accw, accb): the gradient arrays (empty: none) and whether backward
        adds into them (the lazy-zero protocol, fastnn.nn.parameter)."""
        e = C.EMPTY1[self._dt]
        w, b = self.weight, self.bias
        gw, accw = (w._grad, w._claim_grad()) if w is not None else (e, False)
        gb, accb = (b._grad, b._claim_grad()) if b is not None else (e, False)
        return gw, gb, accw, accb

    def _input(self, x, trusted):
        if not trusted or x.dtype != self._dt:
            x = C.module_array(self._who, "input", x, self._dt)
        return x

    def _grad_out(self, ctx, g, who, shape):
        g = C.module_array(who, "grad_out", g, self._dt)
        C.same_shape(who, "grad_out", g, shape)
        return np.ascontiguousarray(C.as_rows(g))

    def _who(self):
        return repr(self)

    def _dtype_repr(self):
        return f", dtype={self._dt}" if self._dt != _F32 else ""

    def forward(self, x: Array) -> Array:
        return self._fwd(self._ctx, x, False)

    def backward(self, grad_out: Array, input_grad: bool = True) -> Array | None:
        return self._bwd(self._ctx, grad_out, input_grad, self._who)


# --------------------------------------------------------------------------- LayerNorm
class LayerNorm(_Norm):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis of x (..., n),
    mean and the biased variance per row, as torch.nn.LayerNorm.

    Parameters
    ----------
    normalized_shape : int or tuple of one int
        n, the size of the last axis (only the last axis is normalized here).
    eps : float, optional
        Added to the variance (>= 0).
    elementwise_affine : bool, optional
        Learn ``weight`` (ones) and, with ``bias``, ``bias`` (zeros), each of shape (n,).
    bias : bool, optional
        Learn the bias (with ``elementwise_affine``).
    dtype : {numpy.float32, numpy.float64}, optional
        The parameters' and the computation's dtype.
    """

    weight: Parameter | None
    bias: Parameter | None
    normalized_shape: tuple[int]
    eps: float
    elementwise_affine: bool

    def __init__(self, normalized_shape: int | tuple[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, *,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        who = "LayerNorm"
        shp = normalized_shape
        if isinstance(shp, (tuple, list)):
            if len(shp) != 1:
                raise ValueError(f"{who}: normalized_shape must be an int or a 1-tuple (the "
                                 f"last axis; normalizing over several axes is not "
                                 f"supported), got {normalized_shape!r}")
            shp = shp[0]
        n = _features(who, "normalized_shape", shp)
        dt = C.float_dtype(who, dtype)
        self._set_dtype(dt)
        object.__setattr__(self, "normalized_shape", (n,))
        object.__setattr__(self, "eps", C.real(who, "eps", eps))
        object.__setattr__(self, "elementwise_affine", C.flag(who, "elementwise_affine",
                                                              elementwise_affine))
        self._affine(n, self.elementwise_affine, self.elementwise_affine and
                     C.flag(who, "bias", bias), dt)

    @property
    def features(self) -> int:
        return self.normalized_shape[0]

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
                + self._dtype_repr())

    def _arch(self):
        return {"normalized_shape": self.features, "eps": self.eps,
                "elementwise_affine": self.elementwise_affine,
                "bias": self.bias is not None, "dtype": str(self._dt)}

    def _fwd(self, ctx, x, trusted):
        x = self._input(x, trusted)
        n = self.features
        if x.ndim == 0 or x.shape[-1] != n:
            raise ValueError(f"{self._who()}: input must have {n} features in its last axis "
                             f"(shape (..., {n})), got shape {x.shape}")
        x2 = C.as_rows(x)
        dt = self._dt
        w, b = self._wb()
        if self.training:
            out = buf(ctx, "out", x2.shape, dt, x2)
            xhat = buf(ctx, "xhat", x2.shape, dt, x2)
            rstd = buf(ctx, "rstd", (x2.shape[0],), dt)
        else:
            out = np.empty(x2.shape, dt)
            xhat, rstd = C.EMPTY2[dt], C.EMPTY1[dt]
        _LN_FWD[dt](x2, w, b, self.eps, out, xhat, rstd)
        if self.training:
            ctx.x, ctx.y, ctx.shape = xhat, rstd, x.shape
        return out.reshape(x.shape) if x.ndim != 2 else out

    def _bwd(self, ctx, grad_out, input_grad, who):
        xhat, rstd = ctx.x, ctx.y
        if xhat is None:
            raise not_run(who)
        g = self._grad_out(ctx, grad_out, who, ctx.shape)
        dt = self._dt
        gw, gb, accw, accb = self._grads()
        work = buf(ctx, "work", xhat.shape, dt, g) if self.weight is not None else C.EMPTY2[dt]
        gx = buf(ctx, "gx", xhat.shape, dt, g) if input_grad else C.EMPTY2[dt]
        _LN_BWD[dt](g, xhat, rstd, self._wb()[0], gx, gw, gb, accw, accb, work)
        if not input_grad:
            return None
        return gx.reshape(ctx.shape) if len(ctx.shape) != 2 else gx


# ------------------------------------------------------------------------- BatchNorm1d
class BatchNorm1d(_Norm):
    """Batch normalization of (N, C) input over the batch, as torch.nn.BatchNorm1d:
    y = (x - mean) / sqrt(var + eps) * weight + bias per feature.

    Training mode: the batch's mean and biased variance normalize (N must be > 1); with
    ``track_running_stats`` the buffers ``running_mean`` (zeros), ``running_var`` (ones)
    and ``num_batches_tracked`` (an int64 0-d array) are updated: running = momentum *
    batch + (1 - momentum) * running with the unbiased batch variance (``momentum=None``:
    the cumulative average).  Eval mode: the running statistics normalize (the batch's when
    ``track_running_stats=False``).  (N, C, L) input is not supported.

    Parameters
    ----------
    num_features : int
        C, the number of features.
    eps : float, optional
        Added to the variance (>= 0).
    momentum : float or None, optional
        The running statistics' update factor in [0, 1]; None: the cumulative average.
        May be changed between steps.
    affine : bool, optional
        Learn ``weight`` (ones) and ``bias`` (zeros), each of shape (C,).
    track_running_stats : bool, optional
        Keep the running statistics (and normalize with them in eval mode).
    dtype : {numpy.float32, numpy.float64}, optional
        The parameters', buffers' and the computation's dtype.
    """

    weight: Parameter | None
    bias: Parameter | None
    num_features: int
    eps: float
    affine: bool
    track_running_stats: bool
    running_mean: Array | None
    running_var: Array | None
    num_batches_tracked: Array | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        who = "BatchNorm1d"
        n = _features(who, "num_features", num_features)
        dt = C.float_dtype(who, dtype)
        self._set_dtype(dt)
        object.__setattr__(self, "num_features", n)
        object.__setattr__(self, "eps", C.real(who, "eps", eps))
        self.momentum = momentum
        object.__setattr__(self, "affine", C.flag(who, "affine", affine))
        object.__setattr__(self, "track_running_stats",
                           C.flag(who, "track_running_stats", track_running_stats))
        self._affine(n, self.affine, self.affine, dt)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(n, dt))
            self.register_buffer("running_var", np.ones(n, dt))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            for k in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(k, None)

    @property
    def momentum(self) -> float | None:
        return self.__dict__["_momentum"]

    @momentum.setter
    def momentum(self, value: float | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                    not 0 <= float(value) <= 1:
                raise ValueError(f"BatchNorm1d: momentum must be a number in [0, 1] or None, "
                                 f"got {value!r}")
            value = float(value)
        object.__setattr__(self, "_momentum", value)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}"
                + self._dtype_repr())

    def _arch(self):
        return {"num_features": self.num_features, "eps": self.eps,
                "momentum": self.momentum, "affine": self.affine,
                "track_running_stats": self.track_running_stats, "dtype": str(self._dt)}

    def _factor(self):
        """This training step's running-average factor; counts the batch first (as
        torch: num_batches_tracked += 1, then momentum or 1/num_batches_tracked)."""
        nbt = self._buffers["num_batches_tracked"]
        nbt += 1
        return 1.0 / float(nbt) if self.momentum is None else self.momentum

    def _fwd(self, ctx, x, trusted):
        x = self._input(x, trusted)
        c = self.num_features
        if x.ndim != 2:
            raise ValueError(f"{self._who()}: input must be 2-D (batch, {c}); (N, C, L) input "
                             f"is not supported, got {x.ndim}-D with shape {x.shape}")
        if x.shape[1] != c:
            raise ValueError(f"{self._who()}: input has {x.shape[1]} features, expected {c} "
                             f"(input shape {x.shape}, expected (batch, {c}))")
        x = C.rowmajor(x)
        dt = self._dt
        rm, rv = self.running_mean, self.running_var
        batch = self.training or rm is None
        if batch and x.shape[0] <= 1:
            raise ValueError(f"{self._who()}: expected more than 1 value per channel when "
                             f"training, got input of shape {x.shape}")
        update = self.training and rm is not None
        factor = self._factor() if update else 0.0
        e = C.EMPTY1[dt]
        w, b = self._wb()
        if self.training:
            out = buf(ctx, "out", x.shape, dt, x)
            xhat = buf(ctx, "xhat", x.shape, dt, x)
            mean = buf(ctx, "mean", (c,), dt)
            invstd = buf(ctx, "invstd", (c,), dt)
        else:
            out = np.empty(x.shape, dt)
            xhat = np.empty(x.shape, dt)
            mean, invstd = np.empty(c, dt), np.empty(c, dt)
        _BN_FWD[dt](x, w, b, self.eps, out, xhat, mean, invstd,
                    rm if update or not batch else e, rv if update or not batch else e,
                    batch, factor)
        ctx.x, ctx.y, ctx.shape = xhat, invstd, (x.shape, batch)
        return out

    def _bwd(self, ctx, grad_out, input_grad, who):
        xhat, invstd = ctx.x, ctx.y
        if xhat is None:
            raise not_run(who)
        shape, batch = ctx.shape
        g = self._grad_out(ctx, grad_out, who, shape)
        dt = self._dt
        gw, gb, accw, accb = self._grads()
        if not input_grad and gw.size == 0 and gb.size == 0:
            return None
        sums = buf(ctx, "sums", (3 * self.num_features,), dt)
        work = buf(ctx, "work", shape, dt, g) if batch or self.weight is not None \
            else C.EMPTY2[dt]
        gx = buf(ctx, "gx", shape, dt, g) if input_grad else C.EMPTY2[dt]
        _BN_BWD[dt](g, xhat, invstd, self._wb()[0], batch, gx, gw, gb, accw, accb, sums, work)
        return gx if input_grad else None
