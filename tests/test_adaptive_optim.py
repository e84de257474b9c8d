"""Adam, AdamW and RMSprop: the kernels against the NumPy oracle (both dtypes, every kernel
variant), PyTorch parity over every option combination, the compiled step and the Trainer
bitwise equal to the module path, state_dict, hyperparameter checks."""
import itertools
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as ref
from fastnn._kernels import optim as _ko
from fastnn._kernels._core import OptKind
from _util import assert_bitwise_equal

ADAM_OPTS = [dict(weight_decay=wd, amsgrad=ams, maximize=mx, betas=b)
             for wd, ams, mx, b in itertools.product((0.0, 0.1), (False, True), (False, True),
                                                     ((0.9, 0.999), (0.3, 0.8)))]
RMS_OPTS = [dict(weight_decay=wd, momentum=mom, centered=c, maximize=mx, alpha=a)
            for wd, mom, c, mx, a in itertools.product((0.0, 0.1), (0.0, 0.9), (False, True),
                                                       (False, True), (0.99, 0.3))]
CASES = ([("Adam", o) for o in ADAM_OPTS] + [("AdamW", o) for o in ADAM_OPTS] +
         [("RMSprop", o) for o in RMS_OPTS])


def _id(case):
    name, o = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in o.items())


def _oracle(name, o, p, g, state, t, lr):
    """One step of the NumPy oracle; state is a 3-tuple of arrays (zeros at first)."""
    if name == "RMSprop":
        p, *st = ref.rmsprop_step(p, g, *state, lr=lr, **o)
    else:
        p, *st = ref.adam_step(p, g, *state, t, lr=lr, decoupled=name == "AdamW", **o)
    return p, tuple(st)


# ---------------------------------------------------------------- kernels vs the oracle
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_kernel_matches_oracle(case, dtype, variant, rng):
    name, o = case
    n = 1000
    p = rng.standard_normal(n).astype(dtype)
    state = tuple(np.zeros(n, dtype) for _ in range(3))
    opt = getattr(fnn, name)([fnn.Parameter(p.copy())], lr=0.01, **o)
    rp, rs = p.copy(), state
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for t in range(1, 6):
        g = rng.standard_normal(n).astype(dtype)
        opt.params[0].grad[...] = g
        opt.step()
        rp, rs = _oracle(name, o, rp, g, rs, t, 0.01)
        np.testing.assert_allclose(opt.params[0].data, rp, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", [OptKind.ADAM, OptKind.ADAMW, OptKind.RMSPROP])
def test_each_fused_specialization_computes(kind, dtype, rng):
    # the float and double branches of optim._update, called directly
    fn = _ko._update["float" if dtype == np.float32 else "double"]
    n = 37
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    st = tuple(np.zeros(n, dtype) for _ in range(3))
    if kind == OptKind.RMSPROP:
        hyper = (0.01, 0.9, 1e-8, 0.1, 0.5, 1.0, 0.0)
        exp, *_ = ref.rmsprop_step(p, g, *st, lr=0.01, alpha=0.9, weight_decay=0.1,
                                   momentum=0.5, centered=True)
    else:
        hyper = (0.01, 0.9, 0.99, 1e-8, 0.1, 1.0, 0.0)
        exp, *_ = ref.adam_step(p, g, *st, 1, lr=0.01, betas=(0.9, 0.99), weight_decay=0.1,
                                amsgrad=True, decoupled=kind == OptKind.ADAMW)
    q = p.copy()
    fn(int(kind), hyper, 1, q, g, st, True)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(q, exp, rtol=tol, atol=tol)
    assert not np.array_equal(q, p)


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_update_bitwise_identical_for_any_thread_count(name, dtype, rng):
    n = 300_001                                       # many chunks, a ragged last one
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    kw = dict(centered=True, momentum=0.9) if name == "RMSprop" else dict(amsgrad=True)
    out = []
    for nt in (1, 2, 4):
        fnn.set_num_threads(nt)
        opt = getattr(fnn, name)([fnn.Parameter(p0.copy())], lr=0.01, weight_decay=0.01, **kw)
        for g in grads:
            opt.params[0].grad[...] = g
            opt.step()
        out.append(opt.params[0].data.copy())
    assert_bitwise_equal(out[0], out[1])
    assert_bitwise_equal(out[0], out[2])


# ------------------------------------------------------------------------ PyTorch parity
def _torch_opt(torch, name, params, lr, o):
    cls = getattr(torch.optim, name)
    kw = dict(o)
    return cls(params, lr=lr, **kw)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_torch_parity_20_steps(case, rng):
    torch = pytest.importorskip("torch")
    name, o = case
    model = fnn.Sequential(fnn.Linear(7, 12, dtype=np.float64, rng=1), fnn.Tanh(),
                           fnn.Linear(12, 3, dtype=np.float64, rng=2))
    lf = fnn.CrossEntropyLoss()
    opt = getattr(fnn, name)(model.parameters(), lr=0.01, **o)
    tp = [torch.tensor(p.data.copy(), requires_grad=True) for p in model.parameters()]
    topt = _torch_opt(torch, name, tp, 0.01, o)
    for step in range(20):
        x = rng.standard_normal((16, 7))
        y = rng.integers(0, 3, 16)
        opt.zero_grad()
        lf(model(x), y)
        model.backward(lf.backward(), input_grad=False)
        for t, p in zip(tp, model.parameters()):
            t.grad = torch.tensor(p.grad.copy())       # the same gradients into torch
        opt.step()
        topt.step()
        for i, (t, p) in enumerate(zip(tp, model.parameters())):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-13,
                                       err_msg=f"{name} {o} step {step} param {i}")
    # the state too
    sd = opt.state_dict()
    tsd = topt.state_dict()["state"]
    for i in range(len(tp)):
        for key in opt._state_names:
            if key in tsd[i] and sd[key][i] is not None:
                np.testing.assert_allclose(sd[key][i], tsd[i][key].numpy(), rtol=1e-10,
                                           atol=1e-15, err_msg=f"{key}[{i}]")


# ----------------------------------------------------- compiled step == module path
def _mlp(dtype, seed=0):
    return fnn.Sequential(fnn.Linear(6, 20, dtype=dtype, rng=seed), fnn.ReLU(),
                          fnn.Linear(20, 20, dtype=dtype, rng=seed + 1), fnn.Sigmoid(),
                          fnn.Linear(20, 4, dtype=dtype, rng=seed + 2))


def _module_step(model, lf, opt, x, y):
    model.zero_grad()
    opt.zero_grad()
    loss = lf(model(x), y)
    model.backward(lf.backward(), input_grad=False)
    opt.step()
    return loss


def _same_state(o1, o2, what):
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        if k in o1._state_names:
            for a, b in zip(s1[k], s2[k]):
                assert (a is None) == (b is None), (what, k)
                if a is not None:
                    assert_bitwise_equal(a, b, f"{what} {k}")
        else:
            assert s1[k] == s2[k], (what, k)


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("case", [CASES[0], CASES[7], CASES[16 + 5], CASES[32 + 13],
                                  CASES[32 + 6]], ids=_id)
def test_compiled_step_bitwise_equals_module_path(case, n_threads, dtype, rng):
    fnn.set_num_threads(n_threads)
    name, o = case
    m1, m2 = _mlp(dtype), _mlp(dtype)
    o1 = getattr(fnn, name)(m1.parameters(), lr=0.01, **o)
    o2 = getattr(fnn, name)(m2.parameters(), lr=0.01, **o)
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = fnn.compile_step(m1, lf1, o1)
    assert step.compiled, step.reason
    for i in range(8):
        m = 3000 if i == 3 else 17                     # one batch above the parallel threshold
        x = rng.standard_normal((m, 6)).astype(dtype)
        y = rng.integers(0, 4, m)
        assert step(x, y) == _module_step(m2, lf2, o2, x, y), i
        for a, b in zip(m1.parameters(), m2.parameters()):
            assert_bitwise_equal(a.data, b.data, f"step {i}")
            assert_bitwise_equal(a.grad, b.grad, f"step {i} grad")
        _same_state(o1, o2, f"step {i}")
    assert o1.steps == o2.steps == 8


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_hyperparameters_changed_between_compiled_steps(name, dtype, rng):
    m1, m2 = _mlp(dtype), _mlp(dtype)
    o1 = getattr(fnn, name)(m1.parameters(), lr=0.01)
    o2 = getattr(fnn, name)(m2.parameters(), lr=0.01)
    lf1, lf2 = fnn.MSELoss(), fnn.MSELoss()
    step = fnn.compile_step(m1, lf1, o1)
    if name == "RMSprop":
        schedule = [{}, dict(momentum=0.9), dict(centered=True), dict(lr=0.001),
                    dict(momentum=0.0, weight_decay=0.1), dict(maximize=True),
                    dict(alpha=0.3, centered=False)]
    else:
        schedule = [{}, dict(amsgrad=True), dict(lr=0.1), dict(betas=(0.5, 0.9)),
                    dict(weight_decay=0.1), dict(amsgrad=False, eps=1e-3),
                    dict(maximize=True)]
    for i, change in enumerate(schedule):
        for o in (o1, o2):
            for k, v in change.items():
                setattr(o, k, v)
        x = rng.standard_normal((9, 6)).astype(dtype)
        y = rng.standard_normal((9, 4)).astype(dtype)
        assert step(x, y) == _module_step(m2, lf2, o2, x, y), (i, change)
        for a, b in zip(m1.parameters(), m2.parameters()):
            assert_bitwise_equal(a.data, b.data, f"step {i} after {change}")
        _same_state(o1, o2, f"step {i}")
    assert step.compiled


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_trainer_compiled_equals_module_path(name, dtype, rng):
    X = rng.standard_normal((300, 6)).astype(dtype)
    y = rng.integers(0, 4, 300)
    runs = []
    for compiled in (True, False):
        m = _mlp(dtype)
        opt = getattr(fnn, name)(m.parameters(), lr=0.01)
        t = fnn.Trainer(m, fnn.CrossEntropyLoss(), opt, batch_size=32, epochs=3,
                        progress=False, compiled=compiled, seed=5)
        h = t.fit(X, y)
        runs.append((h.history["loss"], [p.data.copy() for p in m.parameters()], opt.steps))
    assert runs[0][0] == runs[1][0]
    assert runs[0][2] == runs[1][2] == 30
    for a, b in zip(runs[0][1], runs[1][1]):
        assert_bitwise_equal(a, b)


def test_adam_learns_the_spiral():
    # the CS231n spiral: 3 classes of 100 points
    rng = np.random.default_rng(0)
    n, k = 100, 3
    X = np.zeros((n * k, 2), np.float32)
    y = np.repeat(np.arange(k), n)
    for j in range(k):
        r = np.linspace(0.0, 1, n)
        t = np.linspace(j * 4, (j + 1) * 4, n) + rng.standard_normal(n) * 0.2
        X[j * n:(j + 1) * n] = np.c_[r * np.sin(t), r * np.cos(t)]
    m = fnn.Sequential(fnn.Linear(2, 100, rng=0), fnn.ReLU(), fnn.Linear(100, 3, rng=1))
    t = fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.Adam(m.parameters(), lr=0.01),
                    batch_size=32, epochs=150, progress=False)
    t.fit(X, y)
    assert (m(X).argmax(1) == y).mean() >= 0.97


# ------------------------------------------------------------ state_dict and arguments
@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_state_dict_round_trip_continues_identically(name, rng):
    kw = dict(centered=True, momentum=0.5) if name == "RMSprop" else dict(amsgrad=True)
    m1 = _mlp(np.float64)
    o1 = getattr(fnn, name)(m1.parameters(), lr=0.01, **kw)
    lf = fnn.MSELoss()
    data = [(rng.standard_normal((8, 6)), rng.standard_normal((8, 4))) for _ in range(6)]
    for x, y in data[:3]:
        _module_step(m1, lf, o1, x, y)
    m2 = _mlp(np.float64, seed=9)
    m2.load_state_dict(m1.state_dict())
    o2 = getattr(fnn, name)(m2.parameters(), lr=0.5)
    sd = o1.state_dict()
    o2.load_state_dict(sd)
    assert o2.steps == 3 and o2.lr == 0.01
    for x, y in data[3:]:
        _module_step(m1, lf, o1, x, y)
        _module_step(m2, lf, o2, x, y)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert_bitwise_equal(a.data, b.data)
    # the state_dict is a copy
    sd[o1._state_names[0]][0][...] = 123
    assert not np.any(o1._state[0][0] == 123)


def test_state_dict_is_checked_before_anything_changes():
    m = _mlp(np.float64)
    o = fnn.Adam(m.parameters(), lr=0.01)
    good = o.state_dict()
    before = o.state_dict()
    bad = dict(good, exp_avg=[np.zeros(3)] + good["exp_avg"][1:])
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: exp_avg\[0\] must have "
                                         r"shape \(20, 6\) and dtype float64, got shape"):
        o.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        o.load_state_dict(dict(good, betas=(1.0, 0.9)))
    with pytest.raises(KeyError, match="missing keys \\['steps'\\]"):
        o.load_state_dict({k: v for k, v in good.items() if k != "steps"})
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        o.load_state_dict(dict(good, steps=-1))
    with pytest.raises(ValueError, match="exp_avg_sq must be a list of 6 arrays"):
        o.load_state_dict(dict(good, exp_avg_sq=[None]))
    assert o.state_dict().keys() == before.keys() and o.lr == 0.01 and o.steps == 0


@pytest.mark.parametrize("name, kw, exc, match", [
    ("Adam", dict(lr=-1), ValueError, "Adam: lr must be finite and >= 0.0, got -1"),
    ("Adam", dict(betas=(0.9,)), TypeError, r"Adam: betas must be a pair \(beta1, beta2\)"),
    ("Adam", dict(betas=(0.9, 1.0)), ValueError, r"Adam: betas\[1\] must be in \[0, 1\)"),
    ("Adam", dict(eps=float("nan")), ValueError, "Adam: eps must be finite"),
    ("AdamW", dict(weight_decay="x"), TypeError, "AdamW: weight_decay must be a real number"),
    ("Adam", dict(amsgrad=1), TypeError, "Adam: amsgrad must be True or False, got 1"),
    ("RMSprop", dict(alpha=-0.1), ValueError, "RMSprop: alpha must be finite and >= 0.0"),
    ("RMSprop", dict(momentum=-1), ValueError, "RMSprop: momentum must be finite and >= 0"),
    ("RMSprop", dict(centered="yes"), TypeError, "RMSprop: centered must be True or False"),
])
def test_bad_hyperparameters(name, kw, exc, match):
    m = _mlp(np.float32)
    with pytest.raises(exc, match=match):
        getattr(fnn, name)(m.parameters(), **kw)
    o = getattr(fnn, name)(m.parameters())
    k, v = next(iter(kw.items()))
    with pytest.raises(exc, match=match.replace(f"{name}: ", f"{name}: ")):
        setattr(o, k, v)


def test_defaults_and_repr():
    m = _mlp(np.float32)
    a = fnn.Adam(m.parameters())
    assert (a.lr, a.betas, a.eps, a.weight_decay, a.amsgrad, a.maximize) == \
        (1e-3, (0.9, 0.999), 1e-8, 0.0, False, False)
    assert fnn.AdamW(m.parameters()).weight_decay == 1e-2
    r = fnn.RMSprop(m.parameters())
    assert (r.lr, r.alpha, r.eps, r.weight_decay, r.momentum, r.centered) == \
        (1e-2, 0.99, 1e-8, 0.0, 0.0, False)
    assert repr(a) == ("Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, "
                       "amsgrad=False, maximize=False)")
    assert isinstance(a, fnn.optim.Optimizer) and a._kind == OptKind.ADAM


def test_state_is_created_lazily_as_zeros_and_only_what_is_used():
    m = _mlp(np.float64)
    o = fnn.RMSprop(m.parameters(), lr=0.01)
    assert o.state_dict()["square_avg"] == [None] * 6
    x, y = np.ones((2, 6)), np.zeros((2, 4))
    _module_step(m, fnn.MSELoss(), o, x, y)
    sd = o.state_dict()
    assert all(b is not None for b in sd["square_avg"])
    assert sd["grad_avg"] == [None] * 6 and sd["momentum_buffer"] == [None] * 6
    o.momentum = 0.9
    _module_step(m, fnn.MSELoss(), o, x, y)
    assert all(b is not None for b in o.state_dict()["momentum_buffer"])


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name, kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                      ("Adam", dict(lr=0.01, amsgrad=True)),
                                      ("AdamW", dict(lr=0.01, betas=(0.8, 0.99))),
                                      ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True))])
def test_checkpoint_round_trip_resumes_bitwise(name, kw, tmp_path, rng):
    m1 = _mlp(np.float32)
    # the optimizer over a subset of the parameters, in another order
    params = list(m1.parameters())[::-1][:4]
    o1 = getattr(fnn, name)(params, **kw)
    lf = fnn.CrossEntropyLoss()
    data = [(rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 4, 10))
            for _ in range(6)]
    for x, y in data[:3]:
        _module_step(m1, lf, o1, x, y)
    path = tmp_path / "ck.npz"
    fnn.save_checkpoint(path, m1, o1, epoch=3, best=0.5)
    ck = fnn.load_checkpoint(path)
    assert ck.epoch == 3 and ck.extra == {"best": 0.5}
    assert type(ck.optimizer) is type(o1) and ck.optimizer.steps == 3
    m2, o2 = ck.model, ck.optimizer
    names2 = {id(p): n for n, p in m2.named_parameters()}
    names1 = {id(p): n for n, p in m1.named_parameters()}
    assert [names2[id(p)] for p in o2.params] == [names1[id(p)] for p in o1.params]
    for x, y in data[3:]:
        _module_step(m1, lf, o1, x, y)
        _module_step(m2, lf, o2, x, y)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert_bitwise_equal(a.data, b.data)
    # in place, into existing objects
    m3 = _mlp(np.float32, seed=7)
    o3 = getattr(fnn, name)(list(m3.parameters())[::-1][:4], **kw)
    ck3 = fnn.load_checkpoint(path, model=m3, optimizer=o3)
    assert ck3.model is m3 and ck3.optimizer is o3 and o3.steps == 3


def test_checkpoint_errors(tmp_path):
    m = _mlp(np.float64)
    o = fnn.Adam(m.parameters())
    path = tmp_path / "ck.npz"
    fnn.save_checkpoint(path, m, o, epoch=1)
    with pytest.raises(TypeError, match="optimizer must be one of fastnn's"):
        fnn.save_checkpoint(path, m, object())
    with pytest.raises(TypeError, match="extra values must be JSON-serialisable"):
        fnn.save_checkpoint(tmp_path / "x.npz", m, o, thing=object())
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(TypeError, match="the checkpoint holds a Adam, got a SGD"):
        fnn.load_checkpoint(path, optimizer=fnn.SGD(m.parameters(), lr=0.1))
    other = fnn.Sequential(fnn.Linear(6, 3, dtype=np.float64))
    before = [p.data.copy() for p in other.parameters()]
    with pytest.raises(ValueError, match="the model does not have the checkpoint's"):
        fnn.load_checkpoint(path, model=other)
    for p, b in zip(other.parameters(), before):
        assert_bitwise_equal(p.data, b)
    fnn.save(m, tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not a fastnn checkpoint .a model file is read "
                                         "with fastnn.load"):
        fnn.load_checkpoint(tmp_path / "model.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable fastnn checkpoint"):
        fnn.load_checkpoint(tmp_path / "junk.npz")


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_compiled_step_with_clipping_bitwise_equals_module_path(name, n_threads, dtype, rng):
    fnn.set_num_threads(n_threads)
    m1, m2 = _mlp(dtype), _mlp(dtype)
    o1 = getattr(fnn, name)(m1.parameters(), lr=0.01)
    o2 = getattr(fnn, name)(m2.parameters(), lr=0.01)
    lf1, lf2 = fnn.CrossEntropyLoss(), fnn.CrossEntropyLoss()
    step = fnn.compile_step(m1, lf1, o1, clip_grad_norm=0.5)
    assert step.compiled, step.reason
    for i in range(5):
        x = rng.standard_normal((23, 6)).astype(dtype) * 3
        y = rng.integers(0, 4, 23)
        la = step(x, y)
        m2.zero_grad()
        o2.zero_grad()
        lb = lf2(m2(x), y)
        m2.backward(lf2.backward(), input_grad=False)
        norm = fnn.clip_grad_norm_(o2.params, 0.5)
        o2.step()
        assert la == lb and step.last_grad_norm == norm, i
        for a, b in zip(m1.parameters(), m2.parameters()):
            assert_bitwise_equal(a.data, b.data, f"step {i}")
        _same_state(o1, o2, f"step {i}")
