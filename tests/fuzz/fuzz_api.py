"""Fuzz target: the public API with fuzzed shapes, strides, dtypes, byte orders, NaN/inf,
zero-sized and huge dimensions -- the kernels (gemm, linear_forward/backward, activations),
Linear, Sequential forward/backward, the losses, gates, compile_step, Trainer.fit and
gradient clipping.  Every call must return or raise a documented exception; results of
well-formed float inputs are checked against NumPy."""
import warnings

import numpy as np

import fastnn as fnn

from ._common import DTYPES, Bug, Bytes, call, dims, floats, layout

ACTS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "bogus")


def array(src, ndim=None, big=False, dtype=None, shape=None):
    """A fuzzed array: dims (possibly 0 or huge -- a huge one only with an empty array),
    dtype (float or not, either byte order), values and memory layout; sometimes not an
    array at all."""
    r = src.int(0, 31)
    if r == 0:
        return src.pick((None, 3.0, [[1.0, 2.0]], "x"))
    if shape is None:
        shape = dims(src, ndim if ndim is not None else src.int(0, 3), big)
    if any(d > 2**20 for d in shape) and 0 not in shape:
        shape = (0,) + shape[1:] if len(shape) > 1 else (0,)
    dt = dtype if dtype is not None and src.int(0, 7) else src.pick(DTYPES)
    dt = np.dtype(dt)
    if int(np.prod(shape, dtype=object)) == 0:
        try:
            return np.empty(shape, dt)
        except ValueError:             # numpy's own limit on the total size
            return np.empty((0,) * len(shape), dt)
    if dt.kind == "f":
        a = floats(src, shape, dt.newbyteorder("=")).astype(dt)
    elif dt.kind == "O":
        a = np.empty(shape, object)
    else:
        a = np.ones(shape, dt)
    return layout(src, a)


def _finite(*arrays):
    return all(isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size and
               np.isfinite(a).all() and np.abs(a).max() < 1e3 for a in arrays)


def _close(got, want, who):
    tol = 1e-3 if got.dtype == np.float32 else 1e-9
    if not np.allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max()))):
        raise Bug(f"{who}: result differs from NumPy by "
                  f"{float(np.abs(got - want).max()):.3g}")


def t_gemm(src):
    a, b = array(src, 2, big=True), array(src, 2, big=True)
    ta, tb = src.bool(), src.bool()
    kw = dict(trans_a=ta, trans_b=tb, alpha=src.pick((1.0, 0.0, -2.5, np.nan)),
              activation=src.pick(ACTS), n_threads=src.pick((None, 1, 2, 0, -1)),
              engine=src.pick((None, "native", "blas", "nope")))
    out = None
    if src.bool():
        out = array(src, 2)
        kw["beta"] = src.pick((0.0, 1.0, 0.5))
    if src.bool():
        kw["bias"] = array(src, 1)
    ok, r = call(fnn.gemm, a, b, out, **kw)
    if ok and kw["activation"] == "identity" and kw["alpha"] == 1.0 and out is None \
            and kw.get("bias") is None and _finite(a, b):
        A = a.T if ta else a
        B = b.T if tb else b
        _close(r, A.astype(np.float64) @ B.astype(np.float64), "gemm")


def t_linear(src):
    x, W = array(src, 2, big=True), array(src, 2)
    b = array(src, 1) if src.bool() else None
    act = src.pick(ACTS)
    ok, y = call(fnn.linear_forward, x, W, b, act, negative_slope=src.pick((0.01, 0.2, -1.0)))
    if ok and act == "identity" and _finite(x, W) and (b is None or _finite(b)):
        want = x.astype(np.float64) @ W.T.astype(np.float64)
        if b is not None:
            want = want + b
        _close(y, want, "linear_forward")
    g = array(src, 2)
    call(fnn.linear_backward, g, x, W, y if ok and src.bool() else array(src, 2), act,
         accumulate=src.bool(), compute_grad_x=src.bool(), compute_grad_b=src.bool())


def t_activation(src):
    x = array(src, 2, big=True)
    act = src.pick(ACTS)
    out = array(src, 2) if src.bool() else None
    ok, y = call(fnn.activation_forward, x, act, out)
    call(fnn.activation_backward, array(src, 2), x if src.bool() else array(src, 2), act,
         array(src, 2) if src.bool() else None)
    if ok and out is None and act == "relu" and _finite(x):
        _close(y, np.maximum(x, 0), "activation_forward(relu)")


def _model(src, dt):
    n_in = src.int(1, 6)
    layers, w = [], n_in
    for _ in range(src.int(1, 3)):
        o = src.int(1, 6)
        layers.append(fnn.Linear(w, o, bias=src.bool(), dtype=dt, rng=src.int(0, 99)))
        layers.append(src.pick((fnn.ReLU, fnn.Sigmoid, fnn.Tanh, fnn.Identity,
                                lambda: fnn.LeakyReLU(0.1)))())
        w = o
    return fnn.Sequential(*layers), n_in, w


def t_modules(src):
    dt = src.pick((np.float32, np.float64))
    model, n_in, n_out = _model(src, dt)
    x = array(src, src.pick((2, 2, 1, 3)), dtype=dt,
              shape=(src.int(0, 5), n_in) if src.int(0, 3) else None)
    ok, y = call(model, x)
    if src.bool():
        model.eval()
    call(model.backward, array(src, 2, dtype=dt, shape=(x.shape[0] if isinstance(
        x, np.ndarray) and x.ndim else 1, n_out) if src.bool() else None),
        input_grad=src.bool())
    if ok and _finite(x) and x.ndim == 2:
        # the module path equals the float64 reference of the same network
        h = x.astype(np.float64)
        for m in model:
            if isinstance(m, fnn.Linear):
                h = h @ m.weight.data.T.astype(np.float64) + (
                    0 if m.bias is None else m.bias.data)
            else:
                h = {fnn.ReLU: lambda v: np.maximum(v, 0), fnn.Sigmoid: lambda v: 1 / (1 + np.exp(-v)),
                     fnn.Tanh: np.tanh, fnn.Identity: lambda v: v,
                     fnn.LeakyReLU: lambda v: np.where(v > 0, v, 0.1 * v)}[type(m)](h)
        _close(y, h, "Sequential forward")


LOSSES = (lambda: fnn.MSELoss(), lambda: fnn.L1Loss(reduction="sum"), lambda: fnn.HuberLoss(),
          lambda: fnn.SmoothL1Loss(beta=0.5), lambda: fnn.BCELoss(),
          lambda: fnn.BCEWithLogitsLoss(), lambda: fnn.CrossEntropyLoss(label_smoothing=0.1),
          lambda: fnn.NLLLoss(reduction="sum"), lambda: fnn.SVMLoss(),
          lambda: fnn.CrossEntropyLoss(weight=np.array([1.0, 2.0, 0.5])))


def _labels(src, n):
    r = src.int(0, 5)
    if r == 0:
        return array(src)
    vals = [src.int(-1, 3) if r == 1 else src.int(0, 2) for _ in range(n)]
    dt = src.pick(("int64", "int32", "uint8", "float64", ">i8"))
    return layout(src, np.array(vals).astype(dt).reshape(n))


def t_losses(src):
    loss = src.pick(LOSSES)()
    pred = array(src, src.pick((2, 2, 1, 3)))
    n = pred.shape[0] if isinstance(pred, np.ndarray) and pred.ndim else 1
    clf = isinstance(loss, (fnn.CrossEntropyLoss, fnn.NLLLoss, fnn.SVMLoss))
    target = _labels(src, n) if clf and src.int(0, 3) else array(
        src, shape=pred.shape if isinstance(pred, np.ndarray) and src.bool() else None)
    sw = array(src, 1, shape=(n,) if src.bool() else None) if src.int(0, 3) == 0 else None
    ok, v = call(loss, pred, target, sample_weight=sw)
    if ok or src.bool():
        call(loss.backward)


def t_gates(src):
    gate = src.pick((fnn.Add, fnn.Multiply, fnn.Maximum, lambda: fnn.Concat(),
                     lambda: fnn.Split([1, 2]), lambda: fnn.Concat(axis=0)))
    ok, g = call(gate)
    if not ok:
        return
    shape = dims(src, 2)
    xs = [array(src, 2, shape=shape if src.int(0, 3) else None)
          for _ in range(src.int(0, 3))]
    ok, y = call(g, *xs)
    grad = [array(src, 2) for _ in range(2)] if isinstance(g, fnn.Split) else array(src, 2)
    call(g.backward, y if ok and src.bool() else grad, input_grad=src.bool())


def t_compiled(src):
    dt = src.pick((np.float32, np.float64))
    model, n_in, n_out = _model(src, dt)
    clf = src.bool()
    loss = fnn.CrossEntropyLoss() if clf else fnn.MSELoss()
    opt = src.pick((lambda p: fnn.SGD(p, lr=0.1, momentum=0.9), lambda p: fnn.Adam(p),
                    lambda p: fnn.RMSprop(p, lr=0.01)))(model.parameters())
    m = src.int(0, 6)
    x = array(src, 2, dtype=dt, shape=(m, n_in) if src.int(0, 3) else None)
    y = _labels(src, m) if clf else array(src, 2, dtype=dt,
                                           shape=(m, n_out) if src.int(0, 3) else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if src.bool():
            ok, step = call(fnn.compile_step, model, loss, opt,
                            clip_grad_norm=src.pick((None, 1.0, 0.0, -1.0)))
            if ok:
                for _ in range(src.int(1, 3)):
                    call(step, x, y)
        else:
            ok, tr = call(fnn.Trainer, model, loss, opt, batch_size=src.pick((1, 2, 7, 0)),
                          epochs=src.int(0, 2), progress=False, compiled=src.bool(),
                          seed=src.int(0, 5))
            if ok:
                sw = array(src, 1, shape=(m,)) if src.int(0, 3) == 0 else None
                call(tr.fit, x, y, sample_weight=sw)


def t_clip(src):
    model, _, _ = _model(src, src.pick((np.float32, np.float64)))
    for p in model.parameters():
        p.grad = floats(src, p.shape, p.dtype)
    call(fnn.clip_grad_norm_, model.parameters(), src.pick((1.0, 0.0, np.inf, np.nan, -1.0)),
         norm_type=src.pick((2.0, 1.0, np.inf, 0.5, "fro", -2)),
         error_if_nonfinite=src.bool())
    call(fnn.clip_grad_value_, model.parameters(), src.pick((1.0, 0.0, np.nan, -1.0)))


def t_graph(src):
    """A residual / gated Graph (as fuzz_load saves it) and its compiled inference on fuzzed
    inputs; forward, backward, and compile_inference equal to the eval-mode forward."""
    from .fuzz_load import models
    g = models()[4]
    if src.bool():
        g = g.double()
    dt = g.dtype
    x = array(src, 2, dtype=dt, shape=(src.int(0, 9), 4) if src.int(0, 3) else None)
    ok, y = call(g, x)
    call(g.backward, array(src, 2, dtype=dt, shape=y.shape if ok and src.bool() else None),
         input_grad=src.bool())
    ok2, f = call(fnn.compile_inference, g)
    if ok2 and isinstance(x, np.ndarray) and x.dtype == dt:
        # C order: with batch <= 2, GEMM's summation order depends on x's layout (the
        # matrix-vector path; test_reliability.py test_gemm_bits_depend_on_layout...)
        x = np.ascontiguousarray(x)
    if ok2:
        ok3, yi = call(f, x)
        g.eval()
        ok4, ye = call(g, x)
        g.train()
        if ok3 != ok4 or (ok3 and yi.tobytes() != ye.tobytes()):
            raise Bug("compile_inference differs from the eval-mode forward")


TARGETS = (t_gemm, t_linear, t_activation, t_modules, t_losses, t_gates, t_compiled, t_clip,
           t_graph)


def test_one_input(data):
    src = Bytes(data)
    t = TARGETS[src.int(0, len(TARGETS) - 1)]
    with np.errstate(all="ignore"):
        t(src)


def seeds():
    """Every target with a few starting byte patterns."""
    out = []
    for k in range(len(TARGETS)):
        for fill in (0, 1, 7, 0x55, 0xFF):
            out.append(bytes([k]) + bytes([fill]) * 63)
    return out
