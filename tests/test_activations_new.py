"""GELU (erf and tanh), SiLU, Softplus, ELU, Softmax and LogSoftmax: kernel accuracy in ulps
for every kernel variant and dtype, special values as torch, the GEMM writeback, gradcheck,
parity with PyTorch (forward, every gradient, 10 training steps), the compiled step and
compiled inference bitwise equal to the module path (Sequential and Graph), 1 vs 2 threads,
save/load, repr and errors."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as R
from fastnn.ops import SAVES_INPUT
from _util import DTYPES, VARIANTS, assert_bitwise_equal

# name, parameter (negative_slope: softplus's beta, elu's alpha)
KERNELS = [("gelu", 0.0), ("gelu_tanh", 0.0), ("silu", 0.0), ("softplus", 1.0),
           ("softplus", 2.5), ("elu", 1.0), ("elu", 0.3)]
KIDS = [f"{a}-{p}" for a, p in KERNELS]

# max ulp error of the forward over |x| <= 5 and |x| <= 10, the worst of the generic, AVX2
# and AVX-512 variants as measured (README's activation table): float32 vs a float64
# reference, float64 vs mpmath.  The tails of gelu / gelu_tanh lose ~x^2/2 ulps through
# exp(-x^2/2) / exp(2u) of a rounded argument; softplus's through u = beta x.
ULPS = {np.float32: {"gelu": (17, 34), "gelu_tanh": (39, 193), "silu": (3.1, 3.2),
                     "softplus": (10.1, 17.5), "elu": (2.6, 2.6)},
        np.float64: {"gelu": (9, 32), "gelu_tanh": (27, 232), "silu": (3, 3),
                     "softplus": (3, 3), "elu": (2, 2)}}

# module factories: (id, fastnn, torch)
MODULES = [("gelu", lambda: fnn.GELU(), lambda t: t.nn.GELU()),
           ("gelu-tanh", lambda: fnn.GELU("tanh"), lambda t: t.nn.GELU(approximate="tanh")),
           ("silu", lambda: fnn.SiLU(), lambda t: t.nn.SiLU()),
           ("softplus", lambda: fnn.Softplus(), lambda t: t.nn.Softplus()),
           ("softplus-b2", lambda: fnn.Softplus(beta=2.0), lambda t: t.nn.Softplus(beta=2.0)),
           ("elu", lambda: fnn.ELU(), lambda t: t.nn.ELU()),
           ("elu-0.4", lambda: fnn.ELU(0.4), lambda t: t.nn.ELU(0.4)),
           ("elu-neg", lambda: fnn.ELU(-0.5), lambda t: t.nn.ELU(-0.5))]
MIDS = [m[0] for m in MODULES]
ROW = [("softmax", lambda: fnn.Softmax(dim=1), lambda t: t.nn.Softmax(dim=1)),
       ("logsoftmax", lambda: fnn.LogSoftmax(dim=1), lambda t: t.nn.LogSoftmax(dim=1))]
ALL = MODULES + ROW
AIDS = [m[0] for m in ALL]
# the ones the compiled step runs (ELU with a negative alpha reads its input: module path)
COMPILED = [m for m in ALL if m[0] != "elu-neg"]
CIDS = [m[0] for m in COMPILED]


def _ref64(name, x, p):
    """A careful float64 reference (scipy's ndtr / expit / log1p / expm1)."""
    from scipy.special import expit, ndtr
    if name == "gelu":
        return x * ndtr(x)
    if name == "gelu_tanh":
        return x * expit(2 * np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))
    if name == "silu":
        return x * expit(x)
    if name == "softplus":
        u = p * x
        return np.where(u > 20, x, (np.maximum(u, 0) + np.log1p(np.exp(-np.abs(u)))) / p)
    return np.where(x > 0, x, p * np.expm1(np.minimum(x, 0)))


def _refmp(name, x, p):
    import mpmath as mp
    x = mp.mpf(float(x))
    if name == "gelu":
        return x * mp.ncdf(x)
    if name == "gelu_tanh":
        u = mp.sqrt(2 / mp.pi) * (x + mp.mpf(0.044715) * x ** 3)
        return x / (1 + mp.exp(-2 * u))
    if name == "silu":
        return x / (1 + mp.exp(-x))
    if name == "softplus":
        u = mp.mpf(p) * x
        return x if u > 20 else mp.log1p(mp.exp(u)) / mp.mpf(p)
    return x if x > 0 else mp.mpf(p) * mp.expm1(x)


def _ulps(got, ref, dt):
    return np.abs(got.astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(dt))


# ------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("name,p", KERNELS, ids=KIDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_ulps_float32(name, p, variant):
    fnn.set_kernel_variant(variant)
    x = np.linspace(-10, 10, 200001).astype(np.float32).reshape(1, -1)
    got = fnn.activation_forward(x, name, negative_slope=p)
    u = _ulps(got, _ref64(name, x.astype(np.float64), p), np.float32)
    core = np.abs(x) <= 5
    lim = ULPS[np.float32][name]
    assert u[core].max() <= lim[0] and u.max() <= lim[1], (u[core].max(), u.max())


@pytest.mark.parametrize("name,p", KERNELS, ids=KIDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_ulps_float64(name, p, variant):
    pytest.importorskip("mpmath")
    fnn.set_kernel_variant(variant)
    x = np.linspace(-10, 10, 1201).reshape(1, -1)
    got = fnn.activation_forward(x, name, negative_slope=p)[0]
    ref = np.array([float(_refmp(name, t, p)) for t in x[0]])
    u = _ulps(got, ref, np.float64)
    core = np.abs(x[0]) <= 5
    lim = ULPS[np.float64][name]
    assert u[core].max() <= lim[0] and u.max() <= lim[1], (u[core].max(), u.max())


@pytest.mark.parametrize("name,p", KERNELS, ids=KIDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
def test_backward_matches_reference(name, p, variant, dt, rng):
    fnn.set_kernel_variant(variant)
    x = (rng.standard_normal((5, 37)) * 4).astype(dt)
    x[0, :5] = [0, -30, 30, 1e-6, -1e-6]
    g = rng.standard_normal(x.shape).astype(dt)
    y = fnn.activation_forward(x, name, negative_slope=p)
    saved = x if name in SAVES_INPUT else y
    got = fnn.activation_backward(g, saved, name, negative_slope=p)
    # the reference from the exact saved value (float64)
    ref = R._activation_grad64(g.astype(np.float64), saved.astype(np.float64), name, p)
    tol = (2e-6, 1e-6) if dt == np.float32 else (1e-13, 1e-14)
    np.testing.assert_allclose(got, ref, rtol=tol[0], atol=tol[1])


@pytest.mark.parametrize("name,p", KERNELS, ids=KIDS)
@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
def test_special_values_as_torch(name, p, dt):
    torch = pytest.importorskip("torch")
    x = np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 88.0, -88.0, 700.0,
                   -700.0]], dt)
    if dt == np.float32:
        x = np.where(np.abs(x) == 700, np.sign(x) * 3e38, x).astype(dt)
    # torch in float64, rounded to dt (torch's own float32 GELU gives NaN at +inf): NaN where
    # torch has NaN (gelu(-inf) = -inf * 0), infinities and signed zeros kept; results
    # below float32's normal range may flush to zero
    t = torch.from_numpy(x.astype(np.float64))
    F = torch.nn.functional
    ref = {"gelu": lambda: F.gelu(t), "gelu_tanh": lambda: F.gelu(t, approximate="tanh"),
           "silu": lambda: F.silu(t), "softplus": lambda: F.softplus(t, beta=p),
           "elu": lambda: F.elu(t, alpha=p)}[name]().numpy().astype(dt)
    got = fnn.activation_forward(x, name, negative_slope=p)
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (got, ref)
    fin = ~np.isnan(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-6, atol=100 * np.finfo(dt).tiny)
    z = ref == 0
    assert np.array_equal(np.signbit(got[z]), np.signbit(ref[z])), (got, ref)


@pytest.mark.parametrize("name,p", KERNELS, ids=KIDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
def test_gemm_writeback_equals_gemm_then_activation(name, p, variant, dt, rng):
    # the fused epilogue and the separate pass are bitwise equal, in every tile shape
    fnn.set_kernel_variant(variant)
    for m, k, n in ((1, 3, 1), (7, 5, 13), (33, 17, 40), (50, 64, 70)):
        x = rng.standard_normal((m, k)).astype(dt)
        W = rng.standard_normal((n, k)).astype(dt)
        b = rng.standard_normal(n).astype(dt)
        fused = fnn.linear_forward(x, W, b, name, negative_slope=p)
        z = fnn.linear_forward(x, W, b)
        assert_bitwise_equal(fused, fnn.activation_forward(z, name, negative_slope=p),
                             f"{m}x{k}x{n}")
        g = fnn.gemm(x, W, trans_b=True, bias=b, activation=name, negative_slope=p)
        assert_bitwise_equal(g, fused)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "logsoftmax"])
@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
def test_softmax_kernels_match_reference(log, dt, rng):
    m = fnn.LogSoftmax() if log else fnn.Softmax()
    for n in (1, 3, 64, 65, 200):
        x = (rng.standard_normal((9, n)) * 10).astype(dt)
        x[0, 0] = 1e4            # no overflow: each row's maximum is subtracted
        y = m(x)
        tol = (1e-5, 1e-6) if dt == np.float32 else (1e-13, 1e-15)
        np.testing.assert_allclose(y, R.softmax(x, log), rtol=tol[0], atol=tol[1])
        g = rng.standard_normal(x.shape).astype(dt)
        np.testing.assert_allclose(m.backward(g), R.softmax_grad(g, y, log), rtol=tol[0],
                                   atol=tol[1] * 10)


# ----------------------------------------------------------------------------- modules
@pytest.mark.parametrize("mid,make,_t", ALL, ids=AIDS)
def test_gradcheck_module(mid, make, _t, rng):
    x = rng.standard_normal((4, 6)) * 2
    assert fnn.gradcheck(make(), x)


@pytest.mark.parametrize("mid,make,_t", ALL, ids=AIDS)
def test_gradcheck_mlp(mid, make, _t, rng):
    model = fnn.Sequential(fnn.Linear(5, 7, dtype=np.float64, rng=1), make(),
                           fnn.Linear(7, 4, dtype=np.float64, rng=2), make())
    assert fnn.gradcheck(model, rng.standard_normal((3, 5)))


@pytest.mark.parametrize("mid,make,make_t", ALL, ids=AIDS)
def test_torch_parity_forward_backward(mid, make, make_t, rng):
    torch = pytest.importorskip("torch")
    sizes = (9, 11, 8, 5)
    f_layers, t_layers = [], []
    for i in range(3):
        lin = fnn.Linear(sizes[i], sizes[i + 1], dtype=np.float64, rng=i)
        tl = torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float64)
        with torch.no_grad():
            tl.weight.copy_(torch.from_numpy(lin.weight.data.copy()))
            tl.bias.copy_(torch.from_numpy(lin.bias.data.copy()))
        f_layers += [lin, make()]
        t_layers += [tl, make_t(torch)]
    fm, tm = fnn.Sequential(*f_layers), torch.nn.Sequential(*t_layers)
    x = rng.standard_normal((6, 9)) * 2
    g = rng.standard_normal((6, 5))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = tm(xt)
    yt.backward(torch.from_numpy(g))
    y = fm(x)
    gx = fm.backward(g)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-11, atol=1e-13)
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-11, atol=1e-13,
                                   err_msg=name)


def test_torch_parity_training_mixed_mlp(rng):
    """10 SGD steps (momentum) of an MLP mixing every new activation, float64."""
    torch = pytest.importorskip("torch")
    sizes = (10, 16, 16, 16, 16, 12, 6)
    acts = [(fnn.GELU(), torch.nn.GELU()), (fnn.SiLU(), torch.nn.SiLU()),
            (fnn.Softplus(beta=1.5), torch.nn.Softplus(beta=1.5)),
            (fnn.ELU(0.8), torch.nn.ELU(0.8)),
            (fnn.GELU("tanh"), torch.nn.GELU(approximate="tanh"))]
    f_layers, t_layers = [], []
    for i in range(len(sizes) - 1):
        lin = fnn.Linear(sizes[i], sizes[i + 1], dtype=np.float64, rng=10 + i)
        tl = torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float64)
        with torch.no_grad():
            tl.weight.copy_(torch.from_numpy(lin.weight.data.copy()))
            tl.bias.copy_(torch.from_numpy(lin.bias.data.copy()))
        f_layers.append(lin)
        t_layers.append(tl)
        if i < len(acts):
            f_layers.append(acts[i][0])
            t_layers.append(acts[i][1])
    f_layers.append(fnn.LogSoftmax(dim=1))
    t_layers.append(torch.nn.LogSoftmax(dim=1))
    fm, tm = fnn.Sequential(*f_layers), torch.nn.Sequential(*t_layers)
    fo = fnn.SGD(fm.parameters(), lr=0.05, momentum=0.9)
    to = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    lf = fnn.MSELoss()
    for step in range(10):
        x = rng.standard_normal((8, 10))
        t = rng.standard_normal((8, 6))
        fm.zero_grad()
        loss = lf(fm(x), t)
        fm.backward(lf.backward(), input_grad=False)
        fo.step()
        to.zero_grad()
        tl_ = torch.nn.functional.mse_loss(tm(torch.from_numpy(x)), torch.from_numpy(t))
        tl_.backward()
        to.step()
        assert abs(loss - tl_.item()) <= 1e-12 * max(1.0, abs(loss)), step
    for p, tp in zip(fm.parameters(), tm.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- compiled = module path
def _chain(make, dt):
    return fnn.Sequential(fnn.Linear(6, 9, dtype=dt, rng=1), make(),
                          fnn.Linear(9, 7, dtype=dt, rng=2), make(),
                          fnn.Linear(7, 4, dtype=dt, rng=3))


def _graph(make, dt):
    """The activation fused (Linear's only consumer) and standalone (after an Add)."""
    g = fnn.Graph()
    x = g.input("x", features=6)
    a = g.add(make(), g.add(fnn.Linear(6, 8, dtype=dt, rng=1), x))
    b = g.add(fnn.Linear(6, 8, dtype=dt, rng=2), x)
    s = g.add(make(), g.add(fnn.Add(), a, b))
    g.output(g.add(fnn.Linear(8, 4, dtype=dt, rng=3), s))
    return g


def _train_both(build, make, dt, rng, threads=None, steps=4):
    m1, m2 = build(make, dt), build(make, dt)
    o1 = fnn.SGD(m1.parameters(), lr=0.05, momentum=0.9)
    o2 = fnn.SGD(m2.parameters(), lr=0.05, momentum=0.9)
    lf = fnn.CrossEntropyLoss()
    if threads:
        fnn.set_num_threads(threads)
    step = fnn.compile_step(m2, lf, o2)
    assert step.compiled, step.reason
    for _ in range(steps):
        x = rng.standard_normal((37, 6)).astype(dt)
        y = rng.integers(0, 4, 37)
        m1.zero_grad()
        l1 = lf(m1(x), y)
        m1.backward(lf.backward(), input_grad=False)
        o1.step()
        l2 = step(x, y)
        assert l1 == l2
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        assert_bitwise_equal(a.data, b.data, n)
        assert_bitwise_equal(a.grad, b.grad, n + ".grad")
    return m2


@pytest.mark.parametrize("mid,make,_t", COMPILED, ids=CIDS)
@pytest.mark.parametrize("build", [_chain, _graph], ids=["sequential", "graph"])
def test_compiled_step_bitwise_equals_module_path(mid, make, _t, build, dtype, rng):
    _train_both(build, make, dtype, rng)


@pytest.mark.parametrize("mid,make,_t", COMPILED, ids=CIDS)
def test_one_and_two_threads_bitwise(mid, make, _t, dtype):
    # a batch large enough for the elementwise and GEMM kernels to split
    def wide(make, dt):
        return fnn.Sequential(fnn.Linear(6, 600, dtype=dt, rng=1), make(),
                              fnn.Linear(600, 300, dtype=dt, rng=2), make(),
                              fnn.Linear(300, 4, dtype=dt, rng=3))
    res = []
    for t in (1, 2):
        fnn.set_num_threads(t)
        m = wide(make, dtype)
        o = fnn.SGD(m.parameters(), lr=0.01)
        step = fnn.compile_step(m, fnn.CrossEntropyLoss(), o)
        r = np.random.default_rng(5)
        for _ in range(2):
            step(r.standard_normal((256, 6)).astype(dtype), r.integers(0, 4, 256))
        res.append([p.data.copy() for p in m.parameters()])
        out = m(r.standard_normal((300, 6)).astype(dtype))
        res[-1].append(out)
    for a, b in zip(*res):
        assert_bitwise_equal(a, b)


@pytest.mark.parametrize("mid,make,_t", COMPILED, ids=CIDS)
@pytest.mark.parametrize("build", [_chain, _graph], ids=["sequential", "graph"])
def test_compiled_inference_bitwise_equals_eval(mid, make, _t, build, dtype, rng):
    m = build(make, dtype)
    f = fnn.compile_inference(m)
    assert f.compiled, f.reason
    x = rng.standard_normal((21, 6)).astype(dtype)
    ref = m.eval()(x)
    assert_bitwise_equal(f(x), ref)
    m.train()
    assert_bitwise_equal(m(x), ref)    # training forward (pre-activation kept) = eval


def test_trainer_compiled_epochs_equal_module_path(rng):
    X = rng.standard_normal((96, 6))
    y = rng.integers(0, 4, 96)
    ps = []
    for compiled in (True, False):
        m = fnn.Sequential(fnn.Linear(6, 12, dtype=np.float64, rng=1), fnn.GELU(),
                           fnn.Linear(12, 12, dtype=np.float64, rng=2), fnn.SiLU(),
                           fnn.Linear(12, 8, dtype=np.float64, rng=3), fnn.ELU(),
                           fnn.Linear(8, 4, dtype=np.float64, rng=4))
        tr = fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.1),
                         batch_size=16, epochs=2, progress=False, compiled=compiled)
        tr.fit(X, y)
        ps.append([p.data.copy() for p in m.parameters()])
    for a, b in zip(*ps):
        assert_bitwise_equal(a, b)


def test_fusion_rule():
    from fastnn.nn.plan import LinearStep, plan_chain
    for act in (fnn.GELU(), fnn.GELU("tanh"), fnn.SiLU(), fnn.Softplus(), fnn.ELU()):
        plan = plan_chain([fnn.Linear(3, 4), act])
        assert len(plan.steps) == 1 and type(plan.steps[0]) is LinearStep
    for act in (fnn.ELU(-1.0), fnn.Softmax(), fnn.LogSoftmax()):
        assert len(plan_chain([fnn.Linear(3, 4), act]).steps) == 2


# --------------------------------------------------------- save/load, repr and errors
@pytest.mark.parametrize("mid,make,_t", ALL, ids=AIDS)
def test_save_load_round_trip(mid, make, _t, tmp_path, rng):
    m = _chain(make, np.float64)
    path = str(tmp_path / "m.npz")
    fnn.save(m, path)
    m2 = fnn.load(path)
    assert repr(m2) == repr(m)
    x = rng.standard_normal((5, 6))
    assert_bitwise_equal(m2(x), m(x))


@pytest.mark.parametrize("mid,make,make_t", ALL, ids=AIDS)
def test_repr_like_torch(mid, make, make_t):
    torch = pytest.importorskip("torch")
    assert repr(make()) == repr(make_t(torch))


def test_errors():
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh'"):
        fnn.GELU("fast")
    with pytest.raises(ValueError, match="Softplus: beta must be a finite positive"):
        fnn.Softplus(beta=0)
    with pytest.raises(TypeError, match="Softplus: beta must be a number"):
        fnn.Softplus(beta="x")
    with pytest.raises(ValueError, match="Softplus: threshold must be a finite number"):
        fnn.Softplus(threshold=np.nan)
    with pytest.raises(ValueError, match="ELU: alpha must be a finite"):
        fnn.ELU(np.inf)
    with pytest.raises(ValueError, match="Softmax: dim must be 1"):
        fnn.Softmax(dim=0)
    with pytest.raises(ValueError, match="LogSoftmax: dim must be 1"):
        fnn.LogSoftmax(dim=2)
    with pytest.raises(ValueError, match=r"Softmax\(dim=1\): input must be 2-D"):
        fnn.Softmax()(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="GELU"):
        fnn.GELU()(np.zeros((2, 3), np.int64))
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="softplus needs negative_slope .its beta. finite"):
        fnn.activation_forward(x, "softplus", negative_slope=0.0)
    with pytest.raises(ValueError, match="elu's alpha. must be finite"):
        fnn.activation_forward(x, "elu", negative_slope=np.nan)
    with pytest.raises(ValueError, match="elu backward needs negative_slope"):
        fnn.activation_backward(x, x, "elu", negative_slope=-1.0)
    m = fnn.SiLU()
    m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="SiLU"):
        m.backward(np.zeros((3, 3)))


@pytest.mark.parametrize("threshold", [1.0, 5.0, 30.0, -2.0])
@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
def test_softplus_other_thresholds(threshold, dt, rng):
    """torch's threshold rule for any threshold (module path): forward, backward, gradcheck;
    compile_step and compile_inference fall back to the module path."""
    torch = pytest.importorskip("torch")
    beta = 1.5
    m = fnn.Softplus(beta=beta, threshold=threshold)
    x = np.concatenate([np.linspace(-30, 30, 301), [threshold / beta,
                                                    np.nextafter(threshold / beta, 99)]])
    x = x.astype(dt).reshape(3, -1)
    g = rng.standard_normal(x.shape).astype(dt)
    # torch in the same dtype: which side of the threshold a value falls on is decided in it
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = torch.nn.functional.softplus(xt, beta=beta, threshold=threshold)
    yt.backward(torch.from_numpy(g.copy()))
    tol = (2e-6, 1e-7) if dt == np.float32 else (1e-13, 1e-15)
    np.testing.assert_allclose(m(x), yt.detach().numpy(), rtol=tol[0], atol=tol[1])
    np.testing.assert_allclose(m.backward(g), xt.grad.numpy(), rtol=tol[0], atol=tol[1])
    if dt == np.float64:
        assert fnn.gradcheck(fnn.Softplus(beta=beta, threshold=threshold),
                             rng.standard_normal((3, 4)) * 3)
    model = _chain(lambda: fnn.Softplus(beta=beta, threshold=threshold), dt)
    with pytest.warns(RuntimeWarning, match="does not fuse"):
        step = fnn.compile_step(model, fnn.CrossEntropyLoss(), fnn.SGD(model.parameters(),
                                                                      lr=0.1))
    assert not step.compiled
    f = fnn.compile_inference(model)
    assert not f.compiled
    xi = rng.standard_normal((5, 6)).astype(dt) * 10
    assert_bitwise_equal(f(xi), model.eval()(xi))
