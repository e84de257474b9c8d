"""Validated entry points to the compiled kernels.

Everything a caller passes is checked here, once, with errors that name the function and the
expected and actual shape/dtype; the kernels behind these functions then run unchecked and
without the GIL.  Inputs may have any strides (a transposed or sliced view costs no copy on
the native engine); outputs need a unit column stride.

Activations: "identity", "relu", "leaky_relu", "sigmoid", "tanh".
"""
import numpy as np

from ._config import ENGINES, _ENGINE_CODES
from ._kernels import dense as _dense

ACTIVATIONS = {"identity": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4}
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT_MAX = 2**31 - 1
_EMPTY = {dt: (np.empty((0, 0), dt), np.empty(0, dt)) for dt in DTYPES}
# the C function behind np.may_share_memory, without the __array_function__ dispatch (2x
# cheaper; every call here checks outputs against inputs)
_may_share = getattr(np.may_share_memory, "_implementation", np.may_share_memory)

__all__ = ["ACTIVATIONS", "gemm", "linear_forward", "linear_backward",
           "activation_forward", "activation_backward"]


def specialized(kernel):
    """{dtype: the float / double specialization of a fused-type Cython kernel}: calling it
    directly skips Cython's per-call dispatch on the argument types (~0.3 us)."""
    return {DTYPES[0]: kernel["float"], DTYPES[1]: kernel["double"]}


def _fmt(a):
    return f"shape {tuple(a.shape)}, dtype {a.dtype}"


def _array(fn, name, a, ndim, dtype=None):
    """Check that `a` is a float32/float64 ndarray of `ndim` dims (and `dtype`)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    adt = a.dtype
    if adt not in DTYPES:
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {adt}")
    if dtype is not None and adt != dtype:
        raise TypeError(f"{fn}: {name} has dtype {adt} but the other operands are "
                        f"{dtype}; convert explicitly (e.g. {name}.astype(np.{dtype}))")
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got {a.ndim}-D ({_fmt(a)})")
    if max(a.shape) > _INT_MAX:
        raise ValueError(f"{fn}: {name} dimension exceeds 2**31-1 ({_fmt(a)})")
    # the kernels index in whole elements of aligned memory
    st, isz = a.strides, adt.itemsize
    if st[0] % isz or (ndim == 2 and st[1] % isz) or not a.flags.aligned:
        a = a.copy()
    return a


def _output(fn, name, a, shape, dtype, inputs):
    """Check an output buffer: shape, dtype, writable, unit column stride, rows that do not
    overlap each other, no memory shared with any input."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{fn}: {name} must have dtype {dtype}, got {a.dtype}")
    shape = tuple(shape)
    if a.shape != shape:
        raise ValueError(f"{fn}: {name} must have shape {shape}, got {a.shape}")
    flags = a.flags
    if not flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only")
    if not flags.aligned:
        raise ValueError(f"{fn}: {name} is not aligned to its dtype")
    st, isz = a.strides, a.itemsize
    if len(shape) == 2:
        m, n = shape
        if m and n > 1 and st[1] != isz:
            raise ValueError(f"{fn}: {name} needs a unit column stride (C-ordered rows), got "
                             f"strides {st}; pass e.g. np.empty({shape}, dtype=np.{dtype})")
        if m > 1 and n and st[0] < n * isz:
            raise ValueError(f"{fn}: {name} rows overlap or run backwards (strides {st})")
        if m > 1 and st[0] % isz:
            raise ValueError(f"{fn}: {name} row stride is not a whole number of elements")
    elif len(shape) == 1 and shape[0] > 1 and st[0] != isz:
        raise ValueError(f"{fn}: {name} must be contiguous, got strides {st}")
    if a.size:
        for iname, x in inputs:
            if x is not None and x.size and _may_share(a, x):
                raise ValueError(f"{fn}: {name} shares memory with {iname}; "
                                 "the kernels do not support in-place aliasing here")
    return a


def _activation(fn, activation, negative_slope, backward=False):
    code = ACTIVATIONS.get(activation) if isinstance(activation, str) else None
    if code is None and isinstance(activation, str):
        code = ACTIVATIONS.get(activation.lower())
    if code is None:
        raise ValueError(f"{fn}: unknown activation {activation!r}; expected one of "
                         f"{tuple(ACTIVATIONS)}")
    slope = float(negative_slope)
    if code == ACTIVATIONS["leaky_relu"]:
        if not np.isfinite(slope):
            raise ValueError(f"{fn}: negative_slope must be finite, got {negative_slope}")
        if backward and slope < 0:
            raise ValueError(f"{fn}: leaky_relu backward needs negative_slope >= 0 (the "
                             f"derivative is read from the saved output), got {slope}")
    return code, slope


def _engine(fn, engine):
    if engine is None:
        return -1
    if not isinstance(engine, str) or engine.lower() not in _ENGINE_CODES:
        raise ValueError(f"{fn}: engine must be one of {ENGINES} or None, got {engine!r}")
    return _ENGINE_CODES[engine.lower()]


MAX_THREADS = 4096


def check_num_threads(fn, n, name="n_threads"):
    """An int thread count in [1, MAX_THREADS], else a clear TypeError/ValueError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int >= 1 or None, got "
                        f"{type(n).__name__} {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"{fn}: {name} must be >= 1 or None, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{fn}: {name} must be at most {MAX_THREADS}, got {n}")
    return n


def _threads(fn, n_threads):
    return -1 if n_threads is None else check_num_threads(fn, n_threads)


def _bias(fn, name, b, n, dtype):
    if b is None:
        return _EMPTY[dtype][1]
    b = _array(fn, name, b, 1, dtype)
    if b.shape[0] != n:
        raise ValueError(f"{fn}: {name} must have shape ({n},), got {tuple(b.shape)}")
    return np.ascontiguousarray(b)


def _rowmajor(a):
    """A view the elementwise kernels can read (unit column stride), copying only if needed."""
    if a.shape[0] and a.shape[1] > 1 and a.strides[1] != a.itemsize:
        return np.ascontiguousarray(a)
    return a


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None,
         activation="identity", negative_slope=0.01, engine=None, n_threads=None):
    """out = act(alpha * op(a) @ op(b) + beta * out + bias); op(x) is x.T when trans_x.

    a, b: float32/float64 2-D arrays of one dtype, any strides.  bias: (N,) or None.
    out: (M, N) with a unit column stride, or None to allocate (then beta must be 0).
    beta == 0 never reads out (NaNs there do not propagate), as in BLAS.
    Returns out.
    """
    fn = "fastnn.gemm"
    a = _array(fn, "a", a, 2)
    dt = a.dtype
    b = _array(fn, "b", b, 2, dt)
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    M, K = opa.shape
    if opb.shape[0] != K:
        raise ValueError(f"{fn}: inner dimensions differ: op(a) is {tuple(opa.shape)} and "
                         f"op(b) is {tuple(opb.shape)}")
    N = opb.shape[1]
    code, slope = _activation(fn, activation, negative_slope)
    bias_ = _bias(fn, "bias", bias, N, dt)
    if out is None:
        if beta != 0:
            raise ValueError(f"{fn}: beta={beta} needs an `out` array to read")
        out = np.empty((M, N), dt)
    else:
        _output(fn, "out", out, (M, N), dt, [("a", a), ("b", b), ("bias", bias_)])
    _dense._gemm(opa, opb, out, float(alpha), float(beta), bias_, code, slope,
                 _engine(fn, engine), _threads(fn, n_threads))
    return out


def linear_forward(x, W, b=None, activation="identity", out=None, *, negative_slope=0.01,
                   engine=None, n_threads=None):
    """out = act(x @ W.T + b), the forward of a dense layer in one kernel call.

    x: (batch, in_features); W: (out_features, in_features); b: (out_features,) or None.
    Returns out, (batch, out_features).
    """
    fn = "fastnn.linear_forward"
    x = _array(fn, "x", x, 2)
    dt = x.dtype
    W = _array(fn, "W", W, 2, dt)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"{fn}: x has {x.shape[1]} features ({_fmt(x)}) but W expects "
                         f"{W.shape[1]} ({_fmt(W)}: (out_features, in_features))")
    M, N = x.shape[0], W.shape[0]
    b_ = _bias(fn, "b", b, N, dt)
    code, slope = _activation(fn, activation, negative_slope)
    if out is None:
        out = np.empty((M, N), dt)
    else:
        _output(fn, "out", out, (M, N), dt, [("x", x), ("W", W), ("b", b_)])
    _dense._linear_forward(x, W, b_, code, slope, out, _engine(fn, engine),
                           _threads(fn, n_threads))
    return out


def linear_backward(grad_out, x, W, y_saved=None, activation="identity", grad_x=None,
                    grad_W=None, grad_b=None, accumulate=False, *, compute_grad_x=True,
                    compute_grad_b=True, negative_slope=0.01, workspace=None, engine=None,
                    n_threads=None):
    """Backward of out = act(x @ W.T + b).

    dz = grad_out * act'(y_saved) (y_saved is the forward output; unused for identity), then
    grad_W (+)= dz.T @ x, grad_b (+)= dz summed over the batch (deterministic), and
    grad_x = dz @ W (skipped when compute_grad_x is False).  With accumulate=True the weight
    and bias gradients are added to grad_W / grad_b (which must then be given); otherwise
    they are overwritten.  Missing outputs are allocated.  `workspace`, an optional
    (batch, out_features) buffer, holds dz so steady-state calls allocate nothing.

    Returns (grad_x or None, grad_W, grad_b or None).
    """
    fn = "fastnn.linear_backward"
    x = _array(fn, "x", x, 2)
    dt = x.dtype
    W = _array(fn, "W", W, 2, dt)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"{fn}: x has {x.shape[1]} features ({_fmt(x)}) but W expects "
                         f"{W.shape[1]} ({_fmt(W)})")
    M, K, N = x.shape[0], x.shape[1], W.shape[0]
    grad_out = _rowmajor(_array(fn, "grad_out", grad_out, 2, dt))
    if grad_out.shape != (M, N):
        raise ValueError(f"{fn}: grad_out must have shape {(M, N)} (batch, out_features), "
                         f"got {tuple(grad_out.shape)}")
    code, slope = _activation(fn, activation, negative_slope, backward=True)
    empty2, empty1 = _EMPTY[dt]
    if code != 0:
        if y_saved is None:
            raise ValueError(f"{fn}: activation {activation!r} needs y_saved, the forward "
                             "output")
        y_saved = _rowmajor(_array(fn, "y_saved", y_saved, 2, dt))
        if y_saved.shape != (M, N):
            raise ValueError(f"{fn}: y_saved must have shape {(M, N)}, got "
                             f"{tuple(y_saved.shape)}")
        if workspace is None:
            workspace = np.empty((M, N), dt)
        else:
            _output(fn, "workspace", workspace, (M, N), dt,
                    [("grad_out", grad_out), ("x", x), ("W", W), ("y_saved", y_saved)])
    else:
        y_saved = empty2
        workspace = empty2
    inputs = [("grad_out", grad_out), ("x", x), ("W", W), ("y_saved", y_saved),
              ("workspace", workspace)]
    if accumulate and (grad_W is None or (compute_grad_b and grad_b is None)):
        raise ValueError(f"{fn}: accumulate=True needs grad_W (and grad_b) to add into")
    if grad_W is None:
        grad_W = np.empty((N, K), dt)
    else:
        _output(fn, "grad_W", grad_W, (N, K), dt, inputs)
    if compute_grad_b:
        if grad_b is None:
            grad_b = np.empty(N, dt)
        else:
            _output(fn, "grad_b", grad_b, (N,), dt, inputs + [("grad_W", grad_W)])
    else:
        grad_b = None
    if compute_grad_x:
        if grad_x is None:
            grad_x = np.empty((M, K), dt)
        else:
            _output(fn, "grad_x", grad_x, (M, K), dt,
                    inputs + [("grad_W", grad_W), ("grad_b", grad_b)])
    else:
        grad_x = None
    _dense._linear_backward(grad_out, x, W, y_saved, code, slope,
                            empty2 if grad_x is None else grad_x, grad_W,
                            empty1 if grad_b is None else grad_b, bool(accumulate), workspace,
                            grad_x is not None, grad_b is not None, _engine(fn, engine),
                            _threads(fn, n_threads))
    return grad_x, grad_W, grad_b


def activation_forward(x, activation, out=None, *, negative_slope=0.01, n_threads=None):
    """out = act(x) elementwise on a 2-D array, with exactly the arithmetic of the fused GEMM
    epilogue (so a fused Linear+activation equals Linear followed by this).  out may be x."""
    fn = "fastnn.activation_forward"
    x = _rowmajor(_array(fn, "x", x, 2))
    code, slope = _activation(fn, activation, negative_slope)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    else:  # out may be x itself (in place), but no other overlap
        _output(fn, "out", out, x.shape, x.dtype, [] if out is x else [("x", x)])
    _dense._activation_forward(x, out, code, slope, _threads(fn, n_threads))
    return out


def activation_backward(grad_out, y_saved, activation, out=None, *, negative_slope=0.01,
                        n_threads=None):
    """grad_in = grad_out * act'(y_saved), y_saved being the forward output.  out may be
    grad_out."""
    fn = "fastnn.activation_backward"
    grad_out = _rowmajor(_array(fn, "grad_out", grad_out, 2))
    y_saved = _rowmajor(_array(fn, "y_saved", y_saved, 2, grad_out.dtype))
    if y_saved.shape != grad_out.shape:
        raise ValueError(f"{fn}: y_saved has shape {tuple(y_saved.shape)} but grad_out has "
                         f"{tuple(grad_out.shape)}")
    code, slope = _activation(fn, activation, negative_slope, backward=True)
    if out is None:
        out = np.empty(grad_out.shape, grad_out.dtype)
    else:  # out may be grad_out itself (in place), but must not overlap y_saved
        _output(fn, "out", out, grad_out.shape, grad_out.dtype,
                ([] if out is grad_out else [("grad_out", grad_out)]) + [("y_saved", y_saved)])
    _dense._activation_backward(grad_out, y_saved, out, code, slope, _threads(fn, n_threads))
    return out
