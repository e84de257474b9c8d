"""LayerNorm and BatchNorm1d: the kernels against the NumPy oracle (every dtype, kernel
variant and thread count), gradcheck in float64 (BatchNorm1d in train and eval mode, with
and without affine), parity with PyTorch (forward, every gradient, running statistics, 10
SGD and Adam steps of MLPs mixing them), the compiled step bitwise equal to the module path
(Sequential, Graph, the Trainer's compiled epochs), compile_inference (LayerNorm as an op,
an eval BatchNorm1d folded into the Linear before it), buffers in state_dict / save / load
/ checkpoints, repr and the errors."""
import os
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as R
from fastnn._kernels import norm as _norm
from _util import VARIANTS, assert_bitwise_equal, assert_close
from test_compiled_step import module_step as _module_step

F64 = np.float64


def _affine(m, rng):
    """Non-trivial weight and bias (the defaults are ones and zeros)."""
    if m.weight is not None:
        m.weight.data[:] = rng.uniform(0.5, 1.5, m.weight.shape)
    if m.bias is not None:
        m.bias.data[:] = rng.uniform(-0.5, 0.5, m.bias.shape)
    return m


def _wb(m):
    return (m.weight.data if m.weight is not None else None,
            m.bias.data if m.bias is not None else None)


# ------------------------------------------------------------------ kernels vs oracle
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(1, 5), (7, 3), (33, 130), (4, 1)])
def test_layernorm_matches_oracle(shape, affine, variant, dtype, rng):
    fnn.set_kernel_variant(variant)
    m = _affine(fnn.LayerNorm(shape[1], elementwise_affine=affine, dtype=dtype), rng)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    y = m(x)
    w, b = _wb(m)
    assert_close(y, R.layer_norm(x, w, b, m.eps), dtype, k=shape[1])
    g = rng.standard_normal(shape).astype(dtype)
    gx = m.backward(g)
    rx, rw, rb = R.layer_norm_backward(g, x, w, m.eps)
    assert_close(gx, rx, dtype, k=shape[1], scale=10)
    if affine:
        assert_close(m.weight.grad, rw, dtype, k=shape[0], scale=10)
        assert_close(m.bias.grad, rb, dtype, k=shape[0], scale=10)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(2, 5), (9, 3), (300, 70)])
def test_batchnorm_matches_oracle(shape, momentum, affine, variant, dtype, rng):
    fnn.set_kernel_variant(variant)
    m = _affine(fnn.BatchNorm1d(shape[1], momentum=momentum, affine=affine, dtype=dtype), rng)
    w, b = _wb(m)
    rm, rv, nbt = m.running_mean.copy(), m.running_var.copy(), 0
    for _ in range(3):
        x = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
        y = m(x)
        ry, rm, rv, nbt = R.batch_norm(x, rm, rv, w, b, True, momentum, m.eps, nbt)
        assert_close(y, ry, dtype, k=shape[0], scale=10)
        assert_close(m.running_mean, rm, dtype, k=shape[0])
        assert_close(m.running_var, rv, dtype, k=shape[0], scale=10)
        assert int(m.num_batches_tracked) == nbt
        g = rng.standard_normal(shape).astype(dtype)
        gx = m.backward(g)
        rx, rw, rb = R.batch_norm_backward(g, x, None, w, True, m.eps)
        assert_close(gx, rx, dtype, k=shape[0], scale=100)
        if affine:
            assert_close(m.weight.grad, rw, dtype, k=shape[0], scale=10)
            assert_close(m.bias.grad, rb, dtype, k=shape[0], scale=10)
            m.zero_grad()
    # eval mode: the running statistics; backward treats them as constants
    m.eval()
    x = rng.standard_normal(shape).astype(dtype)
    y = m(x)
    ry, rm2, rv2, _ = R.batch_norm(x, rm, rv, w, b, False, momentum, m.eps)
    assert_close(y, ry, dtype, k=1, scale=10)
    assert rm2 is rm and rv2 is rv                      # eval: nothing updated
    g = rng.standard_normal(shape).astype(dtype)
    rx, rw, rb = R.batch_norm_backward(g, x, m.running_var, w, False, m.eps,
                                       running_mean=m.running_mean)
    assert_close(m.backward(g), rx, dtype, scale=10)
    if affine:
        assert_close(m.weight.grad, rw, dtype, k=shape[0], scale=10)
        assert_close(m.bias.grad, rb, dtype, k=shape[0], scale=10)


def test_batchnorm_without_running_stats_uses_the_batch_in_eval(dtype, rng):
    m = fnn.BatchNorm1d(4, track_running_stats=False, dtype=dtype)
    assert m.running_mean is None and list(m.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal((6, 4)).astype(dtype)
    y1 = m(x).copy()
    m.eval()
    assert_bitwise_equal(m(x), y1)
    assert_close(y1, R.batch_norm(x, None, None, m.weight.data, m.bias.data)[0], dtype,
                 k=6)


@pytest.mark.parametrize("kind", ["ln", "bn"])
def test_kernels_are_bitwise_equal_for_1_and_2_threads(kind, dtype, rng, threads):
    """(512, 256): above the elementwise threshold, so 2 threads really share the rows and
    the column blocks."""
    shape = (512, 256)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    outs = []
    for n in (1, 2):
        fnn.set_num_threads(n)
        m = fnn.LayerNorm(256, dtype=dtype) if kind == "ln" else fnn.BatchNorm1d(256, dtype=dtype)
        _affine(m, np.random.default_rng(1))
        y = m(x).copy()
        gx = m.backward(g).copy()
        outs.append([y, gx, m.weight.grad.copy(), m.bias.grad.copy()] +
                    ([m.running_mean.copy(), m.running_var.copy()] if kind == "bn" else []))
    for a, b in zip(*outs):
        assert_bitwise_equal(a, b)
    # the kernel entry point really runs with 2 threads (n_threads given explicitly)
    y1, y2 = np.empty(shape, dtype), np.empty(shape, dtype)
    e1, e2 = np.empty(0, dtype), np.empty((0, 0), dtype)
    for y, n in ((y1, 1), (y2, 2)):
        _norm._layernorm_forward(x, e1, e1, 1e-5, y, e2, e1, n)
    assert_bitwise_equal(y1, y2)


# ------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_layernorm(affine, rng):
    m = _affine(fnn.LayerNorm(5, elementwise_affine=affine, dtype=F64), rng)
    assert fnn.gradcheck(m, rng.standard_normal((4, 5)))
    # in a network, and over a 3-D input (normalized over the last axis)
    assert fnn.gradcheck(m, rng.standard_normal((2, 3, 5)))
    net = fnn.Sequential(fnn.Linear(3, 5, dtype=F64, rng=0), m, fnn.Tanh(),
                         fnn.Linear(5, 2, dtype=F64, rng=1))
    assert fnn.gradcheck(net, rng.standard_normal((6, 3)))


def _bn_fn(module, R_):
    """gradcheck's function form for a BatchNorm1d whose mode must stay as it is
    (gradcheck(Module) evaluates in eval mode): inputs x and the affine parameters."""
    def fn(x, *wb):
        for p, v in zip([p for p in (module.weight, module.bias) if p is not None], wb):
            p.data[:] = v
        module.zero_grad()
        y = module(x)
        gx = module.backward(R_)
        grads = [gx.copy()] + [p.grad.copy() for p in (module.weight, module.bias)
                               if p is not None]
        return float(np.sum(y * R_)), grads
    return fn


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_batchnorm(training, affine, rng):
    m = _affine(fnn.BatchNorm1d(4, affine=affine, dtype=F64), rng)
    m.running_mean[:] = rng.standard_normal(4)
    m.running_var[:] = rng.uniform(0.5, 2, 4)
    m.train(training)
    x = rng.standard_normal((6, 4))
    wb = [p.data.copy() for p in (m.weight, m.bias) if p is not None]
    assert fnn.gradcheck(_bn_fn(m, rng.standard_normal((6, 4))), x, *wb)


def test_gradcheck_batchnorm_inside_a_network(rng):
    net = fnn.Sequential(fnn.Linear(3, 5, dtype=F64, rng=0),
                         _affine(fnn.BatchNorm1d(5, dtype=F64), rng), fnn.ReLU(),
                         fnn.Linear(5, 2, dtype=F64, rng=1))
    x = rng.standard_normal((7, 3))
    R_ = rng.standard_normal((7, 2))
    params = list(net.parameters())

    def fn(x, *ps):
        for p, v in zip(params, ps):
            p.data[:] = v
        net.zero_grad()
        y = net(x)
        gx = net.backward(R_)
        return float(np.sum(y * R_)), [gx.copy()] + [p.grad.copy() for p in params]
    assert fnn.gradcheck(fn, x, *[p.data.copy() for p in params])


# ---------------------------------------------------------------------- torch parity
def _torch_copy(torch, m):
    if isinstance(m, fnn.LayerNorm):
        t = torch.nn.LayerNorm(m.features, eps=m.eps, elementwise_affine=m.elementwise_affine,
                               bias=m.bias is not None, dtype=torch.float64)
    elif isinstance(m, fnn.BatchNorm1d):
        t = torch.nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum,
                                 affine=m.affine, track_running_stats=m.track_running_stats,
                                 dtype=torch.float64)
    elif isinstance(m, fnn.Linear):
        t = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                            dtype=torch.float64)
    else:
        return {fnn.ReLU: torch.nn.ReLU, fnn.Tanh: torch.nn.Tanh}[type(m)]()
    with torch.no_grad():
        for k, v in m.state_dict().items():
            getattr(t, k).copy_(torch.from_numpy(np.array(v)))
    return t


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("layer", ["ln", "ln-nobias", "bn", "bn-noaffine", "bn-untracked"])
def test_torch_parity_forward_backward_running_stats(layer, momentum, rng):
    torch = pytest.importorskip("torch")
    m = {"ln": lambda: fnn.LayerNorm(6, dtype=F64),
         "ln-nobias": lambda: fnn.LayerNorm((6,), bias=False, dtype=F64),
         "bn": lambda: fnn.BatchNorm1d(6, momentum=momentum, dtype=F64),
         "bn-noaffine": lambda: fnn.BatchNorm1d(6, momentum=momentum, affine=False, dtype=F64),
         "bn-untracked": lambda: fnn.BatchNorm1d(6, track_running_stats=False, dtype=F64),
         }[layer]()
    _affine(m, rng)
    t = _torch_copy(torch, m)
    assert list(m.state_dict()) == list(t.state_dict())
    for mode in ("train", "train", "eval"):
        m.train(mode == "train")
        t.train(mode == "train")
        x = rng.standard_normal((9, 6)) * 2 + 0.5
        g = rng.standard_normal((9, 6))
        m.zero_grad()
        t.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        yt = t(xt)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(m(x), yt.detach().numpy(), rtol=1e-12, atol=1e-13)
        if mode == "eval" and isinstance(m, fnn.LayerNorm):
            continue        # (an eval-mode LayerNorm keeps nothing for backward)
        np.testing.assert_allclose(m.backward(g), xt.grad.numpy(), rtol=1e-11, atol=1e-12)
        for name, p in m.named_parameters():
            np.testing.assert_allclose(p.grad, getattr(t, name).grad.numpy(), rtol=1e-11,
                                       atol=1e-12)
        for k, v in t.state_dict().items():
            np.testing.assert_allclose(m.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-14)
            assert m.state_dict()[k].dtype == v.numpy().dtype


MIXES = {
    "ln": lambda: [fnn.Linear(5, 16, dtype=F64, rng=0), fnn.LayerNorm(16, dtype=F64),
                   fnn.ReLU(), fnn.Linear(16, 3, dtype=F64, rng=1)],
    # (a Linear right before a BatchNorm1d has no bias: its gradient is 0 up to rounding,
    # which Adam would turn into full-size steps of either sign)
    "bn": lambda: [fnn.Linear(5, 16, bias=False, dtype=F64, rng=0),
                   fnn.BatchNorm1d(16, dtype=F64),
                   fnn.ReLU(), fnn.Linear(16, 3, dtype=F64, rng=1)],
    "both": lambda: [fnn.BatchNorm1d(5, momentum=None, dtype=F64),
                     fnn.Linear(5, 16, dtype=F64, rng=0), fnn.Tanh(),
                     fnn.LayerNorm(16, dtype=F64), fnn.Linear(16, 8, bias=False, dtype=F64, rng=1),
                     fnn.BatchNorm1d(8, affine=False, dtype=F64), fnn.ReLU(),
                     fnn.Linear(8, 3, dtype=F64, rng=2)],
}


def _mix(name, seed=3):
    rng = np.random.default_rng(seed)
    mods = MIXES[name]()
    for m in mods:
        if isinstance(m, (fnn.LayerNorm, fnn.BatchNorm1d)):
            _affine(m, rng)
    return fnn.Sequential(*mods)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("mix", list(MIXES))
def test_torch_parity_10_training_steps(mix, opt, rng):
    torch = pytest.importorskip("torch")
    model = _mix(mix)
    tmodel = torch.nn.Sequential(*[_torch_copy(torch, m) for m in model])
    if opt == "sgd":
        o = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
        to = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    else:
        o = fnn.Adam(model.parameters(), lr=0.01)
        to = torch.optim.Adam(tmodel.parameters(), lr=0.01)
    lf, tlf = fnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    for _ in range(10):
        x = rng.standard_normal((16, 5))
        y = rng.integers(0, 3, 16)
        model.zero_grad()
        loss = lf(model(x), y)
        model.backward(lf.backward(), input_grad=False)
        o.step()
        to.zero_grad()
        tl = tlf(tmodel(torch.tensor(x)), torch.tensor(y))
        tl.backward()
        to.step()
        assert abs(loss - tl.item()) < 1e-10
    tsd = tmodel.state_dict()
    assert list(model.state_dict()) == list(tsd)
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


# --------------------------------------------------------- compiled step == module path
def _assert_states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert_bitwise_equal(sa[k], sb[k], k)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert_bitwise_equal(p.grad, q.grad, n)


def _chain(name, dt, seed=0):
    r = np.random.default_rng(seed)
    lin = lambda i, o, s: fnn.Linear(i, o, dtype=dt, rng=s)     # noqa: E731
    mods = {
        "lin-ln-relu-lin": lambda: [lin(6, 16, 1), fnn.LayerNorm(16, dtype=dt), fnn.ReLU(),
                                    lin(16, 4, 2)],
        "lin-bn-relu-lin": lambda: [lin(6, 16, 1), fnn.BatchNorm1d(16, dtype=dt), fnn.ReLU(),
                                    lin(16, 4, 2)],
        "bn-first-cumulative": lambda: [fnn.BatchNorm1d(6, momentum=None, dtype=dt),
                                        lin(6, 9, 1), fnn.Sigmoid(),
                                        fnn.LayerNorm(9, bias=False, dtype=dt),
                                        lin(9, 4, 2)],
        "ln-noaffine-last": lambda: [lin(6, 9, 1), fnn.Tanh(), lin(9, 4, 2),
                                     fnn.LayerNorm(4, elementwise_affine=False, dtype=dt)],
        "bn-noaffine-untracked": lambda: [lin(6, 9, 1),
                                          fnn.BatchNorm1d(9, affine=False,
                                                          track_running_stats=False,
                                                          dtype=dt),
                                          fnn.LeakyReLU(0.1), lin(9, 4, 2)],
        # an activation first / after another: an ACT op on its own
        "activation-first": lambda: [fnn.Tanh(), lin(6, 9, 1), fnn.ReLU(), lin(9, 4, 2)],
        "two-activations": lambda: [lin(6, 9, 1), fnn.ReLU(), fnn.Tanh(), lin(9, 4, 2)],
    }[name]()
    for m in mods:
        if isinstance(m, (fnn.LayerNorm, fnn.BatchNorm1d)):
            _affine(m, r)
    return fnn.Sequential(*mods)


CHAINS = ["lin-ln-relu-lin", "lin-bn-relu-lin", "bn-first-cumulative", "ln-noaffine-last",
          "bn-noaffine-untracked", "activation-first", "two-activations"]


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
@pytest.mark.parametrize("chain", CHAINS)
def test_compiled_step_bitwise_equals_module_path(chain, loss, opt, dtype, rng):
    a, b = _chain(chain, dtype), _chain(chain, dtype)
    mk = (lambda p: fnn.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)) if opt == "sgd" \
        else (lambda p: fnn.Adam(p, lr=0.01))
    oa, ob = mk(a.parameters()), mk(b.parameters())
    lf = fnn.CrossEntropyLoss() if loss == "xent" else fnn.MSELoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = fnn.compile_step(a, lf, oa)
    assert step.compiled, step.reason
    for m in (8, 5, 19, 2, 19, 32):
        x = rng.standard_normal((m, 6)).astype(dtype)
        y = rng.integers(0, 4, m) if loss == "xent" else \
            rng.standard_normal((m, 4)).astype(dtype)
        assert step(x, y) == _module_step(b, lf, ob, x, y)
    _assert_states_equal(a, b)
    # the mode of a BatchNorm1d may change between steps (eval: frozen statistics)
    bns = [(p, q) for p, q in zip(a, b) if isinstance(p, fnn.BatchNorm1d)]
    for p, q in bns:
        p.eval()
        q.eval()
    x = rng.standard_normal((7, 6)).astype(dtype)
    y = rng.integers(0, 4, 7) if loss == "xent" else rng.standard_normal((7, 4)).astype(dtype)
    nbt = [int(p.num_batches_tracked) for p, _ in bns if p.track_running_stats]
    assert step(x, y) == _module_step(b, lf, ob, x, y)
    assert step.compiled
    assert [int(p.num_batches_tracked) for p, _ in bns if p.track_running_stats] == nbt
    _assert_states_equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_step_every_variant_and_threads(variant, dtype, threads):
    fnn.set_kernel_variant(variant)
    res = []
    for n in (1, 2):
        fnn.set_num_threads(n)
        rng = np.random.default_rng(0)
        a, b = _chain("lin-bn-relu-lin", dtype), _chain("lin-bn-relu-lin", dtype)
        oa, ob = fnn.SGD(a.parameters(), lr=0.05), fnn.SGD(b.parameters(), lr=0.05)
        step = fnn.compile_step(a, fnn.CrossEntropyLoss(), oa)
        for _ in range(3):
            x = rng.standard_normal((4200, 6)).astype(dtype)     # 4200 x 16 > 65536 values
            y = rng.integers(0, 4, 4200)
            assert step(x, y) == _module_step(b, fnn.CrossEntropyLoss(), ob, x, y)
        _assert_states_equal(a, b)
        res.append(a.state_dict())
    for k in res[0]:
        assert_bitwise_equal(res[0][k], res[1][k], k)


def _graph(dt):
    r = np.random.default_rng(0)
    g = fnn.Graph()
    x = g.input("x", features=6)
    h = g.add(fnn.Linear(6, 12, dtype=dt, rng=1), x)
    h1 = g.add(_affine(fnn.BatchNorm1d(12, dtype=dt), r), h)
    h2 = g.add(_affine(fnn.LayerNorm(12, dtype=dt), r), h)      # h read twice: no fusion
    s = g.add(fnn.Add(), g.add(fnn.ReLU(), h1), h2)
    g.output(g.add(fnn.Linear(12, 3, dtype=dt, rng=2), s))
    return g


def test_compiled_graph_bitwise_equals_module_path(dtype, rng):
    a, b = _graph(dtype), _graph(dtype)
    oa, ob = fnn.SGD(a.parameters(), lr=0.1, momentum=0.9), \
        fnn.SGD(b.parameters(), lr=0.1, momentum=0.9)
    lf = fnn.CrossEntropyLoss()
    step = fnn.compile_step(a, lf, oa)
    assert step.compiled, step.reason
    for m in (10, 3, 17):
        x = rng.standard_normal((m, 6)).astype(dtype)
        y = rng.integers(0, 3, m)
        assert step(x, y) == _module_step(b, lf, ob, x, y)
    _assert_states_equal(a, b)


def test_trainer_compiled_epochs_equal_the_module_path(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((250, 6)).astype(dtype)
    y = rng.integers(0, 4, 250)
    runs = []
    for compiled in (True, False):
        model = _chain("lin-bn-relu-lin", dtype)
        o = fnn.Adam(model.parameters(), lr=0.01)
        tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), o, batch_size=32, epochs=3, seed=4,
                         progress=False, compiled=compiled)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = tr.fit(X, y)
        runs.append((model, h))
    (m1, h1), (m2, h2) = runs
    _assert_states_equal(m1, m2)
    assert h1["loss"] == h2["loss"]
    assert int(m1[1].num_batches_tracked) == 3 * 8


def test_compiled_batch_of_one_row_raises_like_the_module_path(dtype):
    model = _chain("lin-bn-relu-lin", dtype)
    step = fnn.compile_step(model, fnn.CrossEntropyLoss(), fnn.SGD(model.parameters(), lr=0.1))
    x = np.ones((1, 6), dtype)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        step(x, np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(x)
    # X of 33 rows in batches of 16: the last batch has one row
    tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), fnn.SGD(model.parameters(), lr=0.1),
                     batch_size=16, epochs=1, progress=False, shuffle=False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        tr.fit(np.ones((33, 6), dtype), np.zeros(33, np.int64))


# ------------------------------------------------------------------ compile_inference
def test_inference_layernorm_op_and_batchnorm_folding(dtype, rng):
    lin = lambda i, o, s: fnn.Linear(i, o, dtype=dtype, rng=s)      # noqa: E731
    bn1, bn2 = fnn.BatchNorm1d(12, dtype=dtype), fnn.BatchNorm1d(4, affine=False, dtype=dtype)
    model = fnn.Sequential(lin(6, 12, 1), bn1, fnn.ReLU(), fnn.LayerNorm(12, dtype=dtype),
                           lin(12, 4, 2), fnn.Tanh(), bn2)
    for _ in range(3):                                  # running statistics away from 0 / 1
        model(rng.standard_normal((20, 6)).astype(dtype) * 2 + 1)
    _affine(bn1, rng)
    f = fnn.compile_inference(model)
    x = rng.standard_normal((9, 6)).astype(dtype)
    y = f(x).copy()
    assert f.compiled, f.reason
    # bn1 folded into the Linear before it; bn2 (after Tanh) runs as an op
    assert f._kernel.n_ops == 5
    ref = model.eval()(x)
    tol = 1e-12 if dtype == F64 else 1e-5
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    # the statistics change in place (training): the fold follows on the next call
    model.train()
    model(rng.standard_normal((20, 6)).astype(dtype))
    np.testing.assert_allclose(f(x), model.eval()(x), rtol=tol, atol=tol)
    np.testing.assert_allclose(model.predict(x), model.eval()(x), rtol=tol, atol=tol)


def test_inference_without_folding_is_bitwise(dtype, rng):
    model = fnn.Sequential(fnn.Linear(6, 8, dtype=dtype, rng=0), fnn.ReLU(),
                           _affine(fnn.BatchNorm1d(8, dtype=dtype), rng),
                           _affine(fnn.LayerNorm(8, dtype=dtype), rng))
    model(rng.standard_normal((10, 6)).astype(dtype))
    f = fnn.compile_inference(model)
    x = rng.standard_normal((5, 6)).astype(dtype)
    y = f(x)
    assert f.compiled and f._kernel.n_ops == 3
    assert_bitwise_equal(y, model.eval()(x))
    # a BatchNorm1d without running statistics runs the module path
    m2 = fnn.Sequential(fnn.Linear(6, 8, dtype=dtype), fnn.BatchNorm1d(
        8, track_running_stats=False, dtype=dtype))
    f2 = fnn.compile_inference(m2)
    assert not f2.compiled and "batch's statistics" in f2.reason
    assert_bitwise_equal(f2(x), m2.eval()(x))


# -------------------------------------------------------------- state, save, load, repr
def test_state_dict_load_save_and_checkpoint_carry_buffers(tmp_path, rng):
    model = _mix("both")
    model.to(np.float32)
    for _ in range(2):
        model(rng.standard_normal((8, 5)).astype(np.float32))
    sd = model.state_dict()
    assert "0.running_mean" in sd and sd["0.num_batches_tracked"].dtype == np.int64
    assert int(sd["0.num_batches_tracked"]) == 2
    p = os.fspath(tmp_path / "m.npz")
    fnn.save(model, p)
    loaded = fnn.load(p)
    _assert_states_equal_loose(model, loaded)
    opt = fnn.Adam(model.parameters(), lr=0.01)
    fnn.save_checkpoint(os.fspath(tmp_path / "c.npz"), model, opt, epoch=2)
    ck = fnn.load_checkpoint(os.fspath(tmp_path / "c.npz"))
    _assert_states_equal_loose(model, ck.model)
    other = _mix("both").to(np.float32)
    fnn.load_checkpoint(os.fspath(tmp_path / "c.npz"), model=other)
    _assert_states_equal_loose(model, other)
    # load_state_dict checks buffers' shapes and dtypes before writing anything
    bad = dict(sd)
    bad["0.running_var"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="buffer"):
        other.load_state_dict(bad)
    bad["0.running_var"] = np.ones(5, np.float64)
    with pytest.raises(TypeError, match="buffer"):
        other.load_state_dict(bad)
    with pytest.raises(KeyError, match="running_mean"):
        other.load_state_dict({k: v for k, v in sd.items() if "running_mean" not in k})
    # .to converts the floating-point buffers, not the counter
    model.double()
    assert model[0].running_mean.dtype == F64 and model[0].num_batches_tracked.dtype == np.int64
    assert model[5].dtype == F64


def _assert_states_equal_loose(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert_bitwise_equal(sa[k], sb[k], k)


def test_state_dict_keys_equal_torchs():
    torch = pytest.importorskip("torch")
    model = _mix("both")
    tmodel = torch.nn.Sequential(*[_torch_copy(torch, m) for m in model])
    assert list(model.state_dict()) == list(tmodel.state_dict())
    # torch's state_dict loads into fastnn's model
    sd = {k: v.numpy().copy() for k, v in tmodel.state_dict().items()}
    model.load_state_dict(sd)


def test_repr_like_torch():
    torch = pytest.importorskip("torch")
    assert repr(fnn.LayerNorm(8)) == repr(torch.nn.LayerNorm(8))
    assert repr(fnn.LayerNorm((8,), eps=1e-6, bias=False)) == \
        repr(torch.nn.LayerNorm((8,), eps=1e-6, bias=False))
    t = repr(torch.nn.BatchNorm1d(4, momentum=None, affine=False))
    assert repr(fnn.BatchNorm1d(4, momentum=None, affine=False)) == t
    assert repr(fnn.BatchNorm1d(4)) == repr(torch.nn.BatchNorm1d(4))
    assert repr(fnn.BatchNorm1d(4, dtype=F64)).endswith(", dtype=float64)")


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_module_expected_and_actual(rng):
    ln, bn = fnn.LayerNorm(8), fnn.BatchNorm1d(4)
    with pytest.raises(ValueError, match=r"LayerNorm\(\(8,\).*8 features.*\(\.\.\., 8\).*"
                                         r"\(3, 5\)"):
        ln(np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match=r"LayerNorm.*float64.*float32"):
        ln(np.ones((3, 8), np.float64))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4.*5 features, expected 4"):
        bn(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4.*\(N, C, L\) input is not "
                                         r"supported.*\(3, 4, 2\)"):
        bn(np.ones((3, 4, 2), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.ones((1, 4), np.float32))
    bn.eval()
    assert bn(np.ones((1, 4), np.float32)).shape == (1, 4)      # eval: the running stats
    with pytest.raises(ValueError, match="grad_out must have the output's shape"):
        ln(np.ones((3, 8), np.float32))
        ln.backward(np.ones((3, 7), np.float32))
    with pytest.raises(RuntimeError, match="backward"):
        fnn.LayerNorm(3).backward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="normalized_shape.*1-tuple"):
        fnn.LayerNorm((2, 3))
    with pytest.raises(ValueError, match="num_features"):
        fnn.BatchNorm1d(0)
    with pytest.raises(ValueError, match="momentum"):
        fnn.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(TypeError, match="affine"):
        fnn.BatchNorm1d(3, affine=1)
    with pytest.raises(ValueError, match="eps"):
        fnn.LayerNorm(3, eps=-1.0)
    # in a container the error names the position
    seq = fnn.Sequential(fnn.Linear(3, 5), fnn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"Sequential\[1\].*BatchNorm1d\(4"):
        seq(np.ones((2, 3), np.float32))
    g = fnn.Graph()
    x = g.input("x", features=5)
    with pytest.raises(ValueError, match=r"LayerNorm\(\(4,\).*expects 4 input features.*5"):
        g.add(fnn.LayerNorm(4), x)


def test_exported():
    assert fnn.LayerNorm is fnn.nn.LayerNorm and fnn.BatchNorm1d is fnn.nn.BatchNorm1d
    assert "LayerNorm" in fnn.__all__ and "BatchNorm1d" in fnn.nn.__all__
