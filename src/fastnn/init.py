"""Weight initialization with PyTorch's names and formulas (``torch.nn.init``).

Every function fills its first argument **in place** and returns it: a fastnn ``Parameter``
(its ``data`` array) or a writable float ``numpy.ndarray``.  Random values come from
``rng`` -- a ``numpy.random.Generator``, an int seed, or None for fresh entropy (fastnn draws
from NumPy generators, not from a global seed) -- drawn in float64 and rounded to the
array's dtype.

Fans are computed as torch's ``_calculate_fan_in_and_fan_out``: for a weight of shape
(out, in, *k), fan_in = in * prod(k) and fan_out = out * prod(k); a Linear's (out, in)
weight has fan_in = in_features, fan_out = out_features.

    calculate_gain(nonlinearity, param=None)
    xavier_uniform_(w, gain=1.0, rng=None)     U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))
    xavier_normal_(w, gain=1.0, rng=None)      N(0, std), std = gain * sqrt(2 / (fan_in + fan_out))
    kaiming_uniform_(w, a=0, mode="fan_in", nonlinearity="leaky_relu", rng=None)
                                               U(-b, b), b = gain * sqrt(3 / fan)
    kaiming_normal_(w, a=0, mode="fan_in", nonlinearity="leaky_relu", rng=None)
                                               N(0, std), std = gain / sqrt(fan)
    uniform_(w, a=0.0, b=1.0, rng=None)   normal_(w, mean=0.0, std=1.0, rng=None)
    constant_(w, val)   zeros_(w)   ones_(w)
"""
from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from ._typing import Array
    from .nn.parameter import Parameter

#: what the initializers fill in place: a Parameter or a float ndarray
Tensor = Union["Parameter", "Array"]
RngLike = Union[int, np.random.Generator, None]

__all__ = ["calculate_gain", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
           "kaiming_normal_", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "INITIALIZERS"]

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
               "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain:
    linear/conv*/sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope**2))
    (slope = param, default 0.01), selu 3/4.

    Parameters
    ----------
    nonlinearity : str
        "linear", "conv1d", ..., "sigmoid", "tanh", "relu", "leaky_relu" or "selu".
    param : float, optional
        leaky_relu's negative slope.

    Returns
    -------
    float
        The gain.
    """
    if not isinstance(nonlinearity, str):
        raise ValueError(f"calculate_gain: nonlinearity must be a string, got "
                         f"{nonlinearity!r}")
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif (not isinstance(param, bool) and isinstance(param, numbers.Real)):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected "
                     f"one of {_LINEAR_FNS + ('sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu')}")


# ------------------------------------------------------------------------- helpers
def _target(fn, tensor):
    """The ndarray to fill: a Parameter's data or a writable float ndarray."""
    from .nn.parameter import Parameter
    if isinstance(tensor, Parameter):
        return tensor._data
    if not isinstance(tensor, np.ndarray):
        raise TypeError(f"{fn}: expected a fastnn Parameter or a numpy.ndarray, got "
                        f"{type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"{fn}: the array must have a floating-point dtype, got {tensor.dtype}")
    if not tensor.flags.writeable:
        raise ValueError(f"{fn}: the array is read-only (it is filled in place)")
    return tensor


def _fans(fn, a):
    """(fan_in, fan_out) as torch's _calculate_fan_in_and_fan_out."""
    if a.ndim < 2:
        raise ValueError(f"{fn}: fan in and fan out can not be computed for an array with "
                         f"fewer than 2 dimensions (shape {a.shape})")
    receptive = math.prod(a.shape[2:]) if a.ndim > 2 else 1
    return a.shape[1] * receptive, a.shape[0] * receptive


def _fan(fn, a, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{fn}: mode {mode!r} not supported, please use one of fan_in, "
                         "fan_out")
    fan_in, fan_out = _fans(fn, a)
    return fan_in if mode == "fan_in" else fan_out


def _real(fn, what, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{fn}: {what} must be a finite real number, got {v!r}")
    return float(v)


def _fill(a, values):
    a[...] = values          # float64 draws rounded to a's dtype, in place
    return a


def _uniform(a, lo, hi, rng):
    return _fill(a, np.random.default_rng(rng).uniform(lo, hi, a.shape))


def _normal(a, mean, std, rng):
    return _fill(a, np.random.default_rng(rng).normal(mean, std, a.shape))


def _done(tensor):
    return tensor


# ------------------------------------------------------------------------- public
def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, rng: RngLike = None) -> Tensor:
    """Fill with values from U(a, b).

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    a, b : float, optional
        The bounds.
    rng : numpy.random.Generator, int or None, optional
        The generator (an int seeds a new one; None: fresh entropy).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    fn = "uniform_"
    arr = _target(fn, tensor)
    lo, hi = _real(fn, "a", a), _real(fn, "b", b)
    if not lo <= hi:
        raise ValueError(f"{fn}: a must be <= b, got a={a!r}, b={b!r}")
    _uniform(arr, lo, hi, rng)
    return _done(tensor)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0,
            rng: RngLike = None) -> Tensor:
    """Fill with values from N(mean, std**2).

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    mean, std : float, optional
        The distribution's mean and standard deviation.
    rng : numpy.random.Generator, int or None, optional
        The generator (an int seeds a new one; None: fresh entropy).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    fn = "normal_"
    arr = _target(fn, tensor)
    m, s = _real(fn, "mean", mean), _real(fn, "std", std)
    if s < 0:
        raise ValueError(f"{fn}: std must be >= 0, got {std!r}")
    _normal(arr, m, s, rng)
    return _done(tensor)


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with the value val.

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    val : float
        The value.

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    arr = _target("constant_", tensor)
    if isinstance(val, bool) or not isinstance(val, numbers.Real):
        raise ValueError(f"constant_: val must be a real number, got {val!r}")
    arr[...] = val
    return _done(tensor)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with 0.

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    _target("zeros_", tensor)[...] = 0
    return _done(tensor)


def ones_(tensor: Tensor) -> Tensor:
    """Fill with 1.

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    _target("ones_", tensor)[...] = 1
    return _done(tensor)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, rng: RngLike = None) -> Tensor:
    """Glorot & Bengio (2010): U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    gain : float, optional
        The scaling factor (``calculate_gain``).
    rng : numpy.random.Generator, int or None, optional
        The generator (an int seeds a new one; None: fresh entropy).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    fn = "xavier_uniform_"
    arr = _target(fn, tensor)
    g = _real(fn, "gain", gain)
    fan_in, fan_out = _fans(fn, arr)
    std = g * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    _uniform(arr, -bound, bound, rng)
    return _done(tensor)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, rng: RngLike = None) -> Tensor:
    """Glorot & Bengio (2010): N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out)).

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    gain : float, optional
        The scaling factor (``calculate_gain``).
    rng : numpy.random.Generator, int or None, optional
        The generator (an int seeds a new one; None: fresh entropy).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    fn = "xavier_normal_"
    arr = _target(fn, tensor)
    g = _real(fn, "gain", gain)
    fan_in, fan_out = _fans(fn, arr)
    std = g * math.sqrt(2.0 / float(fan_in + fan_out))
    _normal(arr, 0.0, abs(std), rng)
    return _done(tensor)


def _kaiming_std(fn, arr, a, mode, nonlinearity):
    fan = _fan(fn, arr, mode)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", rng: RngLike = None) -> Tensor:
    """He et al. (2015): U(-b, b) with b = gain * sqrt(3 / fan), gain =
    calculate_gain(nonlinearity, a), fan = fan_in or fan_out (mode).  (torch's Linear default
    is kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).)

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    a : float, optional
        leaky_relu's negative slope.
    mode : {"fan_in", "fan_out"}, optional
        Which fan scales the bound.
    nonlinearity : str, optional
        The nonlinearity the gain is for.
    rng : numpy.random.Generator, int or None, optional
        The generator (an int seeds a new one; None: fresh entropy).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    fn = "kaiming_uniform_"
    arr = _target(fn, tensor)
    if arr.size == 0:
        return _done(tensor)        # torch warns and leaves an empty tensor alone
    bound = math.sqrt(3.0) * _kaiming_std(fn, arr, a, mode, nonlinearity)
    _uniform(arr, -bound, bound, rng)
    return _done(tensor)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", rng: RngLike = None) -> Tensor:
    """He et al. (2015): N(0, std**2) with std = gain / sqrt(fan) (see kaiming_uniform_).

    Parameters
    ----------
    tensor : Parameter or numpy.ndarray
        The float array to fill in place (a Linear's weight is (out, in): fan_in = in).
    a : float, optional
        leaky_relu's negative slope.
    mode : {"fan_in", "fan_out"}, optional
        Which fan scales the std.
    nonlinearity : str, optional
        The nonlinearity the gain is for.
    rng : numpy.random.Generator, int or None, optional
        The generator (an int seeds a new one; None: fresh entropy).

    Returns
    -------
    Parameter or numpy.ndarray
        ``tensor``.
    """
    fn = "kaiming_normal_"
    arr = _target(fn, tensor)
    if arr.size == 0:
        return _done(tensor)
    std = _kaiming_std(fn, arr, a, mode, nonlinearity)
    _normal(arr, 0.0, std, rng)
    return _done(tensor)


# the names Linear(init=...) accepts (each called with its defaults and rng=)
INITIALIZERS = {
    "xavier_uniform": xavier_uniform_, "xavier_normal": xavier_normal_,
    "kaiming_uniform": kaiming_uniform_, "kaiming_normal": kaiming_normal_,
    "uniform": uniform_, "normal": normal_,
    "zeros": lambda t, rng=None: zeros_(t), "ones": lambda t, rng=None: ones_(t),
}


def resolve(who, what, init):
    """The callable f(tensor, rng=...) for an init= option: a name of INITIALIZERS (a
    trailing underscore allowed) or a callable; None stays None (the module's default)."""
    if init is None or callable(init):
        return init
    if isinstance(init, str):
        f = INITIALIZERS.get(init.lower().rstrip("_"))
        if f is not None:
            return f
        raise ValueError(f"{who}: unknown {what} {init!r}; expected one of "
                         f"{tuple(INITIALIZERS)}, a callable f(tensor, rng=...) or None")
    raise TypeError(f"{who}: {what} must be a name, a callable f(tensor, rng=...) or None, "
                    f"got {type(init).__name__}")
