"""The layers: ``Linear``, the elementwise activations (``Sigmoid``, ``ReLU``, ``Tanh``,
``LeakyReLU``, ``Identity``, ``GELU``, ``SiLU``, ``Softplus``, ``ELU``), the row-wise
``Softmax`` / ``LogSoftmax`` and ``Dropout``.

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
from ..ops import ACTIVATIONS, SAVES_INPUT_CODES
from .._kernels import dense as _dense
from .._kernels import dropout as _dropout
from .._kernels import losses as _losses
from .module import Module, buf, not_run
from .parameter import Parameter
from .._typing import Array, ArrayLike, DTypeLike

__all__ = ["Linear", "Sigmoid", "ReLU", "Tanh", "LeakyReLU", "Identity", "GELU", "SiLU",
           "Softplus", "ELU", "Softmax", "LogSoftmax", "Dropout", "manual_seed"]

_F32 = C.DTYPES[0]
_LIN_FWD = C.specialized(_dense._linear_forward)
_LIN_BWD = C.specialized(_dense._linear_backward)
_ACT_FWD = C.specialized(_dense._activation_forward)
_ACT_BWD = C.specialized(_dense._activation_backward)
_DROP = C.specialized(_dropout._dropout)
_SOFTMAX = C.specialized(_losses._softmax)
_SOFTMAX_BWD = C.specialized(_losses._softmax_backward)


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
    # An activation whose backward reads its input (GELU, SiLU, Softplus) keeps the
    # pre-activation z = x W^T + b in training: the GEMM writes z, one vectorized pass
    # act(z); in eval mode the activation runs in the GEMM's writeback (bitwise the same).
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
        if self.training and act in SAVES_INPUT_CODES:
            z = buf(ctx, "z", shape, dt, x, out)
            _LIN_FWD[dt](x, W, b, 0, 0.0, z)
            _ACT_FWD[dt](z, out, act, slope)
        else:
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
        if act in SAVES_INPUT_CODES:
            y = ctx.bufs["z"]         # the pre-activation, saved by the training forward
        _LIN_BWD[dt](grad_out, x, W, y if act else C.EMPTY2[dt], act, slope, gx, gW,
                                gb, acc, work, bool(input_grad), self.bias is not None)
        return gx if input_grad else None

    def forward(self, x: ArrayLike) -> Array:
        return self._forward_act(self._ctx, x, 0, 0.0)

    def backward(self, grad_out: ArrayLike, input_grad: bool = True) -> Array | None:
        return self._backward_act(self._ctx, grad_out, 0, 0.0, input_grad, self._who)


# ------------------------------------------------------------------------- activations
def _elementwise_input(who, x):
    """An elementwise layer's input (activations, Dropout): a float ndarray of >= 1 dims."""
    x = C.module_array(who, "input", x)
    if x.ndim == 0:
        raise ValueError(f"{who()}: input must have at least 1 dimension, got a 0-D array")
    return x


def _grad_rows(ctx, grad_out, input_grad, who):
    """What an elementwise layer's backward starts with (activations, Dropout): grad_out
    checked against the saved output's shape and dtype, as rows, and the input-gradient
    buffer -- (None, None) when input_grad is False."""
    y = ctx.y
    if y is None:
        raise not_run(who)
    grad_out = C.module_array(who, "grad_out", grad_out, y.dtype)
    C.same_shape(who, "grad_out", grad_out, ctx.shape)
    if not input_grad:
        return None, None
    g2 = C.as_rows(grad_out)
    return g2, buf(ctx, "gi", y.shape, y.dtype, g2)


class _Activation(Module):
    """Elementwise activation over an array of any shape (float32 or float64)."""
    _act = "identity"

    @property
    def _code(self):
        return ACTIVATIONS[self._act]

    def _slope(self):
        return 0.0

    def _fusable(self):
        """Whether the kernel's backward computes the derivative (from the saved output, or
        from the saved input for the activations in SAVES_INPUT); else _input_deriv does."""
        return True

    @property
    def _saves_input(self):
        return self._code in SAVES_INPUT_CODES

    def _input_deriv(self, x):
        """act'(x) from the input, for an activation that is not _fusable."""
        raise NotImplementedError

    def _kernel_exact(self):
        """Whether the elementwise kernel computes the forward exactly; else _fwd corrects
        its result with _adjust (a parameter the kernel does not take)."""
        return True

    def _adjust(self, x, out):
        raise NotImplementedError

    def _who(self):
        return repr(self)

    def forward(self, x: ArrayLike) -> Array:
        return self._fwd(self._ctx, x, self.training)

    def backward(self, grad_out: ArrayLike, input_grad: bool = True) -> Array | None:
        return self._bwd(self._ctx, grad_out, input_grad, self._who)

    def _fwd(self, ctx, x, training):
        x = _elementwise_input(self._who, x)
        x2 = C.as_rows(x)
        if training:
            out = buf(ctx, "out", x2.shape, x.dtype, x2)
        else:
            out = np.empty(x2.shape, x.dtype)
        _ACT_FWD[x.dtype](x2, out, self._code, self._slope())
        if not self._kernel_exact():
            self._adjust(x2, out)
        if training:
            ctx.x = x2 if self._saves_input or not self._fusable() else None
            ctx.y = out
            ctx.shape = x.shape
        return out.reshape(x.shape) if x.ndim != 2 else out

    def _bwd(self, ctx, grad_out, input_grad, who):
        g2, gi = _grad_rows(ctx, grad_out, input_grad, who)
        if gi is None:
            return None
        y = ctx.y
        if self._fusable():
            _ACT_BWD[y.dtype](g2, ctx.x if self._saves_input else y, gi, self._code,
                              self._slope())
        else:   # leaky_relu / elu with a negative parameter: the derivative needs the input
            np.multiply(g2, self._input_deriv(ctx.x).astype(y.dtype), out=gi)
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

    def _input_deriv(self, x):
        return np.where(x > 0, 1.0, self._negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self._negative_slope}"

    def _arch(self):
        return {"negative_slope": self._negative_slope}




def _finite(who, name, value, positive=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{who}: {name} must be a finite{' positive' if positive else ''} "
                         f"number, got {value!r}")
    return v


class GELU(_Activation):
    """y = x * Phi(x), Phi the standard normal CDF (``approximate="none"``, through erf), or
    its tanh approximation x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with
    ``approximate="tanh"``.  The backward reads the saved input (GELU'(x) = Phi(x) +
    x phi(x)); fused into a preceding Linear, the step keeps the pre-activation.

    Parameters
    ----------
    approximate : {"none", "tanh"}, optional
        "none": the exact GELU through erf; "tanh": torch's tanh approximation.
    """
    _act = "gelu"

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got "
                             f"{approximate!r}")
        object.__setattr__(self, "approximate", approximate)
        object.__setattr__(self, "_act", "gelu" if approximate == "none" else "gelu_tanh")

    def extra_repr(self):
        return f"approximate={self.approximate!r}"

    def _arch(self):
        return {"approximate": self.approximate}


class SiLU(_Activation):
    """y = x * sigmoid(x) (Swish); dy/dx = s (1 + x (1 - s)) from the saved input."""
    _act = "silu"


_SOFTPLUS_THRESHOLD = 20.0       # the kernels' (fnn_simd_impl.h: FNN_SOFTPLUS_THRESHOLD)


class Softplus(_Activation):
    """y = log(1 + exp(beta x)) / beta, and y = x where beta x > threshold (torch's rule);
    dy/dx = sigmoid(beta x) (1 above the threshold) from the saved input.  The kernels
    implement torch's default threshold, 20: with it the layer fuses into a preceding
    Linear and compiles; another threshold (any finite number) corrects the kernel's
    result between the two thresholds in NumPy and runs the module path.

    Parameters
    ----------
    beta : float, optional
        The sharpness, finite and > 0.
    threshold : float, optional
        Where ``beta * x > threshold`` the output is x (finite).
    """
    _act = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        b = _finite("Softplus", "beta", beta, positive=True)
        t = _finite("Softplus", "threshold", threshold)
        object.__setattr__(self, "beta", b)
        object.__setattr__(self, "threshold", t)

    def _slope(self):
        return self.beta

    def _kernel_exact(self):
        return self.threshold == _SOFTPLUS_THRESHOLD

    def _fusable(self):
        return self.threshold == _SOFTPLUS_THRESHOLD

    def _adjust(self, x, out):
        # the kernel switched to x at beta x > 20: move the switch to this threshold
        u = x * x.dtype.type(self.beta)
        if self.threshold < _SOFTPLUS_THRESHOLD:
            np.copyto(out, x, where=u > self.threshold)
        else:
            with np.errstate(over="ignore"):
                smooth = (u + np.log1p(np.exp(-u))) / x.dtype.type(self.beta)
            np.copyto(out, smooth, where=(u > _SOFTPLUS_THRESHOLD) & ~(u > self.threshold))

    def _input_deriv(self, x):
        u = x * x.dtype.type(self.beta)
        e = np.exp(-np.abs(u.astype(np.float64)))
        sig = np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return np.where(u > self.threshold, 1.0, sig)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"

    def _arch(self):
        return {"beta": self.beta, "threshold": self.threshold}


class ELU(_Activation):
    """y = x for x > 0, alpha (exp(x) - 1) otherwise (through expm1).  With alpha >= 0
    the derivative is read from the output (y > 0 ? 1 : y + alpha) and the layer fuses
    into a preceding Linear's GEMM writeback; a negative alpha keeps the input instead.

    Parameters
    ----------
    alpha : float, optional
        The scale of the negative part (finite).
    """
    _act = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        object.__setattr__(self, "alpha", _finite("ELU", "alpha", alpha))

    def _slope(self):
        return self.alpha

    def _fusable(self):
        return self.alpha >= 0

    def _input_deriv(self, x):
        with np.errstate(over="ignore"):
            return np.where(x > 0, 1.0, self.alpha * np.exp(np.minimum(x, 0)))

    def extra_repr(self):
        return f"alpha={self.alpha}"

    def _arch(self):
        return {"alpha": self.alpha}


class Softmax(_Activation):
    """y = exp(x - max) / sum(exp(x - max)) over dim=1, the features axis of a 2-D (batch,
    features) input (numerically stable: each row's maximum is subtracted; the vectorized
    exp; sums in float64).  Backward from the saved output: g_in = y (g - sum(g y)).  Not
    elementwise: never fused, its own op (OpKind.SOFTMAX) in the compiled step; each row is
    computed by one thread (bitwise identical for any thread count).

    Parameters
    ----------
    dim : int, optional
        The axis to normalize: 1 (or -1), the features axis.
    """
    _log = False

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or \
                int(dim) not in (1, -1):
            raise ValueError(f"{name}: dim must be 1 (or -1), the features axis of a (batch, "
                             f"features) input, got {dim!r}")
        object.__setattr__(self, "dim", int(dim))

    def _fusable(self):
        return False

    def _fwd(self, ctx, x, training):
        who = self._who
        x = C.module_array(who, "input", x)
        if x.ndim != 2:
            raise ValueError(f"{who()}: input must be 2-D (batch, features), got {x.ndim}-D "
                             f"with shape {x.shape}")
        x2 = C.rowmajor(x)
        if training:
            out = buf(ctx, "out", x2.shape, x.dtype, x2)
        else:
            out = np.empty(x2.shape, x.dtype)
        _SOFTMAX[x.dtype](x2, out, self._log)
        if training:
            ctx.y = out
            ctx.shape = x.shape
        return out

    def _bwd(self, ctx, grad_out, input_grad, who):
        g2, gi = _grad_rows(ctx, grad_out, input_grad, who)
        if g2 is not None:
            _SOFTMAX_BWD[gi.dtype](g2, ctx.y, gi, self._log)
        return gi

    def extra_repr(self):
        return f"dim={self.dim}"

    def _arch(self):
        return {"dim": self.dim}


class LogSoftmax(Softmax):
    """y = x - max - log(sum(exp(x - max))) over dim=1 of a 2-D (batch, features) input;
    backward from the saved output: g_in = g - exp(y) sum(g).  Its own op
    (OpKind.LOGSOFTMAX) in the compiled step, as Softmax.

    Parameters
    ----------
    dim : int, optional
        The axis to normalize: 1 (or -1), the features axis.
    """
    _log = True
# ------------------------------------------------------------------------------ Dropout
# Where Dropout(seed=None) draws its seed: a generator fastnn.manual_seed(s) re-seeds.
_seed_source = [np.random.default_rng()]


def manual_seed(seed: int) -> None:
    """Re-seed the generator that ``Dropout(p, seed=None)`` draws its seed from at
    construction: models built after ``manual_seed(s)`` get the same Dropout seeds, in
    construction order.  (``Trainer(seed=...)`` re-seeds such modules from its own seed at
    the start of fit.)

    Parameters
    ----------
    seed : int
        In [0, 2**64).
    """
    s = C.int_in("fastnn.manual_seed", "seed", seed, 0, 2**64 - 1)
    _seed_source[0] = np.random.default_rng(s)


def _drawn_seed() -> int:
    return int(_seed_source[0].integers(0, 2**64, dtype=np.uint64))


def reseed_dropout(model: Module, seed: int) -> None:
    """Give the k-th ``Dropout(seed=None)`` among ``model.modules()`` the seed
    ``fastnn._kernels.dropout.key(seed, k)`` (what ``Trainer(seed=...)`` does at the start
    of fit, so a run is reproduced by the Trainer's seed); step counters are kept.
    Dropouts built with an explicit seed keep it.

    Parameters
    ----------
    model : Module
        The model whose Dropout modules are re-seeded.
    seed : int
        In [0, 2**64).
    """
    k = 0
    for m in model.modules():
        if type(m) is Dropout and not m._seed_given:
            object.__setattr__(m, "_seed", int(_dropout.key(seed, k)))
            k += 1


class Dropout(Module):
    """Inverted dropout: in training mode ``y = x * mask / (1 - p)`` with each element
    kept with probability 1 - p; in eval mode the identity (returns x itself).

    The mask comes from a counter-based RNG (fastnn._kernels.dropout): a pure function of
    (seed, step, element index), where ``step`` counts this module's training-mode
    forwards.  Masks therefore differ from step to step, are identical for any thread
    count, and a run is reproduced by the same seed; backward regenerates the very bits
    of the last forward.  ``seed``: an int in [0, 2**64), or None to draw one from the
    generator ``fastnn.manual_seed`` sets (and ``Trainer(seed=...)`` re-seeds such a module
    from its own seed at the start of fit).  The seed and the step counter are the
    module's extra state (``state_dict()["<name>._extra_state"]``, saved by fastnn.save and
    in checkpoints), so a resumed run continues the same mask sequence.

    Parameters
    ----------
    p : float, optional
        The probability of zeroing an element, in [0, 1).
    seed : int or None, optional
        The mask seed, in [0, 2**64); None draws one (see above).
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        pf = C.probability("Dropout", "p", p)
        given = seed is not None
        seed = C.int_in("Dropout", "seed", seed, 0, 2**64 - 1) if given else _drawn_seed()
        object.__setattr__(self, "_p", pf)
        object.__setattr__(self, "_thresh", _dropout.threshold(pf))
        object.__setattr__(self, "_scale", 1.0 / (1.0 - pf))
        object.__setattr__(self, "_seed", seed)
        object.__setattr__(self, "_seed_given", given)
        object.__setattr__(self, "_counter", 0)

    @property
    def p(self) -> float:
        """The drop probability (fixed at construction)."""
        return self._p

    @property
    def seed(self) -> int:
        """The mask seed (settable: an int in [0, 2**64))."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        object.__setattr__(self, "_seed", C.int_in("Dropout", "seed", value, 0, 2**64 - 1))

    @property
    def step_count(self) -> int:
        """Training-mode forwards so far: the next forward's mask is that of this step
        (settable: an int >= 0)."""
        return self._counter

    @step_count.setter
    def step_count(self, value: int) -> None:
        object.__setattr__(self, "_counter", C.int_in("Dropout", "step_count", value, 0,
                                                      2**64 - 1))

    def mask_key(self, step: int | None = None) -> int:
        """The RNG key of a forward.

        Parameters
        ----------
        step : int or None, optional
            The forward's number (None: the next forward's).

        Returns
        -------
        int
            The key ``fastnn._kernels.dropout.key(seed, step)`` its mask is drawn from.
        """
        return _dropout.key(self._seed, self._counter if step is None else step)

    def extra_repr(self) -> str:
        return f"p={self._p}"

    def _who(self):
        return repr(self)

    def _arch(self):
        return {"p": self._p, "seed": self._seed if self._seed_given else None}

    def get_extra_state(self) -> Array:
        """What state_dict holds for this module.

        Returns
        -------
        numpy.ndarray
            [seed, step_count] as a uint64 array.
        """
        return np.array([self._seed, self._counter], np.uint64)

    def set_extra_state(self, state: Array) -> None:
        """Restore the seed and step counter from ``get_extra_state``'s array.

        Parameters
        ----------
        state : numpy.ndarray
            A uint64 array [seed, step_count].
        """
        who = f"{self!r}.set_extra_state"
        if not isinstance(state, np.ndarray) or state.shape != (2,) or \
                state.dtype != np.uint64:
            raise TypeError(f"{who}: expected a uint64 array of shape (2,) (seed, "
                            f"step_count), got {C.fmt(state) if isinstance(state, np.ndarray) else type(state).__name__}")
        object.__setattr__(self, "_seed", int(state[0]))
        object.__setattr__(self, "_counter", int(state[1]))

    def forward(self, x: ArrayLike) -> Array:
        return self._fwd(self._ctx, x, self.training)

    def backward(self, grad_out: ArrayLike, input_grad: bool = True) -> Array | None:
        return self._bwd(self._ctx, grad_out, input_grad, self._who)

    def _fwd(self, ctx, x, training):
        x = _elementwise_input(self._who, x)
        if not training:
            return x
        x2 = C.as_rows(x)
        k = _dropout.key(self._seed, self._counter)
        object.__setattr__(self, "_counter", self._counter + 1)
        out = buf(ctx, "out", x2.shape, x.dtype, x2)
        _DROP[x.dtype](x2, out, k, self._thresh, self._scale)
        ctx.x = k               # the mask's key: backward regenerates the same bits
        ctx.y = out
        ctx.shape = x.shape
        return out.reshape(x.shape) if x.ndim != 2 else out

    def _bwd(self, ctx, grad_out, input_grad, who):
        g2, gi = _grad_rows(ctx, grad_out, input_grad, who)
        if gi is None:
            return None
        _DROP[gi.dtype](g2, gi, ctx.x, self._thresh, self._scale)
        return gi.reshape(ctx.shape) if len(ctx.shape) != 2 else gi
