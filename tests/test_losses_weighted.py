"""The torch-named losses (BCEWithLogitsLoss, BCELoss, L1Loss, HuberLoss, SmoothL1Loss,
NLLLoss), CrossEntropyLoss(weight=, label_smoothing=) and sample_weight= on every loss:
against the NumPy oracle (both dtypes), gradcheck (float64), PyTorch (float64, value and
gradient), every fused-type kernel branch called directly, 1 vs 2 threads bitwise, the
compiled step's fallback, and the errors."""
import functools
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as ref
from fastnn._kernels import losses as _kl
from _util import assert_bitwise_equal

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
REDUCTIONS = ("mean", "sum")
K = _kl.PointwiseLoss


# ------------------------------------------------------------------ the cases
def _probs(rng, shape, dtype):
    return rng.uniform(0.02, 0.98, size=shape).astype(dtype)


def _reals(rng, shape, dtype):
    return rng.uniform(-3, 3, size=shape).astype(dtype)


def _targets01(rng, shape, dtype):
    t = rng.uniform(0, 1, size=shape)
    t[rng.uniform(size=shape) < 0.5] = 1.0        # hard and soft labels
    return t.astype(dtype)


PW = np.array([0.5, 2.0, 1.0, 3.0, 0.25])       # pos_weight for 5 labels

# id -> (factory(reduction), oracle(pred, target, reduction, sw), pred maker, target maker,
#        torch factory(reduction) or None)
ELEMENTWISE = {
    "mse": (lambda r: fnn.MSELoss(r), lambda p, t, r, w: ref.mse_loss(p, t, r, w),
            _reals, _reals, lambda r: torch.nn.MSELoss(reduction=r)),
    "l1": (lambda r: fnn.L1Loss(r), lambda p, t, r, w: ref.l1_loss(p, t, r, w),
           _reals, _reals, lambda r: torch.nn.L1Loss(reduction=r)),
    "huber-1": (lambda r: fnn.HuberLoss(r), lambda p, t, r, w: ref.huber_loss(p, t, 1.0, r, w),
                _reals, _reals, lambda r: torch.nn.HuberLoss(reduction=r)),
    "huber-0.3": (lambda r: fnn.HuberLoss(r, delta=0.3),
                  lambda p, t, r, w: ref.huber_loss(p, t, 0.3, r, w), _reals, _reals,
                  lambda r: torch.nn.HuberLoss(reduction=r, delta=0.3)),
    "smoothl1-1": (lambda r: fnn.SmoothL1Loss(r),
                   lambda p, t, r, w: ref.smooth_l1_loss(p, t, 1.0, r, w), _reals, _reals,
                   lambda r: torch.nn.SmoothL1Loss(reduction=r)),
    "smoothl1-2.5": (lambda r: fnn.SmoothL1Loss(r, beta=2.5),
                     lambda p, t, r, w: ref.smooth_l1_loss(p, t, 2.5, r, w), _reals, _reals,
                     lambda r: torch.nn.SmoothL1Loss(reduction=r, beta=2.5)),
    "smoothl1-0": (lambda r: fnn.SmoothL1Loss(r, beta=0.0),
                   lambda p, t, r, w: ref.smooth_l1_loss(p, t, 0.0, r, w), _reals, _reals,
                   lambda r: torch.nn.SmoothL1Loss(reduction=r, beta=0.0)),
    "bce": (lambda r: fnn.BCELoss(r), lambda p, t, r, w: ref.bce_loss(p, t, r, w),
            _probs, _targets01, lambda r: torch.nn.BCELoss(reduction=r)),
    "bcelogits": (lambda r: fnn.BCEWithLogitsLoss(reduction=r),
                  lambda p, t, r, w: ref.bce_with_logits_loss(p, t, None, r, w),
                  _reals, _targets01, lambda r: torch.nn.BCEWithLogitsLoss(reduction=r)),
    "bcelogits-pw": (lambda r: fnn.BCEWithLogitsLoss(pos_weight=PW, reduction=r),
                     lambda p, t, r, w: ref.bce_with_logits_loss(p, t, PW, r, w),
                     _reals, _targets01,
                     lambda r: torch.nn.BCEWithLogitsLoss(reduction=r,
                                                          pos_weight=torch.tensor(PW))),
}
E_IDS = list(ELEMENTWISE)

CW = np.array([0.5, 2.0, 1.0, 0.1, 3.0])          # class weights for 5 classes


def _logp(rng, shape, dtype):
    s = rng.uniform(-3, 3, size=shape)
    return (s - np.log(np.exp(s).sum(axis=1, keepdims=True))).astype(dtype)


def _t(x):
    return None if x is None else torch.tensor(x)


def _ce(weight, eps):
    return (lambda r: fnn.CrossEntropyLoss(r, weight=weight, label_smoothing=eps),
            lambda s, y, r, w: ref.cross_entropy_loss(s, y, r, weight, eps, w), _reals,
            lambda r: torch.nn.CrossEntropyLoss(weight=_t(weight), label_smoothing=eps,
                                                reduction=r))


CLASSIFICATION = {
    "ce": _ce(None, 0.0),                 # the unweighted kernel; with sample_weight the new
    "ce-w": _ce(CW, 0.0),
    "ce-ls": _ce(None, 0.1),
    "ce-w-ls": _ce(CW, 0.25),
    "ce-ls-1": _ce(None, 1.0),
    "nll": (lambda r: fnn.NLLLoss(r), lambda s, y, r, w: ref.nll_loss(s, y, r, None, w),
            _logp, lambda r: torch.nn.NLLLoss(reduction=r)),
    "nll-w": (lambda r: fnn.NLLLoss(r, weight=CW),
              lambda s, y, r, w: ref.nll_loss(s, y, r, CW, w), _logp,
              lambda r: torch.nn.NLLLoss(reduction=r, weight=torch.tensor(CW))),
    "svm": (lambda r: fnn.SVMLoss(reduction=r),
            lambda s, y, r, w: ref.svm_loss(s, y, 1.0, r, w), _reals, None),
}
C_IDS = list(CLASSIFICATION)

E_SHAPES = [(1,), (13,), (1, 5), (9, 5), (4, 3, 5), (64, 5)]
C_SHAPES = [(1, 5), (9, 5), (64, 5)]


def _sw(rng, n):
    w = rng.uniform(0, 3, size=n)
    w[rng.uniform(size=n) < 0.2] = 0.0      # zero weights count as absent rows
    w[0] = 1.5
    return w


def _check(value, grad, expected, dtype):
    ev, eg = expected
    assert type(value) is float
    assert grad.dtype == np.dtype(dtype) and grad.shape == eg.shape
    if np.dtype(dtype) == np.float64:
        rtol, atol = 1e-12, 1e-14
    else:
        rtol, atol = 2e-5, 1e-6
    np.testing.assert_allclose(value, ev, rtol=rtol, atol=atol * max(1.0, abs(ev)))
    scale = float(np.max(np.abs(eg))) if eg.size else 1.0
    np.testing.assert_allclose(grad, eg, rtol=rtol, atol=atol * max(scale, 1e-30))


def _epair(name, rng, shape, dtype):
    make, oracle, mp, mt, _ = ELEMENTWISE[name]
    if name.startswith("bcelogits-pw"):
        shape = shape[:-1] + (5,) if len(shape) > 1 else shape
        if len(shape) == 1:
            return None
    return mp(rng, shape, dtype), mt(rng, shape, dtype)


# ------------------------------------------------------------------ vs the oracle
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", E_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", E_IDS)
def test_elementwise_matches_reference(name, shape, reduction, weighted, dtype, rng):
    pair = _epair(name, rng, shape, dtype)
    if pair is None:
        pytest.skip("pos_weight of 5 labels needs (batch, 5)")
    p, t = pair
    make, oracle = ELEMENTWISE[name][:2]
    sw = _sw(rng, p.shape[0]) if weighted else None
    loss = make(reduction)
    v = loss(p, t, sample_weight=sw)
    g = loss.backward()
    assert g.shape == p.shape
    _check(v, g, oracle(p, t, reduction, sw), dtype)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", C_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", C_IDS)
def test_classification_matches_reference(name, shape, reduction, weighted, dtype, rng):
    make, oracle, ms = CLASSIFICATION[name][:3]
    s = ms(rng, shape, dtype)
    y = rng.integers(0, shape[1], size=shape[0])
    y[0] = 1                                # a label whose class weight is not tiny
    sw = _sw(rng, shape[0]) if weighted else None
    loss = make(reduction)
    v = loss(s, y, sample_weight=sw)
    _check(v, loss.backward(), oracle(s, y, reduction, sw), dtype)


def test_all_ones_sample_weight_is_unweighted(rng):
    p, t = _reals(rng, (8, 3), np.float64), _reals(rng, (8, 3), np.float64)
    y = rng.integers(0, 3, 8)
    for loss, a, b in ((fnn.MSELoss(), p, t), (fnn.HuberLoss(), p, t),
                       (fnn.CrossEntropyLoss(), p, y), (fnn.SVMLoss(), p, y),
                       (fnn.NLLLoss(), p, y)):
        v0 = loss(a, b)
        g0 = loss.backward().copy()
        v1 = loss(a, b, sample_weight=np.ones(8))
        np.testing.assert_allclose(v1, v0, rtol=1e-14)
        np.testing.assert_allclose(loss.backward(), g0, rtol=1e-14, atol=1e-17)


def test_sample_weight_is_row_repetition(rng):
    """Weight 2 on a row == the row twice (the mean divides by the sum of the weights)."""
    s = _reals(rng, (5, 4), np.float64)
    y = rng.integers(0, 4, 5)
    w = np.array([2.0, 1.0, 0.0, 1.0, 3.0])
    rep = np.repeat(np.arange(5), w.astype(int))
    for make in (lambda: fnn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5, 1.0],
                                              label_smoothing=0.1),
                 fnn.SVMLoss, fnn.NLLLoss):
        a = make()(s, y, sample_weight=w)
        b = make()(s[rep], y[rep])
        assert a == pytest.approx(b, rel=1e-13)
    t = _reals(rng, (5, 4), np.float64)
    for make in (fnn.L1Loss, fnn.BCEWithLogitsLoss, fnn.MSELoss):
        a = make()(s, t, sample_weight=w)
        b = make()(s[rep], t[rep])
        assert a == pytest.approx(b, rel=1e-13)


def test_default_cross_entropy_path_unchanged(dtype, rng):
    """Without weight / label_smoothing / sample_weight: the old kernel, bit for bit."""
    s = _reals(rng, (50, 7), dtype)
    y = rng.integers(0, 7, 50)
    for red in REDUCTIONS:
        g = np.empty_like(s)
        rows = np.empty(50)
        scale = 1 / 50 if red == "mean" else 1.0
        v = _kl._xent(s, y, g, rows, scale)
        loss = fnn.CrossEntropyLoss(red)
        assert loss(s, y) == v
        assert_bitwise_equal(loss.backward(), g)
        assert repr(loss) == f"CrossEntropyLoss(reduction={red!r})"


# ------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", E_IDS)
def test_gradcheck_elementwise(name, reduction, rng):
    p, t = _epair(name, rng, (6, 5), np.float64)
    if name.startswith(("l1", "smoothl1-0")):         # away from the kink at d == 0
        p = p + np.where(p >= t, 0.01, -0.01)
    loss = ELEMENTWISE[name][0](reduction)
    assert fnn.gradcheck(loss, p, t).passed
    w = _sw(rng, 6)
    assert fnn.gradcheck(lambda a: (loss(a, t, sample_weight=w), loss.backward()), p).passed


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", C_IDS)
def test_gradcheck_classification(name, reduction, rng):
    make, _, ms = CLASSIFICATION[name][:3]
    s = ms(rng, (6, 5), np.float64)
    y = rng.integers(0, 5, 6)
    if name == "svm":
        s = rng.permutation(np.linspace(-2, 2, 30)).reshape(6, 5) + 0.013   # off the kinks
    loss = make(reduction)
    assert fnn.gradcheck(loss, s, y).passed
    w = _sw(rng, 6)
    assert fnn.gradcheck(lambda a: (loss(a, y, sample_weight=w), loss.backward()), s).passed


# ------------------------------------------------------------------ PyTorch parity
def _torch_grad(tloss, x, target):
    xt = torch.tensor(x, requires_grad=True)
    out = tloss(xt, target)
    out.backward(torch.ones_like(out))
    return out.detach().numpy(), xt.grad.numpy()


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", E_IDS)
def test_torch_parity_elementwise(name, reduction, rng):
    p, t = _epair(name, rng, (40, 5), np.float64)
    p[0, :2] = t[0, :2]                                  # d == 0: torch's sign(0) = 0
    if name == "bce":
        p[1, 0], p[1, 1] = 0.0, 1.0                      # the log clamp at -100
    loss = ELEMENTWISE[name][0](reduction)
    tl = ELEMENTWISE[name][4](reduction)
    v, g = loss(p, t), loss.backward()
    tv, tg = _torch_grad(tl, p, torch.tensor(t))
    np.testing.assert_allclose(v, float(tv), rtol=1e-13)
    np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-15)
    # sample weights: torch's reduction="none" weighted by hand
    w = _sw(rng, 40)
    v = loss(p, t, sample_weight=w)
    tv, tg = _torch_grad(type(tl)(**_torch_kwargs(tl, "none")), p, torch.tensor(t))
    per = (tv * w[:, None])
    scale = 1.0 / (w.sum() * p.shape[1]) if reduction == "mean" else 1.0
    np.testing.assert_allclose(v, scale * per.sum(), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), scale * w[:, None] * tg, rtol=1e-12,
                               atol=1e-15)


def _torch_kwargs(tl, reduction):
    kw = {"reduction": reduction}
    for a in ("delta", "beta", "pos_weight", "weight", "label_smoothing"):
        v = getattr(tl, a, None)
        if v is not None:
            kw[a] = v
    return kw


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", [c for c in C_IDS if c != "svm"])
def test_torch_parity_classification(name, reduction, rng):
    make, _, ms, mt = CLASSIFICATION[name]
    s = ms(rng, (40, 5), np.float64)
    y = rng.integers(0, 5, 40)
    loss, tl = make(reduction), mt(reduction)
    v, g = loss(s, y), loss.backward()
    tv, tg = _torch_grad(tl, s, torch.tensor(y))
    np.testing.assert_allclose(v, float(tv), rtol=1e-13)
    np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-15)
    # sample weights: torch's per-row losses (reduction="none") weighted by hand, the mean
    # divided by sum_i w_i * weight[y_i]
    w = _sw(rng, 40)
    v = loss(s, y, sample_weight=w)
    tv, tg = _torch_grad(type(tl)(**_torch_kwargs(tl, "none")), s, torch.tensor(y))
    cw = np.ones(5) if tl.weight is None else tl.weight.numpy()
    scale = 1.0 / np.sum(w * cw[y]) if reduction == "mean" else 1.0
    np.testing.assert_allclose(v, scale * np.sum(w * tv), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), scale * w[:, None] * tg, rtol=1e-12,
                               atol=1e-15)


@needs_torch
def test_torch_parity_bce_logits_extremes():
    """Large logits: no overflow, torch's values and gradients (multilabel and binary)."""
    x = np.array([[-800.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 800.0]] * 2)
    t = np.array([[0.0, 1.0, 0.3, 1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.7, 0.0, 1.0, 1.0, 0.0]])
    pw = np.linspace(0.5, 3.0, 7)
    for kw, tkw in (({}, {}), ({"pos_weight": pw}, {"pos_weight": torch.tensor(pw)})):
        loss = fnn.BCEWithLogitsLoss(reduction="sum", **kw)
        v, g = loss(x, t), loss.backward()
        tv, tg = _torch_grad(torch.nn.BCEWithLogitsLoss(reduction="sum", **tkw), x,
                             torch.tensor(t))
        assert np.isfinite(v) and np.isfinite(g).all()
        np.testing.assert_allclose(v, float(tv), rtol=1e-13)
        np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-300)
    xb, tb = x[0], t[0]                                   # binary: pred (batch,)
    loss = fnn.BCEWithLogitsLoss(pos_weight=[2.0])
    v, g = loss(xb, tb), loss.backward()
    tv, tg = _torch_grad(torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0])), xb,
                         torch.tensor(tb))
    assert g.shape == xb.shape
    np.testing.assert_allclose(v, float(tv), rtol=1e-13)
    np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-300)


@needs_torch
def test_torch_parity_float32(rng):
    """float32 agrees with torch's float32 to float32 precision."""
    p, t = _reals(rng, (30, 5), np.float32), _targets01(rng, (30, 5), np.float32)
    for loss, tl in ((fnn.BCEWithLogitsLoss(pos_weight=PW), torch.nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(PW, dtype=torch.float32))),
            (fnn.HuberLoss(delta=0.5), torch.nn.HuberLoss(delta=0.5))):
        v, g = loss(p, t), loss.backward()
        tv, tg = _torch_grad(tl, p, torch.tensor(t))
        np.testing.assert_allclose(v, float(tv), rtol=1e-5)
        np.testing.assert_allclose(g, tg, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ kernel branches
@pytest.mark.parametrize("kind", list(K), ids=lambda k: k.name)
def test_every_pointwise_branch_directly(kind, dtype, rng):
    """Each PointwiseLoss kind of each fused-type specialization, with and without weights
    and gradient, against the oracle."""
    p = _probs(rng, (7, 5), dtype) if kind == K.PW_BCE else _reals(rng, (7, 5), dtype)
    t = _targets01(rng, (7, 5), dtype)
    sw, pw = _sw(rng, 7), PW
    param = {K.PW_HUBER: 0.4, K.PW_SMOOTH_L1: 0.6}.get(kind, 0.0)
    oracle = {K.PW_MSE: lambda w: ref.mse_loss(p, t, "sum", w),
              K.PW_BCE_LOGITS: lambda w: ref.bce_with_logits_loss(p, t, pw, "sum", w),
              K.PW_BCE: lambda w: ref.bce_loss(p, t, "sum", w),
              K.PW_L1: lambda w: ref.l1_loss(p, t, "sum", w),
              K.PW_HUBER: lambda w: ref.huber_loss(p, t, 0.4, "sum", w),
              K.PW_SMOOTH_L1: lambda w: ref.smooth_l1_loss(p, t, 0.6, "sum", w)}[kind]
    kernel = _kl._pointwise["float" if dtype == np.float32 else "double"]
    empty = np.empty(0)
    for w in (None, sw):
        g = np.empty_like(p)
        rows = np.empty(7)
        pwa = pw if kind == K.PW_BCE_LOGITS else empty
        v = kernel(int(kind), p, t, empty if w is None else w, pwa, g, rows, param, 1.0)
        _check(v, g, oracle(w), dtype)
        # the value alone (an empty gradient)
        v2 = kernel(int(kind), p, t, empty if w is None else w, pwa,
                    np.empty((0, 0), dtype), rows, param, 1.0)
        assert v2 == v


def test_every_classification_branch_directly(dtype, rng):
    spec = "float" if dtype == np.float32 else "double"
    s = _reals(rng, (9, 5), dtype)
    y = rng.integers(0, 5, 9)
    sw, empty = _sw(rng, 9), np.empty(0)
    for cw in (None, CW):
        for w in (None, sw):
            for eps in (0.0, 0.3):
                g, rows = np.empty_like(s), np.empty(9)
                v = _kl._xent_w[spec](s, y, empty if cw is None else cw,
                                      empty if w is None else w, eps, g, rows, 1.0)
                _check(v, g, ref.cross_entropy_loss(s, y, "sum", cw, eps, w), dtype)
            g = np.empty_like(s)
            v = _kl._nll[spec](s, y, empty if cw is None else cw, empty if w is None else w,
                               g, rows, 1.0)
            _check(v, g, ref.nll_loss(s, y, "sum", cw, w), dtype)
    g = np.empty_like(s)
    v = _kl._svm_w[spec](s, y, sw, g, rows, 1.0, 1.0)
    _check(v, g, ref.svm_loss(s, y, 1.0, "sum", sw), dtype)


# ------------------------------------------------------------------ threads
LARGE = (400, 800)


def _run_all(p, t, pr, y, sw):
    out = []
    for name in E_IDS:
        loss = ELEMENTWISE[name][0]("mean")
        tt = t
        a = pr if name == "bce" else p
        if name == "bcelogits-pw":
            loss = fnn.BCEWithLogitsLoss(pos_weight=np.linspace(0.5, 2, LARGE[1]))
        for w in (None, sw):
            v = loss(a, tt, sample_weight=w)
            out.append((f"{name} {w is None}", v, loss.backward().copy()))
    cw = np.linspace(0.1, 2, LARGE[1])
    for loss in (fnn.CrossEntropyLoss(weight=cw, label_smoothing=0.1),
                 fnn.CrossEntropyLoss(label_smoothing=0.2), fnn.NLLLoss(weight=cw),
                 fnn.NLLLoss("sum"), fnn.SVMLoss()):
        for w in (None, sw):
            v = loss(p, y, sample_weight=w)
            out.append((f"{loss!r} {w is None}", v, loss.backward().copy()))
    return out


def test_thread_count_does_not_change_results(dtype, native, threads, rng):
    p = _reals(rng, LARGE, dtype)
    t = _targets01(rng, LARGE, dtype)
    pr = _probs(rng, LARGE, dtype)
    y = rng.integers(0, LARGE[1], LARGE[0])
    sw = _sw(rng, LARGE[0])
    fnn.set_num_threads(1)
    one = _run_all(p, t, pr, y, sw)
    fnn.set_num_threads(2)
    two = _run_all(p, t, pr, y, sw)
    for (name, v1, g1), (_, v2, g2) in zip(one, two):
        assert v1 == v2, (name, v1, v2)
        assert_bitwise_equal(g2, g1, name)


# ------------------------------------------------------------------ compiled step / Trainer
def test_compile_step_falls_back_for_the_new_losses(rng):
    X = rng.standard_normal((32, 6)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    T = rng.uniform(0, 1, (32, 4)).astype(np.float32)
    for lf, target in ((fnn.CrossEntropyLoss(weight=[1, 2, 1, 1]), y),
                       (fnn.CrossEntropyLoss(label_smoothing=0.1), y), (fnn.NLLLoss(), y),
                       (fnn.BCELoss(), T)):
        def build():
            return fnn.Sequential(fnn.Linear(6, 8, rng=1), fnn.ReLU(), fnn.Linear(8, 4, rng=2))
        m1, m2 = build(), build()
        o1, o2 = fnn.SGD(m1.parameters(), lr=0.1), fnn.SGD(m2.parameters(), lr=0.1)
        if isinstance(lf, fnn.BCELoss):
            m1.append(fnn.Sigmoid())
            m2.append(fnn.Sigmoid())
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            step = fnn.compile_step(m1, lf, o1)
        assert step.compiled is False
        assert type(lf).__name__ in step.reason, step.reason
        assert [x.category for x in w] == [RuntimeWarning]
        lf2 = type(lf)(**({"weight": lf.weight} if getattr(lf, "weight", None) is not None
                          else {"pos_weight": lf.pos_weight}
                          if getattr(lf, "pos_weight", None) is not None else {}))
        if isinstance(lf, fnn.CrossEntropyLoss) and lf.label_smoothing:
            lf2 = fnn.CrossEntropyLoss(label_smoothing=lf.label_smoothing)
        for _ in range(3):
            a = step(X, target)
            o2.zero_grad()
            b = lf2(m2(X), target)
            m2.backward(lf2.backward(), input_grad=False)
            o2.step()
            assert a == b
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            assert_bitwise_equal(p1.data, p2.data)


def test_trainer_with_the_new_losses(rng):
    """The Trainer: the module path for weighted/smoothed CE and NLL (accuracy for the
    classifiers), compiled epochs for BCEWithLogitsLoss."""
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    for lf in (fnn.CrossEntropyLoss(label_smoothing=0.05), fnn.NLLLoss()):
        m = fnn.Sequential(fnn.Linear(5, 2, rng=0))
        with pytest.warns(RuntimeWarning, match="running the module path"):
            h = fnn.Trainer(m, lf, fnn.SGD(m.parameters(), lr=0.5), epochs=3, batch_size=16,
                            progress=False).fit(X, y)
        assert len(h["loss"]) == 3 and "accuracy" in h.history
    m = fnn.Sequential(fnn.Linear(5, 1, rng=0))
    Y = y[:, None].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # compiles: no fallback warning
        h = fnn.Trainer(m, fnn.BCEWithLogitsLoss(), fnn.SGD(m.parameters(), lr=0.5),
                        epochs=5, batch_size=16, progress=False).fit(X, Y)
    assert h["loss"][-1] < h["loss"][0]


# ------------------------------------------------------------------ errors
def test_option_errors():
    with pytest.raises(ValueError, match="HuberLoss: delta must be > 0"):
        fnn.HuberLoss(delta=0.0)
    with pytest.raises(ValueError, match="SmoothL1Loss: beta must be finite and >= 0"):
        fnn.SmoothL1Loss(beta=-1.0)
    with pytest.raises(TypeError, match="HuberLoss: delta must be a real number"):
        fnn.HuberLoss(delta="1")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        fnn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="label_smoothing must be finite and >= 0"):
        fnn.CrossEntropyLoss(label_smoothing=-0.1)
    with pytest.raises(ValueError, match="weight must be finite and >= 0; element 1"):
        fnn.CrossEntropyLoss(weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="weight must be finite and >= 0; element 0"):
        fnn.NLLLoss(weight=[np.nan, 1.0])
    with pytest.raises(ValueError, match="NLLLoss: weight must be a non-empty 1-D array"):
        fnn.NLLLoss(weight=np.ones((2, 2)))
    with pytest.raises(TypeError, match="weight must be an array of real numbers"):
        fnn.CrossEntropyLoss(weight=["a", "b"])
    with pytest.raises(ValueError, match="pos_weight must be finite and >= 0"):
        fnn.BCEWithLogitsLoss(pos_weight=[1.0, np.inf])
    with pytest.raises(ValueError, match="reduction must be one of"):
        fnn.L1Loss("none")
    with pytest.raises(TypeError):
        fnn.BCEWithLogitsLoss(PW)            # keyword-only options
    # read-only views of the weights
    lf = fnn.CrossEntropyLoss(weight=[1.0, 2.0])
    with pytest.raises(ValueError):
        lf.weight[0] = 5.0


@pytest.mark.parametrize("name", E_IDS)
def test_elementwise_input_errors(name, rng):
    loss = ELEMENTWISE[name][0]("mean")
    p, t = _epair(name, rng, (4, 5), np.float64)
    who = type(loss).__name__
    with pytest.raises(ValueError, match=f"{who}.*target has shape"):
        loss(p, t[:, :3])
    with pytest.raises(TypeError, match=f"{who}.*target has dtype float32"):
        loss(p, t.astype(np.float32))
    with pytest.raises(TypeError, match="pred must have dtype float32 or float64"):
        loss(p.astype(np.int64), t)
    with pytest.raises(TypeError, match="target must be a numpy.ndarray"):
        loss(p, t.tolist())
    with pytest.raises(ValueError, match="non-empty"):
        loss(p[:0], t[:0])


def test_sample_weight_errors(rng):
    p, t = _reals(rng, (4, 3), np.float64), _reals(rng, (4, 3), np.float64)
    y = rng.integers(0, 3, 4)
    for loss, target in ((fnn.L1Loss(), t), (fnn.MSELoss(), t), (fnn.CrossEntropyLoss(), y),
                         (fnn.SVMLoss(), y), (fnn.NLLLoss(), y)):
        who = type(loss).__name__
        with pytest.raises(ValueError, match=rf"{who}.*sample_weight must have shape \(4,\)"):
            loss(p, target, sample_weight=np.ones(3))
        with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
            loss(p, target, sample_weight=np.ones((4, 1)))
        with pytest.raises(ValueError, match="sample_weight must be finite and >= 0; element 2"):
            loss(p, target, sample_weight=[1.0, 1.0, -1.0, 1.0])
        with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
            loss(p, target, sample_weight=[1.0, np.nan, 1.0, 1.0])
        with pytest.raises(TypeError, match="sample_weight must be an array of real numbers"):
            loss(p, target, sample_weight=np.array(["a"] * 4))
        with pytest.raises(ValueError, match="sample_weight sums to 0.0 over this batch"):
            loss(p, target, sample_weight=np.zeros(4))
        # reduction="sum" accepts all-zero weights: the loss is 0
        assert type(loss)(reduction="sum")(p, target, sample_weight=np.zeros(4)) == 0.0
    # a list of numbers is accepted
    assert fnn.L1Loss()(p, t, sample_weight=[1, 2, 3, 4]) > 0


def test_class_weight_errors(rng):
    s = _reals(rng, (4, 3), np.float64)
    y = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match="CrossEntropyLoss.*weight has 4 entries but "
                                         "scores have 3 classes"):
        fnn.CrossEntropyLoss(weight=np.ones(4))(s, y)
    with pytest.raises(ValueError, match="NLLLoss.*weight has 2 entries"):
        fnn.NLLLoss(weight=np.ones(2))(s, y)
    with pytest.raises(ValueError, match="the weight of the labels sums to 0.0"):
        fnn.CrossEntropyLoss(weight=[0.0, 0.0, 1.0])(s, y)
    with pytest.raises(ValueError, match="labels must be in \\[0, 3\\)"):
        fnn.NLLLoss()(s, np.array([0, 3, 1, 0]))
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        fnn.NLLLoss(weight=[1, 1, 1])(s, y.astype(float))
    with pytest.raises(ValueError, match="scores must be 2-D"):
        fnn.NLLLoss()(s[0], y[:1])


def test_bce_errors_and_pos_weight_shapes(rng):
    p = _probs(rng, (4, 3), np.float64)
    t = _targets01(rng, (4, 3), np.float64)
    bad = p.copy()
    bad[1, 2] = 1.5
    with pytest.raises(ValueError, match=r"BCELoss.*probabilities in \[0, 1\]; element 5"):
        fnn.BCELoss()(bad, t)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="probabilities"):
        fnn.BCELoss()(bad, t)
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast"):
        fnn.BCEWithLogitsLoss(pos_weight=[1.0, 2.0])(p, t)
    # (1,) and a number broadcast everywhere; (batch, 3, 2) pred with (2,) pos_weight
    assert fnn.BCEWithLogitsLoss(pos_weight=[2.0])(p, t) == \
        fnn.BCEWithLogitsLoss(pos_weight=2.0)(p, t)
    x3, t3 = _reals(rng, (4, 3, 2), np.float64), _targets01(rng, (4, 3, 2), np.float64)
    pw = np.array([0.5, 2.0])
    loss = fnn.BCEWithLogitsLoss(pos_weight=pw, reduction="sum")
    v = loss(x3, t3)
    _check(v, loss.backward(), ref.bce_with_logits_loss(x3, t3, pw, "sum"), np.float64)


def test_reprs():
    assert repr(fnn.HuberLoss(delta=0.5)) == "HuberLoss(delta=0.5, reduction='mean')"
    assert repr(fnn.SmoothL1Loss("sum", beta=2)) == "SmoothL1Loss(beta=2.0, reduction='sum')"
    assert repr(fnn.L1Loss()) == "L1Loss(reduction='mean')"
    assert repr(fnn.BCEWithLogitsLoss(pos_weight=[2.0])) == \
        "BCEWithLogitsLoss(pos_weight=[2.0], reduction='mean')"
    assert repr(fnn.CrossEntropyLoss(weight=[1, 2], label_smoothing=0.1)) == \
        "CrossEntropyLoss(weight=[1.0, 2.0], label_smoothing=0.1, reduction='mean')"
    assert repr(fnn.NLLLoss()) == "NLLLoss(reduction='mean')"


def _manual_weighted_fit(build, lf, X, y, w, epochs, bs, seed):
    """Trainer.fit(sample_weight=w)'s arithmetic written out with the module API."""
    from fastnn._kernels import step as _ks
    m = build()
    opt = fnn.SGD(m.parameters(), lr=0.2)
    n = X.shape[0]
    perm = np.empty(n, np.int64)
    for e in range(epochs):
        _ks.shuffle(perm, seed, e)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            if w[idx].sum() == 0:
                continue
            m.zero_grad()
            opt.zero_grad()
            lf(m(X[idx]), y[idx], sample_weight=w[idx])
            m.backward(lf.backward(), input_grad=False)
            opt.step()
    return m


@pytest.mark.parametrize("kind", ["xent", "mse"])
def test_trainer_fit_sample_weight(kind, rng):
    X = rng.standard_normal((70, 5))
    if kind == "xent":
        y = rng.integers(0, 3, 70)
        make_lf = fnn.CrossEntropyLoss
    else:
        y = rng.standard_normal((70, 3))
        make_lf = fnn.MSELoss
    w = rng.uniform(0, 2, 70)
    w[:16] = 0.0

    def build():
        return fnn.Sequential(fnn.Linear(5, 8, rng=1, dtype=np.float64), fnn.Tanh(),
                              fnn.Linear(8, 3, rng=2, dtype=np.float64))
    m = build()
    tr = fnn.Trainer(m, make_lf(), fnn.SGD(m.parameters(), lr=0.2), epochs=3, batch_size=16,
                     seed=5, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no compile_step fallback warning
        h = tr.fit(X, y, sample_weight=w)
    ref_m = _manual_weighted_fit(build, make_lf(), X, y, w, 3, 16, 5)
    for p1, p2 in zip(m.parameters(), ref_m.parameters()):
        assert_bitwise_equal(p1.data, p2.data)
    assert len(h["loss"]) == 3 and np.isfinite(h["loss"]).all()
    # all-ones weights train as the unweighted fit (the compiled step), to rounding
    m1, m2 = build(), build()
    fnn.Trainer(m1, make_lf(), fnn.SGD(m1.parameters(), lr=0.2), epochs=2, batch_size=16,
                seed=5, progress=False).fit(X, y, sample_weight=np.ones(70))
    fnn.Trainer(m2, make_lf(), fnn.SGD(m2.parameters(), lr=0.2), epochs=2, batch_size=16,
                seed=5, progress=False).fit(X, y)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(p1.data, p2.data, rtol=1e-12, atol=1e-14)


def test_trainer_fit_sample_weight_errors(rng):
    X = rng.standard_normal((10, 5))
    y = rng.integers(0, 3, 10)
    m = fnn.Sequential(fnn.Linear(5, 3, rng=1, dtype=np.float64))
    tr = fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.1),
                     progress=False)
    with pytest.raises(ValueError, match=r"Trainer.fit: sample_weight must have shape \(10,\)"):
        tr.fit(X, y, sample_weight=np.ones(9))
    with pytest.raises(ValueError, match="Trainer.fit: sample_weight must be finite and >= 0"):
        tr.fit(X, y, sample_weight=-np.ones(10))


COMPILED = {"l1": lambda: fnn.L1Loss(), "huber-0.5": lambda: fnn.HuberLoss(delta=0.5),
            "huber-sum": lambda: fnn.HuberLoss("sum"),
            "smoothl1-0.5": lambda: fnn.SmoothL1Loss(beta=0.5),
            "smoothl1-0": lambda: fnn.SmoothL1Loss(beta=0.0),
            "bcelogits": lambda: fnn.BCEWithLogitsLoss(),
            "bcelogits-sum": lambda: fnn.BCEWithLogitsLoss(reduction="sum"),
            "bcelogits-pw": lambda: fnn.BCEWithLogitsLoss(pos_weight=np.linspace(0.5, 2, 300)),
            "bcelogits-pw1": lambda: fnn.BCEWithLogitsLoss(pos_weight=3.0, reduction="sum")}


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("name", list(COMPILED))
def test_compiled_step_equals_module_path(name, nt, dtype, native, threads, rng):
    """The elementwise losses compile; parameters and losses bitwise equal to the module
    path (a large batch, so 2 threads split the loss kernel)."""
    fnn.set_num_threads(nt)

    def build():
        return fnn.Sequential(fnn.Linear(20, 64, rng=1, dtype=dtype), fnn.Tanh(),
                              fnn.Linear(64, 300, rng=2, dtype=dtype))
    m1, m2 = build(), build()
    lf1, lf2 = COMPILED[name](), COMPILED[name]()
    o1 = fnn.SGD(m1.parameters(), lr=0.05, momentum=0.9)
    o2 = fnn.SGD(m2.parameters(), lr=0.05, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = fnn.compile_step(m1, lf1, o1)
    assert step.compiled, step.reason
    for i in range(4):
        x = rng.standard_normal((400, 20)).astype(dtype)
        t = (rng.uniform(size=(400, 300)) < 0.5).astype(dtype) if "bce" in name else \
            rng.standard_normal((400, 300)).astype(dtype)
        if i == 2 and name.startswith("huber-0.5"):
            lf1.delta = lf2.delta = 0.25        # read on every call
        a = step(x, t)
        o2.zero_grad()
        b = lf2(m2(x), t)
        m2.backward(lf2.backward(), input_grad=False)
        o2.step()
        assert a == b, (i, a, b)
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            assert_bitwise_equal(p1.data, p2.data, f"step {i}")
            assert_bitwise_equal(p1.grad, p2.grad, f"step {i}")


@pytest.mark.parametrize("name", ["huber-0.5", "bcelogits", "bcelogits-pw1"])
def test_trainer_compiled_equals_module_path(name, dtype, rng):
    X = rng.standard_normal((150, 6)).astype(dtype)
    Y = (X[:, :2] > 0).astype(dtype) if "bce" in name else X[:, :2] * 2.0
    res = []
    for compiled in (True, False):
        m = fnn.Sequential(fnn.Linear(6, 16, rng=1, dtype=dtype), fnn.ReLU(),
                           fnn.Linear(16, 2, rng=2, dtype=dtype))
        tr = fnn.Trainer(m, COMPILED[name](), fnn.SGD(m.parameters(), lr=0.1), epochs=3,
                         batch_size=32, progress=False, compiled=compiled)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = tr.fit(X, Y)
        res.append((h["loss"], [p.data.copy() for p in m.parameters()]))
    assert res[0][0] == res[1][0]
    for a, b in zip(res[0][1], res[1][1]):
        assert_bitwise_equal(a, b)


def test_compiled_step_regression_target_errors(rng):
    m = fnn.Sequential(fnn.Linear(4, 3, rng=1))
    step = fnn.compile_step(m, fnn.HuberLoss(), fnn.SGD(m.parameters(), lr=0.1))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="HuberLoss targets must be a numpy.ndarray of dtype "
                                        "float32"):
        step(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="targets must have the output's shape"):
        step(x, np.zeros((5, 2), np.float32))


def test_compiled_pos_weight_broadcast_error(rng):
    """A pos_weight that does not fit the output: the module path's error, from the step."""
    m = fnn.Sequential(fnn.Linear(4, 3, rng=1))
    step = fnn.compile_step(m, fnn.BCEWithLogitsLoss(pos_weight=[1.0, 2.0]),
                            fnn.SGD(m.parameters(), lr=0.1))
    assert step.compiled
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast to "
                                         r"pred's shape without its batch axis, \(3,\)"):
        step(x, np.zeros((5, 3), np.float32))
