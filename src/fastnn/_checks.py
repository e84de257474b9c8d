"""The validation boundary: every argument check of fastnn's Python layer and its message.

Python validates once, here, and then calls the kernels unchecked (they never raise for a
shape).  A check names the caller (``who``), the argument, and the expected and actual
shape/dtype.  ``who`` may be a string or a callable returning one (only called when an
error is raised, so a repr is never built on the fast path).

Also here: what the boundary hands the kernels besides user arrays -- the empty arrays that
stand for "no array" (``EMPTY``) and the per-dtype specializations of fused-type kernels
(``specialized``).
"""
import math
import numbers

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT_MAX = 2**31 - 1
MAX_THREADS = 4096
# "no array" for the kernels: a (0, 0) and a (0,) array of each dtype
EMPTY = {dt: (np.empty((0, 0), dt), np.empty(0, dt)) for dt in DTYPES}
EMPTY1 = {dt: e1 for dt, (_, e1) in EMPTY.items()}
EMPTY2 = {dt: e2 for dt, (e2, _) in EMPTY.items()}
# the C function behind np.may_share_memory, without the __array_function__ dispatch (2x
# cheaper; outputs are checked against inputs on every call)
may_share = getattr(np.may_share_memory, "_implementation", np.may_share_memory)


def specialized(kernel):
    """{dtype: the float / double specialization of a fused-type Cython kernel}: calling it
    directly skips Cython's per-call dispatch on the argument types (~0.3 us)."""
    return {DTYPES[0]: kernel["float"], DTYPES[1]: kernel["double"]}


def name(who):
    return who() if callable(who) else who


class Named:
    """A caller's name for messages, built only when a message is: formats as repr(obj)
    (so a hot path passes Named(self) instead of building repr(self) on every call)."""
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __format__(self, spec):
        return format(repr(self.obj), spec)

    def __str__(self):
        return repr(self.obj)


def fmt(a):
    return f"shape {tuple(a.shape)}, dtype {a.dtype}"


# ------------------------------------------------------------------ dtypes and arrays
def float_dtype(who, dtype):
    """np.float32 or np.float64 as a numpy dtype, else a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in DTYPES:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dt}")
    return dt


def rowmajor(a):
    """A 2-D array as the kernels read it -- unit column stride, a row stride in whole
    elements, aligned -- copying only when it is not already."""
    isz = a.itemsize
    st = a.strides
    if (a.shape[1] > 1 and st[1] != isz) or st[0] % isz or not a.flags.aligned:
        return a.copy()      # C order, aligned (np.ascontiguousarray keeps unaligned memory)
    return a


def as_rows(x):
    """x as a 2-D view (rows, last axis) the kernels can read (copied only if needed)."""
    if x.ndim != 2:
        x = x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) if x.ndim else x.reshape(1, 1)
    return rowmajor(x)


def array(fn, what, a, ndim, dtype=None):
    """A float32/float64 ndarray of `ndim` dims (and `dtype`) for the functional API
    (fastnn.gemm, linear_forward, ...); copied when its strides are not whole elements."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {what} must be a numpy.ndarray, got {type(a).__name__}")
    adt = a.dtype
    if adt not in DTYPES:
        raise TypeError(f"{fn}: {what} must have dtype float32 or float64, got {adt}")
    if dtype is not None and adt != dtype:
        raise TypeError(f"{fn}: {what} has dtype {adt} but the other operands are "
                        f"{dtype}; convert explicitly (e.g. {what}.astype(np.{dtype}))")
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {what} must be {ndim}-D, got {a.ndim}-D ({fmt(a)})")
    if max(a.shape) > INT_MAX:
        raise ValueError(f"{fn}: {what} dimension exceeds 2**31-1 ({fmt(a)})")
    return _whole_elements(a)


def x_and_W(fn, x, W, hint=""):
    """x (batch, in_features) and W (out_features, in_features) of one dtype, whose feature
    counts agree, for linear_forward / linear_backward; `hint` follows W's shape."""
    x = array(fn, "x", x, 2)
    W = array(fn, "W", W, 2, x.dtype)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"{fn}: x has {x.shape[1]} features ({fmt(x)}) but W expects "
                         f"{W.shape[1]} ({fmt(W)}{hint})")
    return x, W


def _whole_elements(a):
    # the kernels index in whole elements of aligned memory
    isz = a.itemsize
    for s in a.strides:
        if s % isz:
            return a.copy()
    if not a.flags.aligned:
        return a.copy()
    return a


def module_array(who, what, a, dtype=None):
    """A float32/float64 ndarray (of `dtype`, the module's) for a module's forward or
    backward, any ndim; copied when its strides are not whole elements."""
    if not isinstance(a, np.ndarray) or (dtype is not None and a.dtype != dtype) or \
            a.dtype not in DTYPES:
        _module_array_error(name(who), what, a, dtype)
    return _whole_elements(a)


def _module_array_error(who, what, a, dtype):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{who}: {what} must be a numpy.ndarray, got {type(a).__name__}")
    dt = a.dtype
    if dtype is not None and dt != dtype:
        if dt in DTYPES:
            raise TypeError(
                f"{who}: {what} has dtype {dt} but the module computes in {dtype}; "
                f"convert the {what} with .astype(np.{dtype}) or the model with "
                f".to(np.{dt})")
        raise TypeError(f"{who}: {what} must have dtype {dtype}, got {dt}")
    raise TypeError(f"{who}: {what} must have dtype float32 or float64, got {dt}")


def same_shape(who, what, a, shape):
    """A gradient (or target) must have the shape of what it belongs to."""
    if a.shape != shape:
        raise ValueError(f"{name(who)}: {what} must have the output's shape {shape}, got "
                         f"{a.shape}")
    return a


def output(fn, what, a, shape, dtype, inputs):
    """Check an output buffer: shape, dtype, writable, unit column stride, rows that do not
    overlap each other, no memory shared with any input."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {what} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{fn}: {what} must have dtype {dtype}, got {a.dtype}")
    shape = tuple(shape)
    if a.shape != shape:
        raise ValueError(f"{fn}: {what} must have shape {shape}, got {a.shape}")
    flags = a.flags
    if not flags.writeable:
        raise ValueError(f"{fn}: {what} is read-only")
    if not flags.aligned:
        raise ValueError(f"{fn}: {what} is not aligned to its dtype")
    st, isz = a.strides, a.itemsize
    if len(shape) == 2:
        m, n = shape
        if m and n > 1 and st[1] != isz:
            raise ValueError(f"{fn}: {what} needs a unit column stride (C-ordered rows), got "
                             f"strides {st}; pass e.g. np.empty({shape}, dtype=np.{dtype})")
        if m > 1 and n and st[0] < n * isz:
            raise ValueError(f"{fn}: {what} rows overlap or run backwards (strides {st})")
        if m > 1 and st[0] % isz:
            raise ValueError(f"{fn}: {what} row stride is not a whole number of elements")
    elif len(shape) == 1 and shape[0] > 1 and st[0] != isz:
        raise ValueError(f"{fn}: {what} must be contiguous, got strides {st}")
    if a.size:
        for iname, x in inputs:
            if x is not None and x.size and may_share(a, x):
                raise ValueError(f"{fn}: {what} shares memory with {iname}; "
                                 "the kernels do not support in-place aliasing here")
    return a


def bias(fn, what, b, n, dtype):
    """A (n,) bias as a contiguous array, or the empty array for None."""
    if b is None:
        return EMPTY1[dtype]
    b = array(fn, what, b, 1, dtype)
    if b.shape[0] != n:
        raise ValueError(f"{fn}: {what} must have shape ({n},), got {tuple(b.shape)}")
    return np.ascontiguousarray(b)


# --------------------------------------------------------------------- scalar options
def activation(fn, act, negative_slope, codes, backward=False):
    """(code, slope) of an activation named by string; `codes` maps names to codes."""
    code = codes.get(act) if isinstance(act, str) else None
    if code is None and isinstance(act, str):
        code = codes.get(act.lower())
    if code is None:
        raise ValueError(f"{fn}: unknown activation {act!r}; expected one of "
                         f"{tuple(codes)}")
    slope = float(negative_slope)
    if code == codes["leaky_relu"]:
        if not np.isfinite(slope):
            raise ValueError(f"{fn}: negative_slope must be finite, got {negative_slope}")
        if backward and slope < 0:
            raise ValueError(f"{fn}: leaky_relu backward needs negative_slope >= 0 (the "
                             f"derivative is read from the saved output), got {slope}")
    elif code == codes.get("softplus") and not (np.isfinite(slope) and slope > 0):
        raise ValueError(f"{fn}: softplus needs negative_slope (its beta) finite and > 0, "
                         f"got {negative_slope}")
    elif code == codes.get("elu"):
        if not np.isfinite(slope):
            raise ValueError(f"{fn}: negative_slope (elu's alpha) must be finite, got "
                             f"{negative_slope}")
        if backward and slope < 0:
            raise ValueError(f"{fn}: elu backward needs negative_slope (alpha) >= 0 (the "
                             f"derivative is read from the saved output), got {slope}")
    return code, slope


def engine(fn, value, codes):
    """The code of an engine named by string (any case), -1 for None (the current one)."""
    if value is None:
        return -1
    if not isinstance(value, str) or value.lower() not in codes:
        raise ValueError(f"{fn}: engine must be one of {tuple(codes)} or None, got {value!r}")
    return codes[value.lower()]


def threads(fn, n_threads):
    """-1 for None (the current setting), else a checked thread count."""
    return -1 if n_threads is None else num_threads(fn, n_threads)


def num_threads(fn, n, what="n_threads"):
    """An int thread count in [1, MAX_THREADS], else a clear TypeError/ValueError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{fn}: {what} must be an int >= 1 or None, got "
                        f"{type(n).__name__} {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"{fn}: {what} must be >= 1 or None, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{fn}: {what} must be at most {MAX_THREADS}, got {n}")
    return n


def int_in(who, what, v, lo, hi=None):
    """An int (not a bool) in [lo, hi], else a ValueError."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or \
            (hi is not None and v > hi):
        rng = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"
        raise ValueError(f"{who}: {what} must be {rng}, got {v!r}")
    return int(v)


def prefixed(exc, prefix):
    """The same exception type with a container's position prepended ("Sequential[2]: ...")."""
    try:
        new = type(exc)(f"{prefix}: {exc}")
    except Exception:
        return exc
    return new


def real(who, name, value, minimum=0.0):
    """A hyperparameter: a finite real number >= minimum, as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < minimum:
        raise ValueError(f"{who}: {name} must be finite and >= {minimum}, got {value!r}")
    return v


def flag(who, name, value):
    """A boolean hyperparameter (True/False, or a NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: {name} must be True or False, got {value!r}")
    return bool(value)


def betas(who, name, value):
    """Adam's (beta1, beta2): two real numbers in [0, 1), as a tuple of floats."""
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise TypeError(f"{who}: {name} must be a pair (beta1, beta2), got {value!r}") from None
    out = []
    for i, b in enumerate((b1, b2)):
        b = real(who, f"{name}[{i}]", b)
        if not b < 1.0:
            raise ValueError(f"{who}: {name}[{i}] must be in [0, 1), got {value[i]!r}")
        out.append(b)
    return tuple(out)


# ------------------------------------------------------------------ gradient clipping
def grad_parameters(who, parameters):
    """The Parameters whose gradients a clipping function reads, as a list: one Parameter
    or an iterable of them (a generator is consumed once), each at most once.  Returns
    (list, was_empty_generator)."""
    from .nn.module import Module
    from .nn.parameter import Parameter
    if isinstance(parameters, Parameter):
        return [parameters], False
    if isinstance(parameters, Module):
        raise TypeError(f"{who}: pass model.parameters(), not the model")
    if isinstance(parameters, np.ndarray):
        raise TypeError(f"{who}: parameters must be Parameters (e.g. model.parameters()), "
                        "not a numpy array: gradients live in Parameter.grad")
    gen = not isinstance(parameters, (list, tuple))
    try:
        params = list(parameters)
    except TypeError:
        raise TypeError(f"{who}: parameters must be a Parameter or an iterable of "
                        f"Parameters, got {type(parameters).__name__}") from None
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{who}: parameters[{i}] is a {type(p).__name__}, not a fastnn "
                            "Parameter")
        if id(p) in seen:
            raise ValueError(f"{who}: parameters[{i}] appears more than once (its gradient "
                             "would count, and be scaled, twice)")
        seen.add(id(p))
    return params, gen and not params


def norm_type(who, value):
    """A p-norm's order: a real number > 0 or inf (also the string 'inf'), as a float."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: norm_type must be a real number > 0 or inf, got {value!r}")
    p = float(value)
    if not p > 0:        # also NaN
        raise ValueError(f"{who}: norm_type must be > 0 or inf, got {value!r} (the 0-"
                         "'norm' and negative orders are not supported)")
    return p


def nonneg_bound(who, name, value):
    """A clipping bound: a real number >= 0 (inf allowed: no clipping), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number >= 0, got {value!r}")
    v = float(value)
    if not v >= 0:       # also NaN
        raise ValueError(f"{who}: {name} must be >= 0 (inf: no clipping), got {value!r}")
    return v


def clip_option(who, value):
    """The clip_grad_norm= option of compile_step / Trainer: None or a max_norm >= 0."""
    return None if value is None else nonneg_bound(who, "clip_grad_norm", value)


# ------------------------------------------------------------------ loss weights
def weights(who, what, w, shape=None):
    """A float64 C-contiguous copy of a weight array (an ndarray or a sequence of real
    numbers): finite and >= 0, of `shape` when given (any shape, at least 1-D, otherwise)."""
    if isinstance(w, np.ndarray):
        a = w
    else:
        try:
            a = np.asarray(w)
        except Exception:
            raise TypeError(f"{who}: {what} must be an array of real numbers, got "
                            f"{type(w).__name__}") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{who}: {what} must be an array of real numbers, got dtype "
                        f"{a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{who}: {what} must have shape {shape}, got {a.shape}")
    if a.ndim == 0:
        raise ValueError(f"{who}: {what} must be at least 1-D, got a 0-d array")
    a = np.array(a, dtype=np.float64, order="C", copy=True)
    if a.size and not (np.isfinite(a).all() and a.min() >= 0):
        bad = int(np.flatnonzero(~(np.isfinite(a.reshape(-1)) & (a.reshape(-1) >= 0)))[0])
        raise ValueError(f"{who}: {what} must be finite and >= 0; element {bad} is "
                         f"{a.reshape(-1)[bad]!r}")
    return a


def sample_weight(who, w, n):
    """Per-sample weights for a batch of n rows: shape (n,), finite and >= 0 (a float64
    contiguous copy)."""
    a = weights(who, "sample_weight", w)
    if a.shape != (n,):
        raise ValueError(f"{who}: sample_weight must have shape ({n},) (one weight per row "
                         f"of pred), got {a.shape}")
    return a


def fraction(who, what, value):
    """A real number in [0, 1], as a float."""
    v = real(who, what, value)
    if v > 1.0:
        raise ValueError(f"{who}: {what} must be in [0, 1], got {value!r}")
    return v


def probability(who, what, value):
    """A real number in [0, 1) (a drop probability), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {what} must be a real number in [0, 1), got {value!r}")
    v = float(value)
    if not 0.0 <= v < 1.0:          # (NaN fails too)
        raise ValueError(f"{who}: {what} must be in [0, 1), got {value!r} ({what} = 1 would "
                         "drop everything)")
    return v
