"""The public functional API over the compiled kernels: gemm, linear_forward/backward,
activation_forward/backward.

Every argument is checked once (by fastnn._checks, with errors that name the function and
the expected and actual shape/dtype); the kernels behind these functions then run unchecked
and without the GIL.  Inputs may have any strides (a transposed or sliced view costs no copy
on the native engine); outputs need a unit column stride.

Activations: "identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh",
"silu", "softplus", "elu"; ``negative_slope`` is the one activation parameter: leaky_relu's
slope, softplus's beta (threshold 20, torch's default), elu's alpha.  The backward of gelu,
gelu_tanh, silu and softplus reads the saved forward *input* (``SAVES_INPUT``), the others the
saved output.
"""
from __future__ import annotations

import numpy as np

from . import _checks as C
from ._config import _ENGINE_CODES
from ._kernels import dense as _dense
from ._kernels._core import Activation
from ._typing import Array, ArrayLike

# name -> code, from the one table of codes (fnn_types.h)
ACTIVATIONS = {a.name.lower(): int(a) for a in Activation}
# the activations whose derivative is not a function of their output: their backward reads
# the saved *input* (activation_backward's / linear_backward's y_saved is then the input z)
SAVES_INPUT = frozenset({"gelu", "gelu_tanh", "silu", "softplus"})
SAVES_INPUT_CODES = frozenset(ACTIVATIONS[n] for n in SAVES_INPUT)

__all__ = ["ACTIVATIONS", "SAVES_INPUT", "gemm", "linear_forward", "linear_backward",
           "activation_forward", "activation_backward"]


def _activation(fn, activation, negative_slope, backward=False):
    return C.activation(fn, activation, negative_slope, ACTIVATIONS, backward)


def _engine(fn, engine):
    return C.engine(fn, engine, _ENGINE_CODES)


def gemm(a: ArrayLike, b: ArrayLike, out: Array | None = None, *, trans_a: bool = False,
         trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0,
         bias: ArrayLike | None = None, activation: str = "identity",
         negative_slope: float = 0.01, engine: str | None = None,
         n_threads: int | None = None) -> Array:
    """out = act(alpha * op(a) @ op(b) + beta * out + bias); op(x) is x.T when trans_x.

    a, b: float32/float64 2-D arrays of one dtype, any strides.  bias: (N,) or None.
    out: (M, N) with a unit column stride, or None to allocate (then beta must be 0).
    beta == 0 never reads out (NaNs there do not propagate), as in BLAS.
    Returns out.

    Parameters
    ----------
    a, b : numpy.ndarray
        The 2-D operands (float32 or float64, one dtype).
    out : numpy.ndarray, optional
        The (M, N) result buffer.
    trans_a, trans_b : bool, optional
        Use the transpose of a / b (no copy is made).
    alpha, beta : float, optional
        The scalars of ``alpha * op(a) @ op(b) + beta * out``.
    bias : numpy.ndarray, optional
        (N,), added to every row.
    activation : str, optional
        A name in ``fastnn.ops.ACTIVATIONS`` ("identity", "relu", "sigmoid", ...).
    negative_slope : float, optional
        leaky_relu's slope, softplus's beta or elu's alpha.
    engine : {"native", "blas"}, optional
        Override the global engine for this call.
    n_threads : int, optional
        Threads for this call (default: ``get_num_threads()``).

    Returns
    -------
    numpy.ndarray
        out.
    """
    fn = "fastnn.gemm"
    a = C.array(fn, "a", a, 2)
    dt = a.dtype
    b = C.array(fn, "b", b, 2, dt)
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    M, K = opa.shape
    if opb.shape[0] != K:
        raise ValueError(f"{fn}: inner dimensions differ: op(a) is {tuple(opa.shape)} and "
                         f"op(b) is {tuple(opb.shape)}")
    N = opb.shape[1]
    code, slope = _activation(fn, activation, negative_slope)
    bias_ = C.bias(fn, "bias", bias, N, dt)
    if out is None:
        if beta != 0:
            raise ValueError(f"{fn}: beta={beta} needs an `out` array to read")
        out = np.empty((M, N), dt)
    else:
        C.output(fn, "out", out, (M, N), dt, [("a", a), ("b", b), ("bias", bias_)])
    _dense._gemm(opa, opb, out, float(alpha), float(beta), bias_, code, slope,
                 _engine(fn, engine), C.threads(fn, n_threads))
    return out


def linear_forward(x: ArrayLike, W: ArrayLike, b: ArrayLike | None = None,
                   activation: str = "identity", out: Array | None = None, *,
                   negative_slope: float = 0.01, engine: str | None = None,
                   n_threads: int | None = None) -> Array:
    """out = act(x @ W.T + b), the forward of a dense layer in one kernel call.

    x: (batch, in_features); W: (out_features, in_features); b: (out_features,) or None.
    Returns out, (batch, out_features).

    Parameters
    ----------
    x : numpy.ndarray
        (batch, in_features).
    W : numpy.ndarray
        (out_features, in_features).
    b : numpy.ndarray, optional
        (out_features,).
    activation : str, optional
        A name in ``fastnn.ops.ACTIVATIONS`` ("identity", "relu", "sigmoid", ...).
    negative_slope : float, optional
        leaky_relu's slope, softplus's beta or elu's alpha.
    out : numpy.ndarray, optional
        The (batch, out_features) result buffer.
    engine : {"native", "blas"}, optional
        Override the global engine for this call.
    n_threads : int, optional
        Threads for this call (default: ``get_num_threads()``).

    Returns
    -------
    numpy.ndarray
        out.
    """
    fn = "fastnn.linear_forward"
    x, W = C.x_and_W(fn, x, W, ": (out_features, in_features)")
    dt = x.dtype
    M, N = x.shape[0], W.shape[0]
    b_ = C.bias(fn, "b", b, N, dt)
    code, slope = _activation(fn, activation, negative_slope)
    if out is None:
        out = np.empty((M, N), dt)
    else:
        C.output(fn, "out", out, (M, N), dt, [("x", x), ("W", W), ("b", b_)])
    _dense._linear_forward(x, W, b_, code, slope, out, _engine(fn, engine),
                           C.threads(fn, n_threads))
    return out


def linear_backward(grad_out: ArrayLike, x: ArrayLike, W: ArrayLike,
                    y_saved: ArrayLike | None = None, activation: str = "identity",
                    grad_x: Array | None = None, grad_W: Array | None = None,
                    grad_b: Array | None = None, accumulate: bool = False, *,
                    compute_grad_x: bool = True, compute_grad_b: bool = True,
                    negative_slope: float = 0.01, workspace: Array | None = None,
                    engine: str | None = None,
                    n_threads: int | None = None) -> tuple[Array | None, Array, Array | None]:
    """Backward of out = act(x @ W.T + b).

    dz = grad_out * act'(y_saved) (y_saved is the forward output -- the pre-activation
    x @ W.T + b for the activations in SAVES_INPUT; unused for identity), then
    grad_W (+)= dz.T @ x, grad_b (+)= dz summed over the batch (deterministic), and
    grad_x = dz @ W (skipped when compute_grad_x is False).  With accumulate=True the weight
    and bias gradients are added to grad_W / grad_b (which must then be given); otherwise
    they are overwritten.  Missing outputs are allocated.  `workspace`, an optional
    (batch, out_features) buffer, holds dz so steady-state calls allocate nothing.

    Returns (grad_x or None, grad_W, grad_b or None).

    Parameters
    ----------
    grad_out : numpy.ndarray
        (batch, out_features), the gradient w.r.t. the output.
    x : numpy.ndarray
        The forward's input.
    W : numpy.ndarray
        The weight.
    y_saved : numpy.ndarray, optional
        The forward's output (needed unless activation is identity).
    activation : str, optional
        A name in ``fastnn.ops.ACTIVATIONS`` ("identity", "relu", "sigmoid", ...).
    negative_slope : float, optional
        leaky_relu's slope, softplus's beta or elu's alpha.
    grad_x, grad_W, grad_b : numpy.ndarray, optional
        Result buffers.
    accumulate : bool, optional
        Add into grad_W / grad_b instead of overwriting them.
    compute_grad_x, compute_grad_b : bool, optional
        Whether to compute grad_x / grad_b.
    workspace : numpy.ndarray, optional
        A (batch, out_features) buffer for dz.
    engine : {"native", "blas"}, optional
        Override the global engine for this call.
    n_threads : int, optional
        Threads for this call (default: ``get_num_threads()``).

    Returns
    -------
    tuple
        (grad_x or None, grad_W, grad_b or None).
    """
    fn = "fastnn.linear_backward"
    x, W = C.x_and_W(fn, x, W)
    dt = x.dtype
    M, K, N = x.shape[0], x.shape[1], W.shape[0]
    grad_out = C.rowmajor(C.array(fn, "grad_out", grad_out, 2, dt))
    if grad_out.shape != (M, N):
        raise ValueError(f"{fn}: grad_out must have shape {(M, N)} (batch, out_features), "
                         f"got {tuple(grad_out.shape)}")
    code, slope = _activation(fn, activation, negative_slope, backward=True)
    empty2, empty1 = C.EMPTY[dt]
    if code != Activation.IDENTITY:
        if y_saved is None:
            raise ValueError(f"{fn}: activation {activation!r} needs y_saved, the forward "
                             "output")
        y_saved = C.rowmajor(C.array(fn, "y_saved", y_saved, 2, dt))
        if y_saved.shape != (M, N):
            raise ValueError(f"{fn}: y_saved must have shape {(M, N)}, got "
                             f"{tuple(y_saved.shape)}")
        if workspace is None:
            workspace = np.empty((M, N), dt)
        else:
            C.output(fn, "workspace", workspace, (M, N), dt,
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
        C.output(fn, "grad_W", grad_W, (N, K), dt, inputs)
    if compute_grad_b:
        if grad_b is None:
            grad_b = np.empty(N, dt)
        else:
            C.output(fn, "grad_b", grad_b, (N,), dt, inputs + [("grad_W", grad_W)])
    else:
        grad_b = None
    if compute_grad_x:
        if grad_x is None:
            grad_x = np.empty((M, K), dt)
        else:
            C.output(fn, "grad_x", grad_x, (M, K), dt,
                    inputs + [("grad_W", grad_W), ("grad_b", grad_b)])
    else:
        grad_x = None
    _dense._linear_backward(grad_out, x, W, y_saved, code, slope,
                            empty2 if grad_x is None else grad_x, grad_W,
                            empty1 if grad_b is None else grad_b, bool(accumulate), workspace,
                            grad_x is not None, grad_b is not None, _engine(fn, engine),
                            C.threads(fn, n_threads))
    return grad_x, grad_W, grad_b


def activation_forward(x: ArrayLike, activation: str, out: Array | None = None, *,
                       negative_slope: float = 0.01, n_threads: int | None = None) -> Array:
    """out = act(x) elementwise on a 2-D array, with exactly the arithmetic of the fused GEMM
    epilogue (so a fused Linear+activation equals Linear followed by this).  out may be x.

    Parameters
    ----------
    x : numpy.ndarray
        A 2-D float array.
    activation : str
        The activation's name.
    out : numpy.ndarray, optional
        The result buffer (may be x).
    negative_slope : float, optional
        leaky_relu's slope, softplus's beta or elu's alpha.
    n_threads : int, optional
        Threads for this call.

    Returns
    -------
    numpy.ndarray
        out.
    """
    fn = "fastnn.activation_forward"
    x = C.rowmajor(C.array(fn, "x", x, 2))
    code, slope = _activation(fn, activation, negative_slope)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    else:  # out may be x itself (in place), but no other overlap
        C.output(fn, "out", out, x.shape, x.dtype, [] if out is x else [("x", x)])
    nt = C.threads(fn, n_threads)
    if x.size:              # (an empty array of 2**31-1 rows would loop over every row)
        _dense._activation_forward(x, out, code, slope, nt)
    return out


def activation_backward(grad_out: ArrayLike, y_saved: ArrayLike, activation: str,
                        out: Array | None = None, *, negative_slope: float = 0.01,
                        n_threads: int | None = None) -> Array:
    """grad_in = grad_out * act'(y_saved), y_saved being the forward output (the forward
    input for the activations in SAVES_INPUT).  out may be grad_out.

    Parameters
    ----------
    grad_out : numpy.ndarray
        The gradient w.r.t. the output.
    y_saved : numpy.ndarray
        The forward's output (its input for gelu, gelu_tanh, silu and softplus).
    activation : str
        The activation's name.
    out : numpy.ndarray, optional
        The result buffer (may be grad_out).
    negative_slope : float, optional
        leaky_relu's slope, softplus's beta or elu's alpha.
    n_threads : int, optional
        Threads for this call.

    Returns
    -------
    numpy.ndarray
        out.
    """
    fn = "fastnn.activation_backward"
    grad_out = C.rowmajor(C.array(fn, "grad_out", grad_out, 2))
    y_saved = C.rowmajor(C.array(fn, "y_saved", y_saved, 2, grad_out.dtype))
    if y_saved.shape != grad_out.shape:
        raise ValueError(f"{fn}: y_saved has shape {tuple(y_saved.shape)} but grad_out has "
                         f"{tuple(grad_out.shape)}")
    code, slope = _activation(fn, activation, negative_slope, backward=True)
    if out is None:
        out = np.empty(grad_out.shape, grad_out.dtype)
    else:  # out may be grad_out itself (in place), but must not overlap y_saved
        C.output(fn, "out", out, grad_out.shape, grad_out.dtype,
                ([] if out is grad_out else [("grad_out", grad_out)]) + [("y_saved", y_saved)])
    nt = C.threads(fn, n_threads)
    if grad_out.size:
        _dense._activation_backward(grad_out, y_saved, out, code, slope, nt)
    return out
