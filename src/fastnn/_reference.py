"""Plain NumPy references: the oracle of fastnn's kernels, and the NumPy twin networks.

The oracle (activation ... sgd_step, adam_step, rmsprop_step, layer_norm ...
batch_norm_backward), for the tests: clear and slow on purpose, every
function computes in float64 and casts the result back to the dtype of its (first) input.
Nothing in it is optimised, and nothing in it calls fastnn's kernels (it only reads
their table of codes, for the activation names).

The twins, for the benchmark, the main job, the examples and the tests: the same networks
written by hand in NumPy as a NumPy user would, in the dtype of their inputs --

  two_layer_step / two_layer_train   the CS231n lecture's two-layer network ("a 2-layer
                                     net in 20 lines of NumPy"): sigmoid, no biases, sum of
                                     squared errors, plain gradient descent
  NumpyMLP                           ReLU MLP, softmax cross-entropy, torch-style SGD
  NumpyAdamMLP                       the same trained with Adam
  NumpyResidualMLP                   the same with residual blocks (relu(x + W2 relu(W1 x)))

Weights come in fastnn's layout, W (out_features, in_features); the twins keep W.T.

Activations: "identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh",
"silu", "softplus", "elu" (negative_slope: leaky_relu's slope, softplus's beta, elu's alpha).

Dropout's twin (dropout_key, dropout_bits, dropout_mask, dropout): the counter-based RNG of
fastnn/_kernels/dropout.pyx in NumPy uint64 arithmetic, bit for bit.
"""
import numpy as np

from ._kernels._core import Activation

__all__ = ["ACTIVATIONS", "activation", "activation_grad", "softmax", "softmax_grad", "gemm", "linear_forward",
           "linear_backward", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
           "bce_loss", "bce_with_logits_loss", "cross_entropy_loss", "nll_loss", "svm_loss",
           "sgd_step",
           "adam_step", "rmsprop_step", "layer_norm", "layer_norm_backward", "batch_norm",
           "batch_norm_backward",
           "two_layer_step", "two_layer_train", "NumpyMLP", "NumpyAdamMLP", "NumpyResidualMLP",
           "NumpyModernMLP", "dropout_key", "dropout_bits", "dropout_mask", "dropout"]

# the activation names, in the order of their codes (the table in fastnn/_kernels/fnn_types.h)
ACTIVATIONS = tuple(a.name.lower() for a in Activation)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp is only ever taken of -|z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _ndtr(z):
    """The standard normal CDF, erfc-based so the left tail keeps its relative accuracy."""
    from math import erfc
    return 0.5 * np.vectorize(erfc, otypes=[np.float64])(-z / np.sqrt(2.0))


_GELU_K, _GELU_C, _SOFTPLUS_THRESHOLD = np.sqrt(2.0 / np.pi), 0.044715, 20.0


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
    if name == "gelu":
        return z * _ndtr(z)
    if name == "gelu_tanh":
        return z * _sigmoid(2.0 * _GELU_K * (z + _GELU_C * z ** 3))
    if name == "silu":
        return z * _sigmoid(z)
    if name == "softplus":
        u = negative_slope * z
        return np.where(u > _SOFTPLUS_THRESHOLD, z,
                        (np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))) / negative_slope)
    if name == "elu":
        return np.where(z > 0, z, negative_slope * np.expm1(np.minimum(z, 0.0)))
    raise ValueError(f"unknown activation {name!r}")


def _activation_grad64(g, y, name, negative_slope):
    # y: the saved forward output, or the input for gelu, gelu_tanh, silu and softplus
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
    if name == "gelu":
        return g * (_ndtr(y) + y * np.exp(-0.5 * y * y) / np.sqrt(2.0 * np.pi))
    if name == "gelu_tanh":
        u = _GELU_K * (y + _GELU_C * y ** 3)
        t = np.tanh(u)
        return g * (0.5 * (1.0 + t) + 0.5 * y * (1.0 - t * t) * _GELU_K *
                    (1.0 + 3.0 * _GELU_C * y * y))
    if name == "silu":
        s = _sigmoid(y)
        return g * (s * (1.0 + y * (1.0 - s)))
    if name == "softplus":
        u = negative_slope * y
        return g * np.where(u > _SOFTPLUS_THRESHOLD, 1.0, _sigmoid(u))
    if name == "elu":
        return g * np.where(y > 0, 1.0, y + negative_slope)
    raise ValueError(f"unknown activation {name!r}")


def activation(z, name, negative_slope=0.01):
    """act(z) elementwise."""
    z = np.asarray(z)
    with np.errstate(over="ignore", invalid="ignore"):
        return _activation64(_f64(z), name, negative_slope).astype(z.dtype)


def activation_grad(grad_out, y, name, negative_slope=0.01):
    """grad_out * act'(.) expressed through the saved forward OUTPUT y (the saved INPUT for
    gelu, gelu_tanh, silu and softplus, fastnn.ops.SAVES_INPUT)."""
    grad_out = np.asarray(grad_out)
    with np.errstate(over="ignore", invalid="ignore"):
        return _activation_grad64(_f64(grad_out), _f64(y), name,
                                  negative_slope).astype(grad_out.dtype)


def softmax(x, log=False):
    """softmax (log_softmax with log=True) over the last axis, each row's maximum
    subtracted."""
    x = np.asarray(x)
    X = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        z = X - X.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return (z - lse if log else np.exp(z - lse)).astype(x.dtype)


def softmax_grad(grad_out, y, log=False):
    """The input gradient of softmax / log_softmax from its saved output y:
    y (g - sum(g y)), or g - exp(y) sum(g)."""
    grad_out = np.asarray(grad_out)
    G, Y = _f64(grad_out), _f64(y)
    if log:
        out = G - np.exp(Y) * G.sum(axis=-1, keepdims=True)
    else:
        out = Y * (G - (G * Y).sum(axis=-1, keepdims=True))
    return out.astype(grad_out.dtype)


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
# Every loss returns (value, gradient w.r.t. pred).  sample_weight (batch,) multiplies row
# i's loss; reduction="mean" then divides by sum(sample_weight) (times the elements per row
# of an elementwise loss; times the label's class weight for weighted classification).
def _elementwise(pred, l, dl, reduction, sample_weight):
    """Reduce the per-element losses l (and derivatives dl) of pred (float64 arrays)."""
    pred = np.asarray(pred)
    n = pred.shape[0]
    per_row = l.size // n
    if sample_weight is None:
        w = np.ones(n)
        denom = l.size
    else:
        w = _f64(sample_weight)
        denom = per_row * w.sum()
    wb = w.reshape((n,) + (1,) * (pred.ndim - 1))
    scale = 1.0 / denom if reduction == "mean" else 1.0
    return scale * float(np.sum(wb * l)), (scale * wb * dl).astype(pred.dtype)


def mse_loss(pred, target, reduction="mean", sample_weight=None):
    """(loss, grad w.r.t. pred) of sum((pred - target)**2), / pred.size for "mean"."""
    d = _f64(pred) - _f64(target)
    return _elementwise(pred, d * d, 2.0 * d, reduction, sample_weight)


def l1_loss(pred, target, reduction="mean", sample_weight=None):
    """|pred - target|; subgradient sign(d), 0 at 0."""
    d = _f64(pred) - _f64(target)
    return _elementwise(pred, np.abs(d), np.sign(d), reduction, sample_weight)


def huber_loss(pred, target, delta=1.0, reduction="mean", sample_weight=None):
    """0.5 d**2 where |d| < delta, else delta (|d| - 0.5 delta)."""
    d = _f64(pred) - _f64(target)
    quad = np.abs(d) < delta
    l = np.where(quad, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
    dl = np.where(quad, d, delta * np.sign(d))
    return _elementwise(pred, l, dl, reduction, sample_weight)


def smooth_l1_loss(pred, target, beta=1.0, reduction="mean", sample_weight=None):
    """0.5 d**2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0: L1)."""
    if beta == 0:
        return l1_loss(pred, target, reduction, sample_weight)
    d = _f64(pred) - _f64(target)
    quad = np.abs(d) < beta
    l = np.where(quad, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)
    dl = np.where(quad, d / beta, np.sign(d))
    return _elementwise(pred, l, dl, reduction, sample_weight)


def bce_loss(pred, target, reduction="mean", sample_weight=None):
    """-[t log p + (1 - t) log(1 - p)], logs clamped at -100; torch's gradient
    (p - t) / max(p (1 - p), float32(1e-12))."""
    p, t = _f64(pred), _f64(target)
    with np.errstate(divide="ignore"):
        lp = np.maximum(np.log(p), -100.0)
        lq = np.maximum(np.log(1.0 - p), -100.0)
    l = -(t * lp + (1.0 - t) * lq)
    dl = (p - t) / np.maximum(p * (1.0 - p), float(np.float32(1e-12)))
    return _elementwise(pred, l, dl, reduction, sample_weight)


def bce_with_logits_loss(pred, target, pos_weight=None, reduction="mean",
                         sample_weight=None):
    """-[pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], with -log sigmoid(x) =
    log1p(exp(-|x|)) + max(-x, 0); pos_weight broadcasts over the batch axis."""
    x, t = _f64(pred), _f64(target)
    pw = np.ones(x.shape[1:] or (1,)) if pos_weight is None else _f64(pos_weight)
    if x.ndim == 1:
        pw = np.broadcast_to(pw, (1,))[0]
    lw = 1.0 + (pw - 1.0) * t
    l = (1.0 - t) * x + lw * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0))
    dl = _sigmoid(x) * lw - pw * t
    return _elementwise(pred, l, dl, reduction, sample_weight)


def _log_softmax(s):
    z = s - s.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _classification(scores, labels, reduction, weight, sample_weight):
    """(row weights, class weights, scale) of a (weighted) classification loss."""
    n, c = np.shape(scores)
    cw = np.ones(c) if weight is None else _f64(weight)
    sw = np.ones(n) if sample_weight is None else _f64(sample_weight)
    scale = 1.0 / float(np.sum(sw * cw[labels])) if reduction == "mean" else 1.0
    return sw, cw, scale


def cross_entropy_loss(scores, labels, reduction="mean", weight=None, label_smoothing=0.0,
                       sample_weight=None):
    """(loss, grad) of torch's cross-entropy: row i's loss is (1 - eps) w_y (-log p_y) +
    (eps / C) sum_c w_c (-log p_c) (w = weight, 1 without), times sample_weight[i]; "mean"
    divides by sum_i sample_weight[i] w_{y_i} (the batch size without weights)."""
    scores = np.asarray(scores)
    s = _f64(scores)
    n, c = s.shape
    logp = _log_softmax(s)
    rows = np.arange(n)
    if weight is None and not label_smoothing and sample_weight is None:
        scale = 1.0 / n if reduction == "mean" else 1.0
        loss = -scale * float(logp[rows, labels].sum())
        grad = np.exp(logp)
        grad[rows, labels] -= 1.0
        return loss, (scale * grad).astype(scores.dtype)
    sw, cw, scale = _classification(s, labels, reduction, weight, sample_weight)
    eps = float(label_smoothing)
    q = np.zeros((n, c))
    q[rows, labels] = (1.0 - eps) * cw[labels]
    q += eps / c * cw[None, :]              # the weighted target of each row
    loss = scale * float(np.sum(sw * -(q * logp).sum(axis=1)))
    grad = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
    return loss, (scale * sw[:, None] * grad).astype(scores.dtype)


def nll_loss(logp, labels, reduction="mean", weight=None, sample_weight=None):
    """(loss, grad) of -w_{y_i} logp[i, y_i] (times sample_weight[i]); "mean" divides by
    sum_i sample_weight[i] w_{y_i}."""
    logp = np.asarray(logp)
    s = _f64(logp)
    n = s.shape[0]
    sw, cw, scale = _classification(s, labels, reduction, weight, sample_weight)
    rows = np.arange(n)
    r = sw * cw[labels]
    grad = np.zeros_like(s)
    grad[rows, labels] = -r
    return scale * float(np.sum(-r * s[rows, labels])), (scale * grad).astype(logp.dtype)


def svm_loss(scores, labels, margin=1.0, reduction="mean", sample_weight=None):
    """(loss, subgradient) of the multiclass hinge sum_{j != y} max(0, s_j - s_y + margin),
    mean over rows for "mean"; a term counts as active only when > 0."""
    scores = np.asarray(scores)
    s = _f64(scores)
    n = s.shape[0]
    rows = np.arange(n)
    sw = np.ones(n) if sample_weight is None else _f64(sample_weight)
    marg = s - s[rows, labels][:, None] + margin
    marg[rows, labels] = 0.0
    active = marg > 0
    scale = 1.0 / float(sw.sum()) if reduction == "mean" else 1.0
    loss = scale * float(np.sum(sw * np.where(active, marg, 0.0).sum(axis=1)))
    grad = active.astype(np.float64)
    grad[rows, labels] = -active.sum(axis=1)
    return loss, (scale * sw[:, None] * grad).astype(scores.dtype)


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


def adam_step(p, g, m, v, vmax, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              amsgrad=False, maximize=False, decoupled=False):
    """Step t (1, 2, ...) of torch.optim.Adam (AdamW with decoupled=True), in float64:
    returns (p, m, v, vmax) cast back to p's dtype.  Pass zeros for the state of step 1."""
    dt = np.asarray(p).dtype
    p, g, m, v, vmax = (_f64(a) for a in (p, g, m, v, vmax))
    b1, b2 = betas
    d = -g if maximize else g
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            d = d + weight_decay * p
    m = m + (1 - b1) * (d - m)
    v = b2 * v + (1 - b2) * d * d
    vmax = np.maximum(vmax, v)
    den = np.sqrt(vmax if amsgrad else v) / np.sqrt(1 - b2 ** t) + eps
    p = p - lr / (1 - b1 ** t) * m / den
    return tuple(a.astype(dt) for a in (p, m, v, vmax))


def rmsprop_step(p, g, sq, ga, buf, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, maximize=False):
    """One torch.optim.RMSprop step, in float64: returns (p, square_avg, grad_avg,
    momentum_buffer) cast back to p's dtype.  Pass zeros for the first step's state."""
    dt = np.asarray(p).dtype
    p, g, sq, ga, buf = (_f64(a) for a in (p, g, sq, ga, buf))
    d = -g if maximize else g
    if weight_decay != 0:
        d = d + weight_decay * p
    sq = alpha * sq + (1 - alpha) * d * d
    if centered:
        ga = ga + (1 - alpha) * (d - ga)
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    if momentum > 0:
        buf = momentum * buf + d / avg
        p = p - lr * buf
    else:
        p = p - lr * d / avg
    return tuple(a.astype(dt) for a in (p, sq, ga, buf))


# --------------------------------------------------------------------- normalization
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm over the last axis: (x - mean) / sqrt(var + eps) *
    weight + bias, the biased variance per row."""
    x64 = _f64(x)
    mean = x64.mean(axis=-1, keepdims=True)
    y = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y.astype(np.asarray(x).dtype)


def layer_norm_backward(grad_out, x, weight=None, eps=1e-5):
    """(grad_x, grad_weight, grad_bias) of layer_norm; the parameter gradients summed over
    every row."""
    x64, g = _f64(x), _f64(grad_out)
    n = x64.shape[-1]
    mean = x64.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x64 - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (x64 - mean) * rstd
    gh = g * _f64(weight) if weight is not None else g
    gx = rstd * (gh - gh.sum(-1, keepdims=True) / n - xhat * (gh * xhat).sum(-1, keepdims=True) / n)
    rows = g.reshape(-1, n)
    dt = np.asarray(x).dtype
    return (gx.astype(dt), (rows * xhat.reshape(-1, n)).sum(0).astype(dt),
            rows.sum(0).astype(dt))


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=True, momentum=0.1, eps=1e-5, num_batches_tracked=0):
    """torch.nn.functional.batch_norm on (N, C): returns (y, running_mean, running_var,
    num_batches_tracked) -- the running statistics updated (new arrays) in training mode
    with the unbiased variance (momentum None: the cumulative average), else unchanged.
    Training mode (or no running statistics) normalizes with the batch's biased variance."""
    x64 = _f64(x)
    dt = np.asarray(x).dtype
    rm, rv = running_mean, running_var
    if training or rm is None:
        mean, var = x64.mean(0), x64.var(0)
        if training and rm is not None:
            num_batches_tracked += 1
            f = 1.0 / num_batches_tracked if momentum is None else momentum
            m = x64.shape[0]
            rm = (f * mean + (1 - f) * _f64(rm)).astype(dt)
            rv = (f * var * m / (m - 1) + (1 - f) * _f64(rv)).astype(dt)
    else:
        mean, var = _f64(rm), _f64(rv)
    y = (x64 - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y.astype(dt), rm, rv, num_batches_tracked


def batch_norm_backward(grad_out, x, running_var=None, weight=None, training=True, eps=1e-5,
                        running_mean=None):
    """(grad_x, grad_weight, grad_bias) of batch_norm: through the batch statistics in
    training mode (or without running statistics), else with them as constants."""
    x64, g = _f64(x), _f64(grad_out)
    m = x64.shape[0]
    w = _f64(weight) if weight is not None else 1.0
    if training or running_var is None:
        mean, var = x64.mean(0), x64.var(0)
    else:
        mean, var = _f64(running_mean), _f64(running_var)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean) * rstd
    gb, gw = g.sum(0), (g * xhat).sum(0)
    if training or running_var is None:
        gx = w * rstd * (g - gb / m - xhat * gw / m)
    else:
        gx = w * rstd * g
    dt = np.asarray(x).dtype
    return gx.astype(dt), gw.astype(dt), gb.astype(dt)


# ------------------------------------------------------------------------ the NumPy twins
def two_layer_step(x, y, w1, w2, lr):
    """One step of the CS231n lecture's network, its loop body verbatim: w1 (D_in, H) and
    w2 (H, D_out) are updated in place; returns the loss before the update."""
    # randn weights saturate the sigmoid: exp overflows to inf there, h = 0 (correct)
    with np.errstate(over="ignore"):
        h = 1 / (1 + np.exp(-x.dot(w1)))
    y_pred = h.dot(w2)
    loss = np.square(y_pred - y).sum()

    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h.T.dot(grad_y_pred)
    grad_h = grad_y_pred.dot(w2.T)
    grad_w1 = x.T.dot(grad_h * h * (1 - h))

    w1 -= lr * grad_w1
    w2 -= lr * grad_w2
    return loss


def two_layer_train(x, y, w1, w2, steps, lr=1e-4):
    """`steps` steps of the lecture's network from copies of w1, w2 (the lecture: lr 1e-4).
    Returns (the loss at every step as a float64 array, final w1, final w2)."""
    w1, w2 = w1.copy(), w2.copy()
    losses = np.empty(steps)
    for t in range(steps):
        losses[t] = two_layer_step(x, y, w1, w2, lr)
    return losses, w1, w2


class NumpyMLP:
    """A fully-connected network in hand-written NumPy: ReLU hidden layers, softmax
    cross-entropy (mean over the batch), torch-style SGD (with momentum: buf = g on the
    first step, then buf = momentum * buf + g; p -= lr * buf).

    ``weights``: [(W (out, in), b or None)] per Linear layer, copied.  ``from_model`` takes
    them from a chain of Linear layers (anything iterable whose layers with a ``weight``
    are the Linears, e.g. a fastnn Sequential of Linear and ReLU).
    """

    def __init__(self, weights, lr, momentum=0.0):
        self.W = [np.array(W).T.copy() for W, _ in weights]            # (in, out)
        self.b = [None if b is None else np.array(b) for _, b in weights]
        self.lr, self.momentum = lr, momentum
        self.buf = None

    @classmethod
    def from_model(cls, model, lr, momentum=0.0):
        lins = [m for m in model if hasattr(m, "weight")]
        return cls([(m.weight.data, None if m.bias is None else m.bias.data) for m in lins],
                   lr, momentum)

    def params(self):
        """The parameters in the order of the gradients _grads returns."""
        return [a for W, b in zip(self.W, self.b) for a in (W, b) if a is not None]

    def logits(self, x):
        return self._forward(x)[-1]

    def _forward(self, x):
        """Every layer's output (the input first)."""
        hs = [x]
        last = len(self.W) - 1
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = _affine(hs[-1], W, b)
            hs.append(np.maximum(z, 0) if i < last else z)
        return hs

    def _grads(self, hs, d):
        """Parameter gradients from the saved outputs hs and the gradient d of the logits."""
        grads = []
        for i in range(len(self.W) - 1, -1, -1):
            _layer_grads(grads, self.b[i], hs[i], d)
            if i:
                d = (d @ self.W[i].T) * (hs[i] > 0)
        grads.reverse()
        return grads

    def step(self, x, y):
        """One training step on a batch; returns the loss before the update."""
        hs = self._forward(x)
        loss, d = _softmax_ce(hs[-1], y)
        self._update(self._grads(hs, d))
        return loss

    def _update(self, grads):
        params = self.params()
        if self.momentum == 0:
            for p, g in zip(params, grads):
                p -= self.lr * g
            return
        if self.buf is None:
            self.buf = [g.copy() for g in grads]
        else:
            for bf, g in zip(self.buf, grads):
                bf *= self.momentum
                bf += g
        for p, bf in zip(params, self.buf):
            p -= self.lr * bf

    def fit(self, X, y, batch_size, epochs, seed):
        """Minibatch training in the Trainer's order (its seeded shuffle of (seed, epoch),
        the one thing here taken from fastnn, so that both see the same minibatches)."""
        from ._kernels.step import shuffle
        n = X.shape[0]
        perm = np.empty(n, np.int64)
        for e in range(epochs):
            shuffle(perm, seed, e)
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                self.step(X[idx], y[idx])

    def accuracy(self, X, y):
        return float(np.mean(self.logits(X).argmax(axis=1) == y))


def _adam_update(net, params, grads, weight_decay):
    """The twins' Adam (AdamW with weight_decay > 0: decoupled) step in place, as a NumPy
    user writes it; the state (net.m, net.v, net.t) lives on the twin."""
    b1, b2 = net.betas
    if net.m is None:
        net.m = [np.zeros_like(p) for p in params]
        net.v = [np.zeros_like(p) for p in params]
    net.t += 1
    step = net.lr / (1 - b1 ** net.t)
    bc2 = np.sqrt(1 - b2 ** net.t)
    for p, g, m, v in zip(params, grads, net.m, net.v):
        if weight_decay:
            p *= 1 - net.lr * weight_decay
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        p -= step * m / (np.sqrt(v) / bc2 + net.eps)


class NumpyAdamMLP(NumpyMLP):
    """NumpyMLP trained with Adam written by hand as a NumPy user would (torch.optim.Adam's
    defaults: betas (0.9, 0.999), eps 1e-8, no weight decay), in place on every array."""

    def __init__(self, weights, lr, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(weights, lr)
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = self.v = None

    @classmethod
    def from_model(cls, model, lr, betas=(0.9, 0.999), eps=1e-8):
        lins = [m for m in model if hasattr(m, "weight")]
        return cls([(m.weight.data, None if m.bias is None else m.bias.data) for m in lins],
                   lr, betas, eps)

    def _update(self, grads):
        _adam_update(self, self.params(), grads, 0.0)


class NumpyResidualMLP(NumpyMLP):
    """A residual MLP in hand-written NumPy::

        h = relu(W_0 x + b_0)
        h = relu(h + W_2k relu(W_2k-1 h + b_2k-1) + b_2k)      block k = 1 .. blocks
        logits = W_last h + b_last

    softmax cross-entropy and SGD as NumpyMLP.  ``weights``: [(W, b)] in that order (the
    stem, two per block, the head), so 2 * blocks + 2 of them.
    """

    def __init__(self, weights, lr, momentum=0.0):
        if len(weights) < 2 or len(weights) % 2:
            raise ValueError("NumpyResidualMLP: weights are the stem, two per block and "
                             f"the head, an even number >= 2, got {len(weights)}")
        super().__init__(weights, lr, momentum)

    def _forward(self, x):
        """[x, h0, (a1, h1), (a2, h2), ..., logits]: a the block's inner ReLU output, h
        every block's output."""
        W, b = self.W, self.b
        h = np.maximum(_affine(x, W[0], b[0]), 0)
        hs = [x, h]
        for i in range(1, len(W) - 1, 2):
            a = np.maximum(_affine(h, W[i], b[i]), 0)
            z = _affine(a, W[i + 1], b[i + 1])
            z += h                                             # the skip connection
            h = np.maximum(z, 0)
            hs += [a, h]
        hs.append(_affine(h, W[-1], b[-1]))
        return hs

    def _grads(self, hs, d):
        W, b = self.W, self.b
        grads = []
        last = len(W) - 1
        _layer_grads(grads, b[last], hs[-2], d)
        dh = d @ W[last].T
        for i in range(last - 2, 0, -2):      # blocks, last first: layers i, i + 1
            h_in, a, h_out = hs[i], hs[i + 1], hs[i + 2]
            dz = dh * (h_out > 0)
            _layer_grads(grads, b[i + 1], a, dz)
            da = (dz @ W[i + 1].T) * (a > 0)
            _layer_grads(grads, b[i], h_in, da)
            dh = dz + da @ W[i].T             # the skip's gradient plus the branch's
        _layer_grads(grads, b[0], hs[0], dh * (hs[1] > 0))
        grads.reverse()
        return grads


def _layer_grads(grads, b, x, dz):
    """Append the gradients of a layer z = x @ W + b given dz, in reverse order (the list
    is built from the last layer back, then reversed): grad_b (if b), then grad_W."""
    if b is not None:
        grads.append(dz.sum(axis=0))
    grads.append(x.T @ dz)


def _affine(x, W, b):
    z = x @ W
    if b is not None:
        z += b
    return z


def _softmax_ce(scores, y):
    """(loss, gradient w.r.t. scores) of the mean softmax cross-entropy, in the scores'
    dtype."""
    s = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    n = scores.shape[0]
    rows = np.arange(n)
    loss = -np.log(p[rows, y]).mean()
    p[rows, y] -= 1
    p /= n
    return loss, p


class NumpyModernMLP:
    """The "modern MLP" of the benchmark in hand-written NumPy, as a NumPy user would write
    it (in the inputs' dtype): blocks Linear -> LayerNorm -> GELU (exact, scipy.special.erf)
    -> Dropout, a last Linear, mean softmax cross-entropy, AdamW (torch's defaults:
    betas (0.9, 0.999), eps 1e-8, decoupled weight decay).

    ``weights``: [(W (out, in), b)] per Linear; ``norms``: [(gamma, beta)] per LayerNorm;
    ``drop_seeds``: one seed per Dropout, whose masks are fastnn's (dropout_mask: the same
    counter-based bits), so that the twin's losses match fastnn's step by step.
    """

    def __init__(self, weights, norms, drop_seeds, p, lr, weight_decay=1e-2,
                 betas=(0.9, 0.999), eps=1e-8, ln_eps=1e-5):
        from scipy.special import erf
        self._erf = erf
        self.W = [np.array(W).T.copy() for W, _ in weights]            # (in, out)
        self.b = [np.array(b) for _, b in weights]
        self.g = [np.array(g) for g, _ in norms]
        self.be = [np.array(be) for _, be in norms]
        self.seeds, self.p, self.step_count = list(drop_seeds), p, 0
        self.lr, self.wd, self.betas, self.eps, self.ln_eps = lr, weight_decay, betas, eps, \
            ln_eps
        self.t, self.m, self.v = 0, None, None

    def params(self):
        out = []
        for i in range(len(self.W)):
            out += [self.W[i], self.b[i]]
            if i < len(self.g):
                out += [self.g[i], self.be[i]]
        return out

    def step(self, x, y):
        """One training step on a batch; returns the loss before the update."""
        dt = x.dtype
        h, saved = x, []
        for i in range(len(self.g)):
            z = h @ self.W[i] + self.b[i]
            mu = z.mean(axis=1, keepdims=True)
            zc = z - mu
            rstd = 1.0 / np.sqrt((zc * zc).mean(axis=1, keepdims=True) + dt.type(self.ln_eps))
            xhat = zc * rstd
            n = xhat * self.g[i] + self.be[i]
            cdf = 0.5 * (1.0 + self._erf(n * dt.type(1 / np.sqrt(2.0))))
            a = n * cdf
            mask = dropout_mask(a.shape, self.seeds[i], self.step_count, self.p).astype(dt)
            saved.append((h, xhat, rstd, n, cdf, mask))
            h = a * mask
        self.step_count += 1
        loss, d = _softmax_ce(h @ self.W[-1] + self.b[-1], y)
        grads = [d.sum(axis=0), h.T @ d]                # b, W of the last layer (reversed)
        d = d @ self.W[-1].T
        for i in range(len(self.g) - 1, -1, -1):
            hin, xhat, rstd, n, cdf, mask = saved[i]
            d = d * mask
            pdf = np.exp(-0.5 * n * n) * dt.type(1 / np.sqrt(2.0 * np.pi))
            d = d * (cdf + n * pdf)                                     # GELU'
            grads += [d.sum(axis=0), (d * xhat).sum(axis=0)]          # beta, gamma
            dxh = d * self.g[i]
            d = rstd * (dxh - dxh.mean(axis=1, keepdims=True) -
                        xhat * (dxh * xhat).mean(axis=1, keepdims=True))
            grads += [d.sum(axis=0), hin.T @ d]                        # b, W
            if i:
                d = d @ self.W[i].T
        grads.reverse()
        self._update(grads)
        return loss

    def _update(self, grads):
        _adam_update(self, self.params(), grads, self.wd)


# ------------------------------------------------------------------------------ Dropout
_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    """SplitMix64's finalizer, on Python ints or uint64 arrays (wrapping arithmetic)."""
    if isinstance(z, np.ndarray):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def dropout_key(seed, step):
    """The key of a Dropout's forward number `step` with seed `seed`."""
    return _mix64((_mix64(seed ^ 0x5851F42D4C957F2D) + step * _GOLDEN) & _U64)


def dropout_bits(shape, key):
    """uint32 bits of each element of a value of `shape` (flat index i: the high half of
    mix64(key + (i + 1) * golden))."""
    n = int(np.prod(shape))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + i * np.uint64(_GOLDEN)
        return (_mix64(z) >> np.uint64(32)).astype(np.uint32).reshape(shape)


def dropout_mask(shape, seed, step, p):
    """The float64 mask of that forward: 1 / (1 - p) where kept (bits >= floor(p * 2**32)),
    0 where dropped."""
    keep = dropout_bits(shape, dropout_key(seed, step)) >= np.uint32(int(p * 2.0**32))
    return np.where(keep, 1.0 / (1.0 - p), 0.0)


def dropout(x, seed, step, p):
    """Dropout's training-mode forward (and backward, applied to the gradient): x * mask,
    in x's dtype (the scale rounded to it first, as the kernel)."""
    m = dropout_mask(x.shape, seed, step, p).astype(x.dtype)
    with np.errstate(invalid="ignore"):         # inf * 0 = nan, as the kernel (and torch)
        return x * m
