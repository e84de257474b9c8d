"""Parity with PyTorch: MLP forward/backward with every activation and loss, SGD training
with every option set, and Linear's initialisation bounds."""
import numpy as np
import pytest

import fastnn as fnn
from _util import uniform

torch = pytest.importorskip("torch")

SIZES = (13, 17, 11, 5)
BATCH = 9

ACTS = [("sigmoid", fnn.Sigmoid, torch.nn.Sigmoid),
        ("relu", fnn.ReLU, torch.nn.ReLU),
        ("tanh", fnn.Tanh, torch.nn.Tanh),
        ("leaky-0.01", lambda: fnn.LeakyReLU(0.01), lambda: torch.nn.LeakyReLU(0.01)),
        ("leaky-0.2", lambda: fnn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2))]
ACT_IDS = [a[0] for a in ACTS]
LOSSES = ("mse-mean", "mse-sum", "xent", "svm")


def _tol(dtype):
    """(rtol, atol)"""
    return (1e-10, 1e-12) if np.dtype(dtype) == np.float64 else (1e-4, 1e-5)


def _tdtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def _build(make_f, make_t, dtype, seed=0, bias=True, sizes=SIZES):
    """The same random MLP in fastnn and in torch (weights copied from fastnn's)."""
    f_layers, t_layers = [], []
    n = len(sizes) - 1
    for i in range(n):
        lin = fnn.Linear(sizes[i], sizes[i + 1], bias=bias, dtype=dtype, rng=seed + i)
        tl = torch.nn.Linear(sizes[i], sizes[i + 1], bias=bias, dtype=_tdtype(dtype))
        with torch.no_grad():
            tl.weight.copy_(torch.from_numpy(lin.weight.data.copy()))
            if bias:
                tl.bias.copy_(torch.from_numpy(lin.bias.data.copy()))
        f_layers.append(lin)
        t_layers.append(tl)
        if i < n - 1:
            f_layers.append(make_f())
            t_layers.append(make_t())
    return fnn.Sequential(*f_layers), torch.nn.Sequential(*t_layers)


def _svm_torch(s, y, margin=1.0, reduction="mean"):
    n = s.shape[0]
    rows = torch.arange(n)
    m = (s - s[rows, y][:, None] + margin).clamp(min=0)
    m = m.clone()
    m[rows, y] = 0
    per_row = m.sum(1)
    return per_row.mean() if reduction == "mean" else per_row.sum()


def _losses(name, dtype, rng):
    """(fastnn loss, torch loss function(out, target_tensor), numpy target)"""
    if name.startswith("mse"):
        red = name.split("-")[1]
        target = uniform(rng, (BATCH, SIZES[-1]), dtype)
        return (fnn.MSELoss(reduction=red),
                lambda o, t: torch.nn.functional.mse_loss(o, t, reduction=red), target)
    labels = rng.integers(0, SIZES[-1], BATCH)
    if name == "xent":
        return fnn.CrossEntropyLoss(), torch.nn.functional.cross_entropy, labels
    return fnn.SVMLoss(margin=1.0), _svm_torch, labels


def _close(actual, expected, dtype, what):
    rtol, atol = _tol(dtype)
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize("name,make_f,make_t", ACTS, ids=ACT_IDS)
def test_mlp_forward_backward(name, make_f, make_t, loss_name, bias, dtype, rng):
    fmodel, tmodel = _build(make_f, make_t, dtype, seed=int(rng.integers(1 << 30)), bias=bias)
    floss, tloss, target = _losses(loss_name, dtype, rng)
    x = uniform(rng, (BATCH, SIZES[0]), dtype, -2, 2)

    out = fmodel(x)
    value = floss(out, target)
    gx = fmodel.backward(floss.backward())

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    tout = tmodel(xt)
    tt = torch.from_numpy(target)
    tvalue = tloss(tout, tt)
    tvalue.backward()

    assert out.dtype == np.dtype(dtype) and gx.dtype == np.dtype(dtype)
    _close(out, tout, dtype, "forward output")
    assert type(value) is float
    _close(value, tvalue.item(), dtype, "loss value")
    _close(gx, xt.grad, dtype, "input gradient")
    tparams = list(tmodel.parameters())
    fparams = list(fmodel.named_parameters())
    assert len(fparams) == len(tparams)
    for (n, p), tp in zip(fparams, tparams):
        assert p.shape == tuple(tp.shape)
        _close(p.grad, tp.grad, dtype, f"gradient of {n}")
    # eval mode gives the same forward
    fmodel.eval()
    _close(fmodel(x), tout, dtype, "eval forward")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_losses_alone(reduction, dtype, rng):
    """The three losses on plain logits, against torch."""
    n, c = 31, 7
    s = uniform(rng, (n, c), dtype, -3, 3)
    y = rng.integers(0, c, n)
    t = uniform(rng, (n, c), dtype)
    for floss, tfn, target in (
            (fnn.MSELoss(reduction), lambda a, b: torch.nn.functional.mse_loss(
                a, b, reduction=reduction), t),
            (fnn.CrossEntropyLoss(reduction), lambda a, b: torch.nn.functional.cross_entropy(
                a, b, reduction=reduction), y),
            (fnn.SVMLoss(0.5, reduction), lambda a, b: _svm_torch(a, b, 0.5, reduction), y)):
        st = torch.from_numpy(s.copy()).requires_grad_(True)
        tv = tfn(st, torch.from_numpy(target))
        tv.backward()
        _close(floss(s, target), tv.item(), dtype, repr(floss))
        _close(floss.backward(), st.grad, dtype, f"gradient {floss!r}")


# ---------------------------------------------------------------- SGD training
OPTIONS = [("plain", dict()),
           ("momentum", dict(momentum=0.9)),
           ("nesterov", dict(momentum=0.9, nesterov=True)),
           ("dampening", dict(momentum=0.9, dampening=0.1)),
           ("weight-decay", dict(momentum=0.9, weight_decay=0.01)),
           ("maximize", dict(maximize=True)),
           ("maximize-momentum-wd", dict(momentum=0.5, weight_decay=0.01, maximize=True))]


def _sgd_tol(dtype):
    return (1e-10, 1e-12) if np.dtype(dtype) == np.float64 else (1e-4, 1e-5)


@pytest.mark.parametrize("loss_name", ["xent", "mse-mean"])
@pytest.mark.parametrize("opt_name,opts", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_sgd_training_matches_torch(opt_name, opts, loss_name, dtype, rng):
    fmodel, tmodel = _build(fnn.Tanh, torch.nn.Tanh, dtype, seed=int(rng.integers(1 << 30)))
    floss, tloss, target = _losses(loss_name, dtype, rng)
    x = uniform(rng, (BATCH, SIZES[0]), dtype, -2, 2)
    lr = 0.1
    fopt = fnn.SGD(fmodel.parameters(), lr=lr, **opts)
    topt = torch.optim.SGD(tmodel.parameters(), lr=lr, **opts)
    xt, tt = torch.from_numpy(x.copy()), torch.from_numpy(target)
    rtol, atol = _sgd_tol(dtype)
    f_values, t_values = [], []
    for _ in range(10):
        fopt.zero_grad()
        f_values.append(floss(fmodel(x), target))
        fmodel.backward(floss.backward(), input_grad=False)
        fopt.step()

        topt.zero_grad()
        tv = tloss(tmodel(xt), tt)
        tv.backward()
        topt.step()
        t_values.append(tv.item())
    np.testing.assert_allclose(f_values, t_values, rtol=rtol, atol=atol,
                               err_msg="loss at each step")
    if opts.get("maximize"):
        assert f_values[-1] > f_values[0]
    else:
        assert f_values[-1] < f_values[0]
    for (n, p), tp in zip(fmodel.named_parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"parameter {n} after 10 steps")
    assert fopt.steps == 10


def test_sgd_lr_schedule_matches_torch(rng):
    """Changing lr between steps, as torch's param_groups[0]["lr"]."""
    fmodel, tmodel = _build(fnn.ReLU, torch.nn.ReLU, np.float64, seed=7)
    floss, tloss, target = _losses("xent", np.float64, rng)
    x = uniform(rng, (BATCH, SIZES[0]), np.float64)
    fopt = fnn.SGD(fmodel.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    for lr in (0.1, 0.2, 0.05, 0.05, 0.01, 0.3):
        fopt.lr = lr
        topt.param_groups[0]["lr"] = lr
        fopt.zero_grad()
        floss(fmodel(x), target)
        fmodel.backward(floss.backward())
        fopt.step()
        topt.zero_grad()
        tloss(tmodel(xt), tt).backward()
        topt.step()
    for p, tp in zip(fmodel.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- Linear init
@pytest.mark.parametrize("fan_in,fan_out", [(1, 3), (13, 17), (100, 400), (784, 50)])
def test_linear_init_bounds(fan_in, fan_out, dtype):
    bound = 1.0 / np.sqrt(fan_in)
    lin = fnn.Linear(fan_in, fan_out, dtype=dtype, rng=0)
    tl = torch.nn.Linear(fan_in, fan_out)
    # torch's kaiming_uniform_(a=sqrt(5)) bound is 1/sqrt(fan_in); so is its bias bound
    assert tl.weight.detach().abs().max().item() <= bound * (1 + 1e-6)
    assert tl.bias.detach().abs().max().item() <= bound * (1 + 1e-6)
    for p in (lin.weight, lin.bias):
        assert p.dtype == np.dtype(dtype)
        assert np.all(np.abs(p.data) <= np.asarray(bound, dtype))
    w = lin.weight.data.astype(np.float64)
    if w.size >= 10_000:
        # uniform on [-bound, bound]: fills the range, mean 0, std bound / sqrt(3)
        assert np.abs(w).max() > 0.99 * bound
        assert abs(w.mean()) < 0.02 * bound
        np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.02)
        tw = torch.nn.Linear(fan_in, fan_out, dtype=torch.float64).weight.detach().numpy()
        np.testing.assert_allclose(w.std(), tw.std(), rtol=0.04)


def test_linear_init_seeded():
    a = fnn.Linear(20, 30, rng=123)
    b = fnn.Linear(20, 30, rng=123)
    c = fnn.Linear(20, 30, rng=124)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    d = fnn.Linear(20, 30, dtype=np.float64, rng=123)
    np.testing.assert_array_equal(d.weight.data.astype(np.float32), a.weight.data)
