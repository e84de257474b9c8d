"""The layers: ``Linear`` and the elementwise activations (``Sigmoid``, ``ReLU``, ``Tanh``,
``LeakyReLU``, ``Identity``).

Each keeps its per-use state in a ``Ctx`` it is handed (``_forward_act(ctx, ...)``,
``_fwd(ctx, ...)``), so a container can use one layer at several places; ``forward`` /
``backward`` use the module's own.  A Linear runs fused with the activation that follows it
when a container's plan says so (fastnn.nn.plan): one kernel call each way.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _checks as C
from .. import init as _init
from ..ops import ACTIVATIONS
from .._kernels import dense as _dense
from .module import Module, buf, not_run
from .parameter import Parameter
from .._typing import Array, ArrayLike, DTypeLike

__all__ = ["Linear", "Sigmoid", "ReLU", "Tanh", "LeakyReLU", "Identity"]

_F32 = C.DTYPES[0]
_LIN_FWD = C.specialized(_dense._linear_forward)
_LIN_BWD = C.specialized(_dense._linear_backward)
_ACT_FWD = C.specialized(_dense._activation_forward)
_ACT_BWD = C.specialized(_dense._activation_backward)


# ------------------------------------------------------------------------------ Linear
class Linear(Module):
    """y = x @ weight.T + bias, for x of shape (batch, in_features).

    weight: (out_features, in_features); bias: (out_features,).  Both are initialised
    from U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch, drawn from ``rng`` (a
    numpy Generator, an int seed, or None for fresh entropy) in float64 and rounded to
    ``dtype``.

    ``init`` chooses another weight initialization: a name of ``fastnn.init`` without the
    trailing underscore ("xavier_uniform", "xavier_normal", "kaiming_uniform",
    "kaiming_normal", "uniform", "normal", "zeros", "ones"; each with its defaults) or a
    callable ``f(weight, rng=rng)`` that fills the weight Parameter in place, e.g.
    ``functools.partial(fastnn.init.kaiming_normal_, nonlinearity="relu")``.  ``bias_init``
    does the same for the bias (None: the default uniform above).  The weight is drawn
    first, then the bias, from the same ``rng``.

    Parameters
    ----------
    in_features, out_features : int
        The input and output widths (>= 1).
    bias : bool, optional
        Learn an additive bias.
    dtype : {numpy.float32, numpy.float64}, optional
        The parameters' dtype.
    rng : numpy.random.Generator, int or None, optional
        The generator of the initial values.
    init : str or callable, optional
        The weight initialization (see above).
    bias_init : str or callable, optional
        The bias initialization (see above).
    """

    weight: Parameter
    bias: Parameter | None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32,
                 rng: int | np.random.Generator | None = None,
                 init: str | Callable[..., Any] | None = None,
                 bias_init: str | Callable[..., Any] | None = None) -> None:
        super().__init__()
        for nm, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 \
                    or v > C.INT_MAX:
                raise ValueError(f"Linear: {nm} must be an int in [1, 2**31-1], got {v!r}")
        dt = C.float_dtype("Linear", dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        init = _init.resolve("Linear", "init", init)
        bias_init = _init.resolve("Linear", "bias_init", bias_init)
        rng = np.random.default_rng(rng)
        bound = 1.0 / np.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        if init is None:
            self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dt))
        else:
            self.weight = Parameter(np.zeros(shape, dt))
            init(self.weight, rng=rng)
        if bias and bias_init is None:
            self.bias = Parameter(rng.uniform(-bound, bound, self.out_features).astype(dt))
        elif bias:
            self.bias = Parameter(np.zeros(self.out_features, dt))
            bias_init(self.bias, rng=rng)
        else:
            self.bias = None

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"bias={self.bias is not None}")
        if self.weight.dtype != _F32:
            s += f", dtype={self.weight.dtype}"
        return s

    def _arch(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": str(self.weight.dtype)}

    def _who(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"

    def _check_input(self, x, trusted=False):
        # trusted: x is an array fastnn's own code produced (its layout is right; its dtype
        # is the previous layer's, which a model mixing dtypes may not share)
        if not trusted or x.dtype != self.weight._data.dtype:
            x = C.module_array(self._who, "input", x, self.weight._data.dtype)
        if x.ndim != 2:
            raise ValueError(f"{self._who()}: input must be 2-D (batch, {self.in_features}), "
                             f"got {x.ndim}-D with shape {x.shape}")
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self._who()}: input has {x.shape[1]} features, expected "
                             f"{self.in_features} (input shape {x.shape}, expected "
                             f"(batch, {self.in_features}))")
        if x.shape[0] > C.INT_MAX:
            raise ValueError(f"{self._who()}: batch exceeds 2**31-1")
        return x

    # The fused paths: Sequential calls these with an activation code (0 = identity).
    def _forward_act(self, ctx, x, act, slope, trusted=False):
        x = self._check_input(x, trusted)
        W = self.weight._data
        dt = W.dtype
        b = self.bias._data if self.bias is not None else C.EMPTY1[dt]
        shape = (x.shape[0], self.out_features)
        if self.training:
            out = buf(ctx, "out", shape, dt, x)
        else:
            out = np.empty(shape, dt)
        _LIN_FWD[dt](x, W, b, act, slope, out)
        if self.training:
            ctx.x = x
            ctx.y = out
        return out

    def _backward_act(self, ctx, grad_out, act, slope, input_grad, who, trusted=False):
        x, y = ctx.x, ctx.y
        if x is None:
            raise not_run(who)
        W = self.weight._data
        dt = W.dtype
        shape = y.shape
        if not trusted:
            grad_out = C.module_array(who, "grad_out", grad_out, dt)
        C.same_shape(who, "grad_out", grad_out, shape)
        if not trusted:
            grad_out = C.rowmajor(grad_out)
        wp, bp = self.weight, self.bias
        gW, acc = wp._grad, wp._claim_grad()
        if bp is not None:
            gb = bp._grad
            if bp._claim_grad() != acc:   # one of the two was zeroed on its own: materialize
                (wp if not acc else bp)._grad.fill(0)
                acc = True
        else:
            gb = C.EMPTY1[dt]
        if act:
            work = buf(ctx, "work", shape, dt, grad_out)
        else:
            work = C.EMPTY2[dt]
        if input_grad:
            gx = buf(ctx, "gx", x.shape, dt, grad_out)
        else:
            gx = C.EMPTY2[dt]
        _LIN_BWD[dt](grad_out, x, W, y if act else C.EMPTY2[dt], act, slope, gx, gW,
                                gb, acc, work, bool(input_grad), self.bias is not None)
        return gx if input_grad else None

    def forward(self, x: ArrayLike) -> Array:
        return self._forward_act(self._ctx, x, 0, 0.0)

    def backward(self, grad_out: ArrayLike, input_grad: bool = True) -> Array | None:
        return self._backward_act(self._ctx, grad_out, 0, 0.0, input_grad, self._who)


# ------------------------------------------------------------------------- activations
class _Activation(Module):
    """Elementwise activation over an array of any shape (float32 or float64)."""
    _act = "identity"

    @property
    def _code(self):
        return ACTIVATIONS[self._act]

    def _slope(self):
        return 0.0

    def _fusable(self):
        return True

    def _who(self):
        return repr(self)

    def forward(self, x: ArrayLike) -> Array:
        return self._fwd(self._ctx, x, self.training)

    def backward(self, grad_out: ArrayLike, input_grad: bool = True) -> Array | None:
        return self._bwd(self._ctx, grad_out, input_grad, self._who)

    def _fwd(self, ctx, x, training):
        who = self._who
        x = C.module_array(who, "input", x)
        if x.ndim == 0:
            raise ValueError(f"{who()}: input must have at least 1 dimension, got a 0-D array")
        x2 = C.as_rows(x)
        if training:
            out = buf(ctx, "out", x2.shape, x.dtype, x2)
        else:
            out = np.empty(x2.shape, x.dtype)
        _ACT_FWD[x.dtype](x2, out, self._code, self._slope())
        if training:
            ctx.x = None if self._fusable() else x2
            ctx.y = out
            ctx.shape = x.shape
        return out.reshape(x.shape) if x.ndim != 2 else out

    def _bwd(self, ctx, grad_out, input_grad, who):
        y = ctx.y
        if y is None:
            raise not_run(who)
        grad_out = C.module_array(who, "grad_out", grad_out, y.dtype)
        C.same_shape(who, "grad_out", grad_out, ctx.shape)
        if not input_grad:
            return None
        g2 = C.as_rows(grad_out)
        gi = buf(ctx, "gi", y.shape, y.dtype, g2)
        if self._fusable():
            _ACT_BWD[y.dtype](g2, y, gi, self._code, self._slope())
        else:   # leaky_relu with a negative slope: the derivative needs the input's sign
            np.multiply(g2, np.where(ctx.x > 0, 1.0, self._slope()).astype(y.dtype), out=gi)
        return gi.reshape(ctx.shape) if len(ctx.shape) != 2 else gi

    def _arch(self):
        return {}


class Identity(_Activation):
    """y = x (returns its input itself); backward returns grad_out."""
    _act = "identity"

    def _fwd(self, ctx, x, training):
        C.module_array("Identity()", "input", x)
        if training:
            ctx.shape = x.shape
            ctx.y = x
        return x

    def _bwd(self, ctx, grad_out, input_grad, who):
        if ctx.y is None:
            raise not_run(who)
        grad_out = C.module_array(who, "grad_out", grad_out, ctx.y.dtype)
        C.same_shape(who, "grad_out", grad_out, ctx.shape)
        return grad_out if input_grad else None


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); backward uses the saved output: dy/dx = y (1 - y)."""
    _act = "sigmoid"


class ReLU(_Activation):
    """y = max(x, 0); the derivative at 0 is 0."""
    _act = "relu"


class Tanh(_Activation):
    """y = tanh(x); dy/dx = 1 - y**2 from the saved output."""
    _act = "tanh"


class LeakyReLU(_Activation):
    """y = x for x > 0, negative_slope * x otherwise (negative_slope is fixed at
    construction).  With negative_slope >= 0 the derivative is read from the output and the
    layer fuses into a preceding Linear; a negative slope keeps the input instead.

    Parameters
    ----------
    negative_slope : float, optional
        The slope for x <= 0.
    """
    _act = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        try:
            s = float(negative_slope)
        except (TypeError, ValueError):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, got "
                            f"{negative_slope!r}") from None
        if not np.isfinite(s):
            raise ValueError(f"LeakyReLU: negative_slope must be finite, got {s}")
        object.__setattr__(self, "_negative_slope", s)

    @property
    def negative_slope(self) -> float:
        return self._negative_slope

    def _slope(self):
        return self._negative_slope

    def _fusable(self):
        return self._negative_slope >= 0

    def extra_repr(self) -> str:
        return f"negative_slope={self._negative_slope}"

    def _arch(self):
        return {"negative_slope": self._negative_slope}


