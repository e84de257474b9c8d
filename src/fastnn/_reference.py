"""Plain NumPy references: the oracle of fastnn's kernels, and the NumPy twin networks.

The oracle (activation ... sgd_step, adam_step, rmsprop_step), for the tests: clear and slow on purpose, every
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

Activations: "identity", "relu", "leaky_relu", "sigmoid", "tanh".
"""
import numpy as np

from ._kernels._core import Activation

__all__ = ["ACTIVATIONS", "activation", "activation_grad", "gemm", "linear_forward",
           "linear_backward", "mse_loss", "cross_entropy_loss", "svm_loss", "sgd_step",
           "adam_step", "rmsprop_step",
           "two_layer_step", "two_layer_train", "NumpyMLP", "NumpyAdamMLP", "NumpyResidualMLP"]

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
        b1, b2 = self.betas
        params = self.params()
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        step = self.lr / (1 - b1 ** self.t)
        bc2 = np.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= step * m / (np.sqrt(v) / bc2 + self.eps)


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
