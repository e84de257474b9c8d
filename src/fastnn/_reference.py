"""Plain NumPy oracle of fastnn's kernels, for the tests.

Clear and slow on purpose: every function computes in float64 and casts the result back to
the dtype of its (first) input.  Nothing here is optimised, and nothing here calls fastnn's
kernels (it only reads their table of codes, for the activation names).

Activations: "identity", "relu", "leaky_relu", "sigmoid", "tanh".
"""
import numpy as np

from ._kernels._core import Activation

__all__ = ["ACTIVATIONS", "activation", "activation_grad", "gemm", "linear_forward",
           "linear_backward", "mse_loss", "cross_entropy_loss", "svm_loss", "sgd_step"]

# the activation names, in the order of their codes (the table in fastnn/_kernels/fnn_types.h)
ACTIVATIONS = tuple(a.name.lower() for a in Activation)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp is only ever taken of -|z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _activation64(z, name, negative_slope):
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.where(z < 0, 0.0, z)          # max(z, 0), NaN stays NaN
    if name == "leaky_relu":
        return np.where(z < 0, negative_slope * z, z)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    raise ValueError(f"unknown activation {name!r}")


def _activation_grad64(g, y, name, negative_slope):
    if name == "identity":
        return g.copy()
    if name == "relu":
        return g * (y > 0)
    if name == "leaky_relu":
        return g * np.where(y > 0, 1.0, negative_slope)
    if name == "sigmoid":
        return g * (y * (1.0 - y))
    if name == "tanh":
        return g * (1.0 - y * y)
    raise ValueError(f"unknown activation {name!r}")


def activation(z, name, negative_slope=0.01):
    """act(z) elementwise."""
    z = np.asarray(z)
    with np.errstate(over="ignore", invalid="ignore"):
        return _activation64(_f64(z), name, negative_slope).astype(z.dtype)


def activation_grad(grad_out, y, name, negative_slope=0.01):
    """grad_out * act'(.) expressed through the saved forward OUTPUT y."""
    grad_out = np.asarray(grad_out)
    with np.errstate(over="ignore", invalid="ignore"):
        return _activation_grad64(_f64(grad_out), _f64(y), name,
                                  negative_slope).astype(grad_out.dtype)


def gemm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None,
         activation="identity", negative_slope=0.01):
    """act(alpha * op(a) @ op(b) + beta * c + bias); beta == 0 never reads c."""
    a = np.asarray(a)
    dt = a.dtype
    A = _f64(a).T if trans_a else _f64(a)
    B = _f64(b).T if trans_b else _f64(b)
    M, K = A.shape
    K2, N = B.shape
    if K != K2:
        raise ValueError(f"inner dimensions differ: {A.shape} and {B.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        if K == 0:
            z = np.zeros((M, N))
        else:
            z = alpha * (A @ B)
        if beta != 0:
            if c is None:
                raise ValueError("beta != 0 needs c")
            z = z + beta * _f64(c)
        if bias is not None:
            z = z + _f64(bias)[None, :]
        return _activation64(z, activation, negative_slope).astype(dt)


def linear_forward(x, W, b=None, activation="identity", negative_slope=0.01):
    """act(x @ W.T + b); W is (out_features, in_features)."""
    x = np.asarray(x)
    X, Wt = _f64(x), _f64(W)
    with np.errstate(over="ignore", invalid="ignore"):
        z = X @ Wt.T if X.shape[1] else np.zeros((X.shape[0], Wt.shape[0]))
        if b is not None:
            z = z + _f64(b)[None, :]
        return _activation64(z, activation, negative_slope).astype(x.dtype)


def linear_backward(grad_out, x, W, y, activation="identity", negative_slope=0.01):
    """(grad_x, grad_W, grad_b) of out = act(x @ W.T + b), y being the saved output."""
    x = np.asarray(x)
    dt = x.dtype
    G, X, Wt = _f64(grad_out), _f64(x), _f64(W)
    Y = _f64(y) if y is not None else np.zeros_like(G)
    dz = _activation_grad64(G, Y, activation, negative_slope)
    M, K = X.shape
    N = Wt.shape[0]
    grad_W = dz.T @ X if M else np.zeros((N, K))
    grad_b = dz.sum(axis=0)
    grad_x = dz @ Wt if N else np.zeros((M, K))
    return grad_x.astype(dt), grad_W.astype(dt), grad_b.astype(dt)


# ------------------------------------------------------------------ losses and optimizer
def mse_loss(pred, target, reduction="mean"):
    """(loss, grad w.r.t. pred) of sum((pred - target)**2), / pred.size for "mean"."""
    pred = np.asarray(pred)
    d = _f64(pred) - _f64(target)
    scale = 1.0 / d.size if reduction == "mean" else 1.0
    return scale * float(np.sum(d * d)), (2.0 * scale * d).astype(pred.dtype)


def cross_entropy_loss(scores, labels, reduction="mean"):
    """(loss, grad) of -log softmax(scores)[label], mean over rows for "mean"."""
    scores = np.asarray(scores)
    s = _f64(scores)
    n = s.shape[0]
    z = s - s.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    scale = 1.0 / n if reduction == "mean" else 1.0
    loss = -scale * float(logp[rows, labels].sum())
    grad = np.exp(logp)
    grad[rows, labels] -= 1.0
    return loss, (scale * grad).astype(scores.dtype)


def svm_loss(scores, labels, margin=1.0, reduction="mean"):
    """(loss, subgradient) of the multiclass hinge sum_{j != y} max(0, s_j - s_y + margin),
    mean over rows for "mean"; a term counts as active only when > 0."""
    scores = np.asarray(scores)
    s = _f64(scores)
    n = s.shape[0]
    rows = np.arange(n)
    marg = s - s[rows, labels][:, None] + margin
    marg[rows, labels] = 0.0
    active = marg > 0
    scale = 1.0 / n if reduction == "mean" else 1.0
    loss = scale * float(np.where(active, marg, 0.0).sum())
    grad = active.astype(np.float64)
    grad[rows, labels] = -active.sum(axis=1)
    return loss, (scale * grad).astype(scores.dtype)


def sgd_step(p, g, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
             maximize=False):
    """One torch.optim.SGD step, in float64: returns (new p, new momentum buffer or None).
    Pass buf=None on the first step."""
    dt = np.asarray(p).dtype
    p, g = _f64(p), _f64(g)
    d = -g if maximize else g
    if weight_decay != 0:
        d = d + weight_decay * p
    if momentum != 0:
        buf = d.copy() if buf is None else momentum * _f64(buf) + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    p = p - lr * d
    return p.astype(dt), (None if buf is None else np.asarray(buf).astype(dt))
